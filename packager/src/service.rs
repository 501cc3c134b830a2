//! What every route of the packager shares: the [`State`] of the window, the continuous
//! [`Streams`] and the [`Archive`] that follow it by its events, the TS segments remuxed
//! lately, the counters, and the settings requests are checked against. Made once, when the
//! packager starts; the subscriptions to the window's events are made here, so that the state
//! knows nothing of who follows it.

use std::sync::Arc;
use std::time::Duration;

use estuary_http::Limits;
use estuary_packager_core::window::Event;
use estuary_proto::keycard::KeycardKey;

use crate::archive::Archive;
use crate::auth::AdminToken;
use crate::config::Settings;
use crate::error::PackagerError;
use crate::player::PlayerPage;
use crate::remux::Remuxed;
use crate::state::State;
use crate::streams::Streams;
use crate::tally::{Refusals, Requests};

pub struct Service {
    pub state: Arc<State>,
    /// Continuous streams being watched, fed by the window's events as parts land.
    pub streams: Arc<Streams>,
    /// Where whole segments are kept, when there is an archive.
    pub archive: Option<Archive>,
    /// TS segments written lately, served again without a remux.
    pub remuxed: Remuxed,
    /// Ingests refused, by reason only (never by the names a refused request gave).
    pub refusals: Refusals,
    /// Requests for media and playlists, by kind (what an edge in front saves shows here).
    pub requests: Requests,
    pub keys: Vec<KeycardKey>,
    pub admin_token: Option<AdminToken>,
    pub limits: Limits,
    pub ingest_timeout: Duration,
    pub player: PlayerPage,
}

impl Service {
    pub fn new(settings: &Settings) -> Result<Arc<Service>, PackagerError> {
        let archive = settings
            .archive
            .as_deref()
            .map(|dir| {
                Archive::start(dir).map_err(|error| PackagerError::Archive {
                    dir: dir.to_owned(),
                    error,
                })
            })
            .transpose()?;
        let state = Arc::new(State::new(settings.window));
        let streams = Arc::new(Streams::default());
        state.subscribe(log);
        let following = streams.clone();
        state.subscribe(move |event| following.on_event(event));
        if let Some(archive) = archive.clone() {
            state.subscribe(move |event| archive.on_event(event));
        }
        Ok(Arc::new(Service {
            state,
            streams,
            archive,
            remuxed: Remuxed::default(),
            refusals: Refusals::default(),
            requests: Requests::default(),
            keys: settings.keys.clone(),
            admin_token: settings.admin_token.clone(),
            limits: settings.limits,
            ingest_timeout: settings.ingest_timeout,
            player: settings
                .web
                .as_deref()
                .map(PlayerPage::load)
                .unwrap_or_default(),
        }))
    }
}

/// What an operator hears of the window: tracks coming and going, and media missing.
fn log(event: &Event) {
    match event {
        Event::Gap {
            channel,
            track,
            missing,
        } => {
            tracing::warn!(%channel, %track, first = missing.start, end = missing.end, "segments missing");
        }
        Event::TimelineReset { channel, track, .. } => {
            tracing::warn!(%channel, %track, "track went back further than its window holds: a new timeline begins");
        }
        Event::TrackRetired { channel, track } => tracing::info!(%channel, %track, "track retired"),
        Event::TrackStarted { channel, track, .. } => {
            tracing::info!(%channel, %track, "track started")
        }
        Event::HeaderChanged { channel, track, .. } => {
            tracing::info!(%channel, %track, "track header changed")
        }
        _ => {}
    }
}
