//! What every route of the packager shares: the [`State`] of the window, the continuous
//! [`Streams`] and the [`Archive`] that follow it by its events, the TS segments remuxed
//! lately, the counters, and the [`Rules`] requests are checked against. Made once, when the
//! packager starts; the subscriptions to the window's events are made here, so that the state
//! knows nothing of who follows it. A reload swaps the rules whole and changes the window's
//! limits; what only a restart can change is named, never half applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
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
    rules: RwLock<Arc<Rules>>,
    /// The settings as started: what a reload cannot change is compared with these.
    started: Settings,
    /// Reads the configuration again, for a reload; set by whoever runs the packager.
    source: OnceLock<ConfigSource>,
    reloads: AtomicU64,
    refused_reloads: AtomicU64,
    /// Why the last reload changed nothing, until one succeeds.
    refused_because: Mutex<Option<String>>,
}

/// What requests are checked against, swapped whole by a reload: a request holds the rules it
/// began with to its end.
pub struct Rules {
    /// Keys an ingest's keycard must be signed with; none: ingest is open.
    pub keys: Vec<KeycardKey>,
    pub admin_token: Option<AdminToken>,
    /// Head size and timeouts, for connections accepted from now on.
    pub limits: Limits,
    pub ingest_timeout: Duration,
    pub player: PlayerPage,
}

impl Rules {
    fn of(settings: &Settings) -> Rules {
        Rules {
            keys: settings.keys.clone(),
            admin_token: settings.admin_token.clone(),
            limits: settings.limits,
            ingest_timeout: settings.ingest_timeout,
            player: settings
                .web
                .as_deref()
                .map(PlayerPage::load)
                .unwrap_or_default(),
        }
    }
}

/// Reads the packager's configuration again, as it was first read (the file, the flags over
/// it), resolved; the error names the file and the key.
pub type ConfigSource = Arc<dyn Fn() -> Result<Settings, String> + Send + Sync>;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the packager was started without a configuration to read again")]
    NoSource,
    #[error("{0}")]
    Invalid(String),
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
            rules: RwLock::new(Arc::new(Rules::of(settings))),
            started: settings.clone(),
            source: OnceLock::new(),
            reloads: AtomicU64::new(0),
            refused_reloads: AtomicU64::new(0),
            refused_because: Mutex::new(None),
        }))
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where reloads read the configuration; the first one set stays.
    pub fn set_source(&self, source: ConfigSource) {
        let _ = self.source.set(source);
    }

    /// Reads the configuration again and applies what can change while running: keys, the
    /// admin token, limits and timeouts, the window's limits (tracks, channels, retiring), the
    /// player page. Returns the keys that differ but need a restart; a configuration that does
    /// not resolve, or would open ingest on a public address, changes nothing.
    pub fn reload(&self) -> Result<Vec<&'static str>, ReloadError> {
        let outcome = match self.source.get() {
            None => Err(ReloadError::NoSource),
            Some(source) => source()
                .and_then(|settings| {
                    // Against the address the packager listens on, which a reload cannot move.
                    settings
                        .check_ingest_is_guarded(self.started.listen)
                        .map_err(|error| error.to_string())?;
                    Ok(settings)
                })
                .map(|settings| self.apply(&settings))
                .map_err(ReloadError::Invalid),
        };
        match &outcome {
            Ok(needs_restart) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                *self
                    .refused_because
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(?needs_restart, "configuration reloaded");
            }
            Err(error) => {
                self.refused_reloads.fetch_add(1, Ordering::Relaxed);
                *self
                    .refused_because
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
                tracing::warn!(%error, "reload refused: the configuration in force is kept");
            }
        }
        outcome
    }

    fn apply(&self, settings: &Settings) -> Vec<&'static str> {
        let limits = settings.window;
        self.state.apply(|window| {
            window.set_limits(limits.max_tracks, limits.max_channels, limits.retire_after);
            Vec::new()
        });
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Rules::of(settings));
        let started = &self.started;
        [
            ("listen", started.listen != settings.listen),
            ("segment", started.window.segment != settings.window.segment),
            ("window", started.window.window != settings.window.window),
            ("archive", started.archive != settings.archive),
        ]
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
    }

    /// Reloads applied and refused since start, and why the last one was refused when it was
    /// the last one.
    pub fn reload_record(&self) -> (u64, u64, Option<String>) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.refused_reloads.load(Ordering::Relaxed),
            self.refused_because
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
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
