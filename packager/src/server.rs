//! The packager's process: the window shared between the ingest receiver and the origin, the
//! wake-ups that answer blocked requests the moment a part lands, and the HTTP server
//! (HTTP/1.1 and HTTP/2) in front of both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use estuary_proto::Mood;
use estuary_proto::keycard::KeycardKey;
use estuary_proto::url::{ChannelName, TrackName};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::archive::{self, Archive, ArchiveJob};
use crate::cmaf::TrackHeader;
use crate::origin;
use crate::player::PlayerPage;
use crate::window::{Event, Window, WindowConfig};

/// Without a part for this long, a channel is hungry.
const HUNGRY_AFTER: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct PackagerConfig {
    pub listen: SocketAddr,
    pub window: WindowConfig,
    /// Keys an ingest's keycard must be signed with; none means ingest is open.
    pub keys: Vec<KeycardKey>,
    /// Where the player page lives (web/); none serves no page.
    pub web: Option<std::path::PathBuf>,
    /// Where whole segments are kept for VOD; none keeps only the window.
    pub archive: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("cannot use {dir} as the archive: {reason}")]
    Archive {
        dir: std::path::PathBuf,
        reason: String,
    },
}

/// Per-track counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackCounters {
    pub parts: u64,
    pub duplicates: u64,
    pub refused: u64,
    pub gaps: u64,
}

/// What the receiver and the origin share.
pub struct Shared {
    window: RwLock<Window>,
    /// Bumped on every change of the window: blocked requests wake and look again.
    changes: watch::Sender<u64>,
    pub keys: Vec<KeycardKey>,
    pub player: PlayerPage,
    pub archive: Option<Archive>,
    counters: Mutex<BTreeMap<(ChannelName, TrackName), TrackCounters>>,
    last_part: Mutex<BTreeMap<ChannelName, Instant>>,
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
            player: config
                .web
                .as_deref()
                .map(PlayerPage::load)
                .unwrap_or_default(),
            archive,
            counters: Mutex::default(),
            last_part: Mutex::default(),
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

    pub fn count(
        &self,
        channel: &ChannelName,
        track: &TrackName,
        update: impl FnOnce(&mut TrackCounters),
    ) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        update(
            counters
                .entry((channel.clone(), track.clone()))
                .or_default(),
        );
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
                    self.count(channel, track, |c| c.parts += 1);
                    self.continuous
                        .part_added(self, channel, track, *segment, *part);
                    self.last_part
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(channel.clone(), Instant::now());
                }
                Event::Gap {
                    channel,
                    track,
                    missing,
                } => {
                    tracing::warn!(%channel, %track, first = missing.start, end = missing.end, "segments missing");
                    self.count(channel, track, |c| c.gaps += 1);
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
        let last_part = self.last_part.lock().unwrap_or_else(|e| e.into_inner());
        last_part
            .iter()
            .map(|(channel, at)| {
                let mood = if at.elapsed() < HUNGRY_AFTER {
                    Mood::Happy
                } else {
                    Mood::Hungry
                };
                (channel.clone(), mood)
            })
            .collect()
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

    pub fn counters(&self) -> BTreeMap<(ChannelName, TrackName), TrackCounters> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a change of the window reported.
pub trait EventsOf {
    fn events(&self) -> &[Event];
}

impl EventsOf for crate::window::Accepted {
    fn events(&self) -> &[Event] {
        match self {
            crate::window::Accepted::New(events) => events,
            crate::window::Accepted::Duplicate => &[],
        }
    }
}

/// Binds the configured address.
pub async fn bind(config: &PackagerConfig) -> Result<TcpListener, PackagerError> {
    estuary_proto::io::listen(config.listen).map_err(|error| PackagerError::Listen {
        address: config.listen,
        reason: error.to_string(),
    })
}

/// Serves ingest and origin requests on `listener` until the process ends.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
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
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| origin::handle(shared.clone(), request));
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended");
            }
        });
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
