//! The fan-out engine: continuous streams (`/live/{channel}/stream.{ext}`) to many viewers from
//! one upstream connection each. The HTTP/1 engine hands a viewer's socket here once the
//! bouncers have let it in; the engine writes the response head itself, then the stream's
//! header and chunks from the stream's [`ring::Ring`], starting on a chunk a decoder can start
//! from. One task per stream (`feed`) reads the upstream's framed stream
//! (`estuary_proto::chunks`) into the ring; one task per viewer (`viewer`) holds the
//! viewer's cursor and writes with `writev`, woken by tokio's epoll reactor when a chunk
//! arrives or the socket can take more. A viewer that falls behind is moved to the newest join
//! point or dropped, by its mount's policy. Connections hyper keeps (HTTP/2, TLS, HTTP/3) get
//! the same relay into a response body, and an edge behind this one gets the stream framed.
//! Where the kernel offers io_uring, plain HTTP/1 viewers are written by a few engine threads
//! (`uring`) instead, each submitting its viewers' sends in batches on a ring of its own.
//! This module holds the registry of streams, their policies and their metrics.

pub mod baton;
mod feed;
mod place;
pub mod ring;
mod uring;
mod viewer;

pub use baton::Baton;
pub use viewer::{Refusal, serve_viewer, stream_body};

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::upstream::Upstreams;
use ring::{Limits, Ring};

/// What happens to a viewer that falls behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowPolicy {
    /// Moved on to the newest join point (what it missed is skipped).
    Skip,
    /// Disconnected.
    Drop,
}

impl std::str::FromStr for SlowPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "skip" => Ok(SlowPolicy::Skip),
            "drop" => Ok(SlowPolicy::Drop),
            _ => Err(format!("{text:?} is neither skip nor drop")),
        }
    }
}

/// How a stream treats its viewers: the edge's defaults, or a mount's own.
#[derive(Clone, Debug, PartialEq)]
pub struct MountPolicy {
    pub slow: SlowPolicy,
    /// A viewer further behind than this (media time from the oldest chunk queued for it to
    /// the newest) is slow.
    pub max_lag: Duration,
    /// A viewer whose reader takes nothing for this long (no write accepted, and the kernel's
    /// unsent bytes not going down) is gone, whatever the policy.
    pub client_timeout: Duration,
    /// A viewer further behind than this many bytes is slow.
    pub max_lag_bytes: usize,
    /// A new viewer is sent at least this many bytes of recent stream at once (from a join
    /// point), as Flumotion's burst-on-connect did; 0 starts on the newest join point.
    pub burst_bytes: usize,
    /// Viewers per stream beyond which new ones are turned away (redirected to `overflow`,
    /// else 503).
    pub max_viewers: Option<usize>,
    /// Base URL that viewers beyond `max_viewers` are redirected to (the same path there).
    pub overflow: Option<String>,
}

impl Default for MountPolicy {
    fn default() -> Self {
        MountPolicy {
            slow: SlowPolicy::Skip,
            max_lag: Duration::from_secs(5),
            client_timeout: Duration::from_secs(30),
            max_lag_bytes: 8 << 20,
            burst_bytes: 0,
            max_viewers: None,
            overflow: None,
        }
    }
}

/// Which engine writes plain HTTP/1 viewers' sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// io_uring when the kernel offers what the engine uses, else epoll.
    Auto,
    /// io_uring, or the edge does not start.
    IoUring,
    /// A tokio task per viewer on tokio's epoll reactor.
    Epoll,
}

impl std::str::FromStr for EngineChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(EngineChoice::Auto),
            "io_uring" => Ok(EngineChoice::IoUring),
            "epoll" => Ok(EngineChoice::Epoll),
            _ => Err(format!("{text:?} is none of auto, io_uring and epoll")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FanoutConfig {
    /// The policy of streams no mount names.
    pub policy: MountPolicy,
    /// Mounts with policies of their own: a stream takes the first whose path prefix its
    /// path starts with (e.g. `/live/radio/`).
    pub mounts: Vec<(String, MountPolicy)>,
    /// What a stream's ring keeps.
    pub ring: Limits,
    /// The engine for plain HTTP/1 viewers.
    pub engine: EngineChoice,
    /// io_uring engine threads; `None`: one per CPU the process may run on.
    pub engine_threads: Option<usize>,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            policy: MountPolicy::default(),
            mounts: Vec::new(),
            ring: Limits {
                bytes: 32 << 20,
                micros: 10_000_000,
            },
            engine: EngineChoice::Auto,
            engine_threads: None,
        }
    }
}

impl FanoutConfig {
    /// The policy of the stream `key`.
    pub fn policy_for(&self, key: &str) -> &MountPolicy {
        self.mounts
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()))
            .map_or(&self.policy, |(_, policy)| policy)
    }
}

/// Where a stream stands, as its viewers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the upstream's answer.
    Connecting,
    /// Chunks are in the ring (every chunk added sends this again, waking the viewers);
    /// `generation` counts header changes.
    Live { generation: u64 },
    /// Over: the upstream refused it, or stayed away too long.
    Ended { status: u16, reason: String },
}

/// Counts of one stream, for `/metrics`.
#[derive(Default)]
struct Counters {
    viewers: AtomicUsize,
    bytes_out: AtomicU64,
    skips: AtomicU64,
    drops: AtomicU64,
    refused: AtomicU64,
    upstream_connections: AtomicU64,
}

/// Totals of streams that ended, by key: bytes out, skips, drops, refused, upstream
/// connections.
type Finished = Arc<Mutex<HashMap<String, [u64; 5]>>>;

/// Ended streams that `/metrics` shows by path; past this many, the totals of every ended
/// stream are folded into one row, so that viewers asking for ever new streams cannot grow
/// the edge's memory or its metrics.
const FINISHED_ROWS: usize = 256;
/// The path label of the folded row.
pub const ENDED_STREAMS: &str = "(ended streams)";

struct Stream {
    /// The stream's canonical target (`estuary_proto::url::PublicPath`: the path, and the
    /// track chosen, if any): also the upstream path, shared by every viewer of the stream
    /// however they decorate their URLs.
    key: String,
    ring: Mutex<Option<Ring>>,
    /// The stream's own media type, from the upstream.
    media_type: Mutex<String>,
    /// "Now playing", from the upstream's title frames: for ICY listeners and edges behind.
    title: Mutex<Arc<str>>,
    state: watch::Sender<State>,
    counters: Counters,
    /// How it treats its viewers.
    policy: MountPolicy,
    /// Where its counters go when the last viewer and the feeder have let go of it.
    finished: Finished,
}

impl Stream {
    fn new(key: &str, policy: MountPolicy, finished: Finished) -> Stream {
        Stream {
            key: key.to_owned(),
            policy,
            ring: Mutex::new(None),
            media_type: Mutex::new("application/octet-stream".into()),
            title: Mutex::new("".into()),
            state: watch::Sender::new(State::Connecting),
            counters: Counters::default(),
            finished,
        }
    }

    /// The stream's own media type, as the upstream gave it.
    fn media_type(&self) -> String {
        self.media_type
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The stream's title now (empty until the upstream names one).
    fn title(&self) -> Arc<str> {
        self.title.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether an ICY listener gets metadata in it: radio streams are sound alone.
    fn carries_icy(&self) -> bool {
        self.media_type().starts_with("audio/")
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Option<Ring>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let totals = finished.entry(self.key.clone()).or_default();
        for (total, counter) in totals.iter_mut().zip(totals_of(&self.counters)) {
            *total += counter;
        }
        if finished.len() > FINISHED_ROWS {
            let mut folded = finished.remove(ENDED_STREAMS).unwrap_or_default();
            for (_, totals) in finished.drain() {
                for (total, counter) in folded.iter_mut().zip(totals) {
                    *total += counter;
                }
            }
            finished.insert(ENDED_STREAMS.to_owned(), folded);
        }
    }
}

/// Every continuous stream the edge is relaying.
pub struct Fanout {
    /// Read when a stream starts: a reload's new policies apply to streams started after it.
    config: std::sync::RwLock<FanoutConfig>,
    /// Where streams come from: the packager, or a parent edge.
    upstreams: Arc<Upstreams>,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    /// Streams ended, kept for their counters in `/metrics`.
    finished: Finished,
    /// The io_uring engine's threads, when it was chosen; plain HTTP/1 viewers go to it.
    uring: Option<uring::Engine>,
    /// Plain HTTP/1 viewers past their response head: those an upgrade hands over.
    socket_viewers: AtomicUsize,
    /// Set once this process's viewers are to go to the process upgrading it.
    handing: watch::Sender<bool>,
    /// Where viewers handed over go, while they are.
    batons: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Handed>>>,
}

/// A viewer on its way to another process: its place and its socket.
pub struct Handed {
    pub baton: Baton,
    pub socket: std::net::TcpStream,
}

/// A stream kept open by the process taking viewers over, so that their stream is live
/// before they arrive; let go when dropped.
pub struct Hold(Arc<Stream>);

impl Drop for Hold {
    fn drop(&mut self) {
        viewer::leave(&self.0, 0);
    }
}

/// What a viewer presents on arrival.
pub struct Arrival {
    /// The stream's canonical target, as `PublicPath` writes it.
    pub key: String,
    /// Only the response head is wanted.
    pub head_only: bool,
    /// Another edge, asking for the stream framed (`estuary_proto::chunks`), as a packager
    /// serves it: edges can stand behind edges.
    pub framed: bool,
    /// When the viewer's credentials stop working (Unix seconds): it is disconnected then.
    pub until: Option<u64>,
    /// The revocation list and the id of the viewer's keycard: it is disconnected once the
    /// list names it.
    pub revocable: Option<(Arc<crate::revoked::Revoked>, String)>,
    /// A radio player that asked for ICY metadata (`Icy-MetaData: 1`): it gets the stream's
    /// title in the audio, when the stream is sound alone.
    pub icy: bool,
}

impl Fanout {
    /// The registry, with the engine the configuration asks for started: `Err` when it asks
    /// for io_uring and the kernel does not offer it.
    pub fn new(config: FanoutConfig, upstreams: Arc<Upstreams>) -> Result<Arc<Fanout>, String> {
        let uring = uring::Engine::start(config.engine, config.engine_threads)?;
        Ok(Arc::new(Fanout {
            config: std::sync::RwLock::new(config),
            upstreams,
            streams: Mutex::default(),
            finished: Finished::default(),
            uring,
            socket_viewers: AtomicUsize::new(0),
            handing: watch::Sender::new(false),
            batons: Mutex::new(None),
        }))
    }

    /// The streams that have viewers now: the new process of an upgrade opens them before
    /// their plain HTTP/1 viewers are handed to it.
    pub fn stream_keys(&self) -> Vec<String> {
        self.streams()
            .iter()
            .filter(|(_, stream)| stream.counters.viewers.load(Ordering::Relaxed) > 0)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Starts handing every plain HTTP/1 viewer over (each once its header is out): they
    /// arrive on the receiver, each with its socket, and leave this process's counts.
    pub fn hand_over(&self) -> tokio::sync::mpsc::UnboundedReceiver<Handed> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        *self.batons.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        self.handing.send_replace(true);
        if let Some(engine) = &self.uring {
            engine.hand_over();
        }
        receiver
    }

    /// Plain HTTP/1 viewers not handed over yet.
    pub fn not_handed_over(&self) -> usize {
        self.socket_viewers.load(Ordering::Relaxed)
    }

    /// Sends a viewer on to the process taking over; without one, it is disconnected.
    fn pass(&self, baton: Baton, socket: std::net::TcpStream) {
        let batons = self.batons.lock().unwrap_or_else(|e| e.into_inner());
        match batons.as_ref() {
            Some(batons) => {
                let _ = batons.send(Handed { baton, socket });
            }
            None => tracing::warn!(path = baton.key, "no process to hand the viewer to"),
        }
    }

    /// Keeps the stream `key` open until the hold is dropped, once it is live: `None` when
    /// `key` is no continuous stream, or the stream did not start.
    pub async fn hold(self: &Arc<Self>, key: &str) -> Option<Hold> {
        if !baton::is_stream_key(key) {
            return None;
        }
        let (stream, _) = viewer::open_for(self, key, true).await.ok()?;
        Some(Hold(stream))
    }

    /// Serves a viewer handed over by the process this one upgrades, until it leaves; gives
    /// the bytes sent. `revoked`: this process's revocation list.
    pub async fn adopt(
        self: &Arc<Self>,
        handed: Handed,
        revoked: Option<Arc<crate::revoked::Revoked>>,
    ) -> u64 {
        viewer::adopt(self, handed.socket, handed.baton, revoked).await
    }

    /// New policies (the edge-wide one and the mounts'), for streams started from now on; the
    /// engine and its threads stay as they are.
    pub fn set_policies(&self, policy: MountPolicy, mounts: Vec<(String, MountPolicy)>) {
        let mut config = self.config.write().unwrap_or_else(|e| e.into_inner());
        config.policy = policy;
        config.mounts = mounts;
    }

    /// Viewers of every stream now.
    pub fn viewers(&self) -> usize {
        self.streams()
            .values()
            .map(|stream| stream.counters.viewers.load(Ordering::Relaxed))
            .sum()
    }

    /// The name `/healthz` and `/metrics` give the engine.
    pub fn engine(&self) -> &'static str {
        if self.uring.is_some() {
            "io_uring"
        } else {
            "epoll"
        }
    }

    fn uring(&self) -> Option<&uring::Engine> {
        self.uring.as_ref()
    }

    /// Tells the stream's viewers where it stands: the tokio tasks through its watch channel,
    /// the io_uring engine's threads by their doorbells.
    fn announce(&self, stream: &Stream, state: State) {
        stream.state.send_replace(state);
        if let Some(engine) = &self.uring {
            engine.ring_doorbells();
        }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a viewer in on the stream `key`, starting the stream when it is the first:
    /// `Err` when the stream is full (unless `beyond_limit`: a viewer already served).
    fn attach(self: &Arc<Self>, key: &str, beyond_limit: bool) -> Result<Arc<Stream>, Arc<Stream>> {
        let mut streams = self.streams();
        if let Some(stream) = streams.get(key) {
            let viewers = stream.counters.viewers.load(Ordering::Relaxed);
            if !beyond_limit && stream.policy.max_viewers.is_some_and(|max| viewers >= max) {
                stream.counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(stream.clone());
            }
            stream.counters.viewers.fetch_add(1, Ordering::Relaxed);
            return Ok(stream.clone());
        }
        let policy = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .policy_for(key)
            .clone();
        let stream = Arc::new(Stream::new(key, policy, self.finished.clone()));
        stream.counters.viewers.store(1, Ordering::Relaxed);
        streams.insert(key.to_owned(), stream.clone());
        tokio::spawn(feed::feed(self.clone(), stream.clone()));
        Ok(stream)
    }

    /// Takes `stream` out of the registry if nobody watches it; says whether it did.
    fn retire_if_idle(&self, stream: &Arc<Stream>) -> bool {
        // Under the registry's lock, where viewers are counted in: none can join meanwhile.
        let mut streams = self.streams();
        if stream.counters.viewers.load(Ordering::Relaxed) > 0 {
            return false;
        }
        unregister(&mut streams, stream);
        true
    }

    /// Takes `stream` out of the registry whoever watches it.
    fn retire(&self, stream: &Arc<Stream>) {
        unregister(&mut self.streams(), stream);
    }

    /// The engine's families in the Prometheus text format, per stream.
    pub fn render_metrics(&self) -> String {
        let mut rows: std::collections::BTreeMap<String, (usize, [u64; 5])> = self
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(key, totals)| (key.clone(), (0, *totals)))
            .collect();
        for (key, stream) in self.streams().iter() {
            let row = rows.entry(key.clone()).or_default();
            row.0 = stream.counters.viewers.load(Ordering::Relaxed);
            for (total, counter) in row.1.iter_mut().zip(totals_of(&stream.counters)) {
                *total += counter;
            }
        }
        let mut out = format!(
            "# HELP estuary_edge_fanout_engine The engine writing continuous streams to plain HTTP/1 viewers.\n# TYPE estuary_edge_fanout_engine gauge\nestuary_edge_fanout_engine{{engine=\"{}\"}} 1\n",
            self.engine()
        );
        let families: [(&str, &str, &str); 6] = [
            (
                "estuary_edge_stream_viewers",
                "gauge",
                "Viewers of a continuous stream now.",
            ),
            (
                "estuary_edge_stream_bytes_out_total",
                "counter",
                "Bytes of a continuous stream sent to viewers.",
            ),
            (
                "estuary_edge_stream_skips_total",
                "counter",
                "Times a slow viewer was moved on to the newest join point.",
            ),
            (
                "estuary_edge_stream_drops_total",
                "counter",
                "Slow viewers disconnected.",
            ),
            (
                "estuary_edge_stream_refused_total",
                "counter",
                "Viewers turned away because the stream was full.",
            ),
            (
                "estuary_edge_stream_upstream_connections_total",
                "counter",
                "Connections to an upstream for a continuous stream.",
            ),
        ];
        for (index, (name, kind, help)) in families.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (key, (viewers, totals)) in &rows {
                let value = if index == 0 {
                    *viewers as u64
                } else {
                    totals[index - 1]
                };
                let path = key.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(out, "{name}{{path=\"{path}\"}} {value}");
            }
        }
        out
    }
}

/// Removes `stream` from `streams`, unless a newer stream has taken its key.
fn unregister(streams: &mut HashMap<String, Arc<Stream>>, stream: &Arc<Stream>) {
    if streams
        .get(&stream.key)
        .is_some_and(|current| Arc::ptr_eq(current, stream))
    {
        streams.remove(&stream.key);
    }
}

fn totals_of(counters: &Counters) -> [u64; 5] {
    [
        &counters.bytes_out,
        &counters.skips,
        &counters.drops,
        &counters.refused,
        &counters.upstream_connections,
    ]
    .map(|counter| counter.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_streams_are_folded_into_one_row_past_the_limit() {
        let finished = Finished::default();
        for n in 0..FINISHED_ROWS * 3 {
            let stream = Stream::new(
                &format!("/live/c{n}/stream.mp3"),
                MountPolicy::default(),
                finished.clone(),
            );
            stream.counters.bytes_out.store(10, Ordering::Relaxed);
        }
        let finished = finished.lock().unwrap();
        assert!(finished.len() <= FINISHED_ROWS + 1, "{}", finished.len());
        let total: u64 = finished.values().map(|totals| totals[0]).sum();
        assert_eq!(total, 10 * (FINISHED_ROWS as u64) * 3, "no byte is lost");
        assert!(finished.contains_key(ENDED_STREAMS));
    }
}
