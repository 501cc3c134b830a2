//! The packager's process: the window shared between the ingest receiver and the origin, the
//! wake-ups that answer blocked requests the moment a part lands, the retirement of idle
//! tracks, and the HTTP server in front of both (HTTP/1.1 and HTTP/2, kept to the packager's
//! limits by `estuary_http`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use estuary_http::Limits;
use estuary_http::listen::Connections;
use estuary_proto::Mood;
use estuary_proto::keycard::KeycardKey;
use estuary_proto::url::{ChannelName, TrackName};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::AdminToken;
use crate::archive::{self, Archive, ArchiveJob};
use crate::cmaf::TrackHeader;
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
    /// What a client's requests and connections may take: head size, head and idle timeouts.
    pub limits: Limits,
    /// An ingest body that brings nothing for this long is refused and its connection closed
    /// (the ingest sends a chunk every part, a third of a second).
    pub ingest_timeout: Duration,
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
            limits: Limits::default(),
            ingest_timeout: Duration::from_secs(10),
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
    pub limits: Limits,
    pub ingest_timeout: Duration,
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
            limits: config.limits,
            ingest_timeout: config.ingest_timeout,
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

/// Serves ingest and origin requests on `listener` until `shutdown` resolves (then it stops
/// accepting; the connections it started are counted in `connections`), and retires idle
/// tracks meanwhile.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Connections>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::spawn(retire_idle(Arc::downgrade(&shared)));
    estuary_http::listen::accept(listener, connections, shutdown, move |stream, peer| {
        let shared = shared.clone();
        async move {
            let limits = shared.limits;
            estuary_http::connection::serve(stream, &limits, move |mut request| {
                // Who asked, for keycards bound to an address.
                request.extensions_mut().insert(peer);
                crate::origin::handle(shared.clone(), request)
            })
            .await;
        }
    })
    .await;
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

/// How long requests in flight at shutdown have to finish (a blocking playlist request, a
/// segment being streamed) before the process ends anyway; continuous streams and ingests
/// never finish on their own, and are cut.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Runs the packager until `shutdown` resolves: then it stops accepting connections and gives
/// the requests in flight [`DRAIN_GRACE`] to finish.
pub async fn run(
    config: PackagerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), PackagerError> {
    let listener = bind(&config).await?;
    let address = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%address, "packager listening: ingest at /ingest/{{channel}}/{{track}}, players at /live/…");
    let connections = Connections::new();
    serve(
        listener,
        Shared::new(&config)?,
        connections.clone(),
        shutdown,
    )
    .await;
    tracing::info!(open = connections.open(), "stopping");
    connections.drained(DRAIN_GRACE).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::testing::{self, Channel, TrackSpec};

    /// The header, ingest and idle timeouts of these tests.
    struct Short {
        header: Duration,
        ingest: Duration,
        idle: Duration,
    }

    const SHORT: Short = Short {
        header: Duration::from_millis(400),
        ingest: Duration::from_millis(400),
        idle: Duration::from_millis(600),
    };

    async fn packager() -> std::net::SocketAddr {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..13);
        testing::serve_window(channel.window, |config| {
            config.limits.head_timeout = SHORT.header;
            config.limits.idle_timeout = SHORT.idle;
            config.ingest_timeout = SHORT.ingest;
        })
        .await
        .1
    }

    /// Reads until the server closes the connection; how long that took.
    async fn closed_after(mut stream: tokio::net::TcpStream, limit: Duration) -> Duration {
        let started = StdInstant::now();
        let mut sink = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut sink))
            .await
            .expect("the server closed the connection")
            .ok();
        started.elapsed()
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off_at_the_header_timeout() {
        let address = packager().await;
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let took = closed_after(stream, Duration::from_secs(5)).await;
        assert!(took >= SHORT.header && took < SHORT.header * 4, "{took:?}");
        // Half an HTTP/2 preface does not hold the connection either.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let took = closed_after(stream, Duration::from_secs(5)).await;
        assert!(took < SHORT.header * 4, "{took:?}");
    }

    /// A head sent a line at a time, each well within the timeout, never finishes in time.
    #[tokio::test]
    async fn a_slow_head_is_cut_off_at_the_header_timeout() {
        let address = packager().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let started = StdInstant::now();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut cut = false;
        for line in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let header = format!("X-Slow-{line}: 1\r\n");
            if stream.write_all(header.as_bytes()).await.is_err() {
                cut = true;
                break;
            }
        }
        let took = started.elapsed();
        let closed = closed_after(stream, Duration::from_secs(5)).await;
        assert!(
            cut || took + closed < SHORT.header * 4,
            "{took:?} {closed:?}"
        );
        assert!(took < SHORT.header * 4, "sent for {took:?}");
    }

    /// After a response, a keep-alive connection left alone is closed.
    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let address = packager().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        let took = closed_after(stream, Duration::from_secs(5)).await;
        assert!(took < SHORT.idle * 3, "{took:?}");
    }

    /// An ingest that opened its body and then sends nothing is refused with 408 once the
    /// ingest timeout passes, and its connection ends.
    #[tokio::test]
    async fn a_stalled_ingest_is_refused_and_its_connection_ends() {
        let address = packager().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let header = testing::header(&TrackSpec::video());
        let head =
            "POST /ingest/quiet/v1 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(format!("{:x}\r\n", header.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&header).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        let started = StdInstant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the connection ended")
            .unwrap();
        let took = started.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("nothing arrived"), "{answer}");
        assert!(took >= SHORT.ingest && took < SHORT.ingest * 4, "{took:?}");
        // The track its header made is gone again: a refused ingest leaves nothing.
        let metrics = testing::get(address, "GET", "/metrics").await;
        assert!(!metrics.contains("channel=\"quiet\""), "{metrics}");
        assert!(
            metrics.contains("estuary_packager_ingest_refused_total{reason=\"stalled\"} 1"),
            "{metrics}"
        );
    }
}
