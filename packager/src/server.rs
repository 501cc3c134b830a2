//! The packager's process: the window shared between the ingest receiver and the origin, the
//! wake-ups that answer blocked requests the moment a part lands, the retirement of idle
//! tracks, and the HTTP server (HTTP/1.1 and HTTP/2, see `connection`) in front of both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use estuary_proto::Mood;
use estuary_proto::keycard::KeycardKey;
use estuary_proto::url::{ChannelName, TrackName};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::AdminToken;
use crate::archive::{self, Archive, ArchiveJob};
use crate::cmaf::TrackHeader;
use crate::connection::{self, Timeouts};
use crate::player::PlayerPage;
use crate::receiver::Refusals;
use crate::window::{Event, Window, WindowConfig};

/// Without a part for this long, a channel is hungry.
const HUNGRY_AFTER: Duration = Duration::from_secs(3);

/// How often idle tracks are looked for.
const RETIRE_EVERY: Duration = Duration::from_secs(1);

/// The packager's clock: UTC, since the Unix epoch (what media time is measured against).
pub fn utc_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[derive(Clone, Debug)]
pub struct PackagerConfig {
    pub listen: SocketAddr,
    pub window: WindowConfig,
    /// Keys an ingest's keycard must be signed with; none means ingest is open, which only a
    /// loopback address, or `open_ingest`, allows.
    pub keys: Vec<KeycardKey>,
    /// Accept ingest without keycards on an address other than loopback.
    pub open_ingest: bool,
    /// The token `/admin/*` accepts besides an ingest keycard.
    pub admin_token: Option<AdminToken>,
    pub timeouts: Timeouts,
    /// Where the player page lives (web/); none serves no page.
    pub web: Option<std::path::PathBuf>,
    /// Where whole segments are kept for VOD; none keeps only the window.
    pub archive: Option<std::path::PathBuf>,
}

impl PackagerConfig {
    /// A packager on `listen` with the defaults: open ingest (so `listen` must be loopback
    /// unless keys are added), no admin token, no player page, no archive.
    pub fn new(listen: SocketAddr) -> Self {
        PackagerConfig {
            listen,
            window: WindowConfig::default(),
            keys: Vec::new(),
            open_ingest: false,
            admin_token: None,
            timeouts: Timeouts::default(),
            web: None,
            archive: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error(
        "refusing to listen on {address} with open ingest: anyone who reaches it could publish channels. \
         Give a keycard key (--keycard-secret, ESTUARY_KEYCARD_SECRET) so that ingests must sign their \
         requests, listen on a loopback address, or pass --open-ingest if the network in front of it is trusted"
    )]
    OpenIngest { address: SocketAddr },
    #[error("cannot use {dir} as the archive: {reason}")]
    Archive {
        dir: std::path::PathBuf,
        reason: String,
    },
}

/// What the receiver and the origin share.
pub struct Shared {
    window: RwLock<Window>,
    /// Bumped on every change of the window: blocked requests wake and look again.
    changes: watch::Sender<u64>,
    pub keys: Vec<KeycardKey>,
    pub admin_token: Option<AdminToken>,
    pub timeouts: Timeouts,
    pub player: PlayerPage,
    pub archive: Option<Archive>,
    /// Ingests refused, by reason only (never by the names a refused request gave).
    pub refusals: Refusals,
    /// TS segments written lately, served again without a remux.
    pub remuxed: crate::origin::Remuxed,
    /// Continuous streams being watched, fed from here as parts land.
    pub continuous: crate::origin::Streams,
    /// Requests for media and playlists, by kind (what an edge in front saves shows here).
    requests: Mutex<BTreeMap<&'static str, u64>>,
}

impl Shared {
    pub fn new(config: &PackagerConfig) -> Result<Arc<Self>, PackagerError> {
        let archive = config
            .archive
            .as_deref()
            .map(|dir| {
                Archive::start(dir).map_err(|error| PackagerError::Archive {
                    dir: dir.to_owned(),
                    reason: error.to_string(),
                })
            })
            .transpose()?;
        Ok(Arc::new(Shared {
            window: RwLock::new(Window::new(config.window)),
            changes: watch::channel(0).0,
            keys: config.keys.clone(),
            admin_token: config.admin_token.clone(),
            timeouts: config.timeouts,
            player: config
                .web
                .as_deref()
                .map(PlayerPage::load)
                .unwrap_or_default(),
            archive,
            refusals: Refusals::default(),
            remuxed: Default::default(),
            continuous: Default::default(),
            requests: Mutex::default(),
        }))
    }

    pub fn read<R>(&self, look: impl FnOnce(&Window) -> R) -> R {
        look(&self.window.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn header(&self, channel: &ChannelName, track: &TrackName) -> Option<TrackHeader> {
        self.read(|window| window.track(channel, track).map(|t| t.header.clone()))
    }

    /// Changes the window and tells whoever waits.
    pub fn apply(&self, change: impl FnOnce(&mut Window) -> Vec<Event>) {
        let events = change(&mut self.window.write().unwrap_or_else(|e| e.into_inner()));
        self.after(&events);
    }

    pub fn try_apply<T, E>(&self, change: impl FnOnce(&mut Window) -> Result<T, E>) -> Result<T, E>
    where
        T: EventsOf,
    {
        let outcome = change(&mut self.window.write().unwrap_or_else(|e| e.into_inner()));
        if let Ok(value) = &outcome {
            self.after(value.events());
        }
        outcome
    }

    fn after(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        for event in events {
            match event {
                Event::PartAdded {
                    channel,
                    track,
                    segment,
                    part,
                    ..
                } => {
                    self.continuous
                        .part_added(self, channel, track, *segment, *part);
                }
                Event::Gap {
                    channel,
                    track,
                    missing,
                } => {
                    tracing::warn!(%channel, %track, first = missing.start, end = missing.end, "segments missing");
                }
                Event::TimelineReset { channel, track } => {
                    tracing::warn!(%channel, %track, "track went back further than its window holds: a new timeline begins");
                    self.continuous.track_changed(self, channel, track);
                }
                Event::TrackRetired { channel, track } => {
                    tracing::info!(%channel, %track, "track retired");
                    let channel_gone = self.read(|window| window.tracks(channel).next().is_none());
                    self.continuous.track_retired(channel, track, channel_gone);
                }
                Event::TrackStarted { channel, track } => {
                    tracing::info!(%channel, %track, "track started");
                    self.continuous.track_changed(self, channel, track);
                }
                Event::HeaderChanged { channel, track } => {
                    tracing::info!(%channel, %track, "track header changed");
                    self.continuous.track_changed(self, channel, track);
                }
                Event::SegmentCompleted {
                    channel,
                    track,
                    segment,
                } => self.archive_segment(channel, track, *segment),
                _ => {}
            }
        }
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Hands a whole segment to the archive, if there is one (the writing happens elsewhere).
    fn archive_segment(&self, channel: &ChannelName, track: &TrackName, msn: u64) {
        let Some(archive) = &self.archive else {
            return;
        };
        let job = self.read(|window| {
            let this = window.track(channel, track)?;
            let segment = this.segment(msn)?;
            Some(ArchiveJob {
                channel: channel.clone(),
                track: track.clone(),
                header: this.header.bytes.clone(),
                entry: archive::Entry {
                    msn,
                    start: segment.start(),
                    duration: segment.duration(),
                    bytes: segment.len() as u64,
                    init: 0,
                    discontinuity: segment.discontinuity,
                },
                parts: segment
                    .parts
                    .iter()
                    .map(|part| part.bytes.clone())
                    .collect(),
            })
        });
        if let Some(job) = job {
            archive.keep(job);
        }
    }

    /// Waits until `ready` holds for the window, at most `limit`; says whether it came true.
    pub async fn wait_until(&self, limit: Duration, ready: impl Fn(&Window) -> bool) -> bool {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            changes.borrow_and_update();
            if self.read(&ready) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.read(&ready),
            }
        }
    }

    /// Each channel's mood: happy while parts arrive, hungry when they stop.
    pub fn moods(&self) -> Vec<(ChannelName, Mood)> {
        let now = utc_now();
        self.read(|window| {
            window
                .channels()
                .map(|channel| {
                    let last_part = window
                        .tracks(channel)
                        .filter_map(|(_, track)| track.last_part())
                        .max();
                    let mood = if last_part.is_some_and(|at| now.saturating_sub(at) < HUNGRY_AFTER)
                    {
                        Mood::Happy
                    } else {
                        Mood::Hungry
                    };
                    (channel.clone(), mood)
                })
                .collect()
        })
    }

    pub fn count_request(&self, kind: &'static str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a change of the window reported.
pub trait EventsOf {
    fn events(&self) -> &[Event];
}

impl EventsOf for Vec<Event> {
    fn events(&self) -> &[Event] {
        self
    }
}

impl EventsOf for crate::window::Accepted {
    fn events(&self) -> &[Event] {
        match self {
            crate::window::Accepted::New(events) => events,
            crate::window::Accepted::Duplicate => &[],
        }
    }
}

/// Binds the configured address, once the configuration is known to be safe there: ingest
/// needs keycards on any address but loopback, unless it is opened on purpose.
pub async fn bind(config: &PackagerConfig) -> Result<TcpListener, PackagerError> {
    let loopback = config.listen.ip().to_canonical().is_loopback();
    if !loopback && config.keys.is_empty() && !config.open_ingest {
        return Err(PackagerError::OpenIngest {
            address: config.listen,
        });
    }
    estuary_http::listen(config.listen).map_err(|error| PackagerError::Listen {
        address: config.listen,
        reason: error.to_string(),
    })
}

/// Serves ingest and origin requests on `listener` until the process ends, and retires idle
/// tracks meanwhile.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    tokio::spawn(retire_idle(Arc::downgrade(&shared)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection::serve(stream, peer, shared.clone()));
    }
}

/// Every [`RETIRE_EVERY`], retires the tracks that have taken nothing for the configured time;
/// ends when the packager is gone.
async fn retire_idle(shared: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(RETIRE_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.apply(|window| window.retire_idle(utc_now()));
    }
}

/// Runs the packager until `shutdown` resolves.
pub async fn run(
    config: PackagerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), PackagerError> {
    let listener = bind(&config).await?;
    let address = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%address, "packager listening: ingest at /ingest/{{channel}}/{{track}}, players at /live/…");
    tokio::select! {
        () = serve(listener, Shared::new(&config)?) => {}
        () = shutdown => tracing::info!("stopping"),
    }
    Ok(())
}
