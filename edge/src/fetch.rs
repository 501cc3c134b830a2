//! The fetch driver: an object of the layout from the cache, from a fetch under way, or from
//! the upstreams now (one fetch however many viewers miss at once), with the body pumped into
//! the cache as it arrives; a stale playlist when every upstream fails. Its errors say who
//! failed, which decides the status: an upstream that failed (502), one that did not answer in
//! time (504), or the edge itself (500).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::Mood;
use estuary_proto::url::{CacheClass, PublicPath};
use http_body_util::BodyExt as _;
use hyper::header;

use crate::cache::{self, Cache, Growing, Lookup, Object};
pub use crate::failure::FetchError;
use crate::metrics::Metrics;
use crate::upstream::{BODY_IDLE_TIMEOUT, MAX_BODY, Upstreams};

/// How long the answer to a blocking playlist request (`_HLS_msn`, `_HLS_part`) is shared.
const BLOCKING_ANSWER_FLOOR: Duration = Duration::from_secs(2);

/// Where an answer came from, as `x-cache` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheState {
    /// From the cache.
    Hit,
    /// Fetched for this request.
    Miss,
    /// From a fetch another request started.
    Coalesced,
    /// A stale copy: every upstream failed.
    Stale,
}

impl CacheState {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Hit => "HIT",
            CacheState::Miss => "MISS",
            CacheState::Coalesced => "COALESCED",
            CacheState::Stale => "STALE",
        }
    }
}

/// The cache in front of the upstreams.
pub struct Fetcher {
    cache: Arc<Cache>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    /// Playlists (which the packager marks `max-age=0`) are shared for this long.
    playlist_floor: Duration,
    /// How old a playlist may be and still be served when the upstream fails.
    stale_limit: Duration,
    requests: AtomicU64,
    /// When the upstream last answered, and the last failure since.
    health: Mutex<(Option<Instant>, Option<String>)>,
}

impl Fetcher {
    pub fn new(
        cache: Arc<Cache>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        playlist_floor: Duration,
        stale_limit: Duration,
    ) -> Fetcher {
        Fetcher {
            cache,
            upstreams,
            metrics,
            playlist_floor,
            stale_limit,
            requests: AtomicU64::new(0),
            health: Mutex::default(),
        }
    }

    pub fn cache_counts(&self) -> cache::CacheCounts {
        self.cache.counts()
    }

    /// Requests sent upstream so far.
    pub fn upstream_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `waking` before the first upstream answer, `happy`, or `sad` with the reason while the
    /// upstreams fail.
    pub fn mood(&self) -> (Mood, Option<String>) {
        let (last_ok, failure) = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (last_ok, failure) {
            (_, Some(reason)) => (Mood::Sad, Some(reason)),
            (Some(_), None) => (Mood::Happy, None),
            (None, None) => (Mood::Waking, None),
        }
    }

    /// The object at `path`: from the cache, from a fetch under way, or fetched now; a stale
    /// playlist when the upstream fails. The cache key and the upstream request are the path's
    /// canonical target, so however a viewer decorates a URL, it asks for one object.
    pub async fn object(&self, path: &PublicPath) -> Result<(Arc<Object>, CacheState), FetchError> {
        // Room for the usual key at once: growing it a few bytes at a time cost reallocations.
        let mut key = String::with_capacity(96);
        let _ = write!(key, "{path}");
        let key = key.as_str();
        loop {
            match self.cache.lookup(key, Instant::now()) {
                Lookup::Hit(object) => return Ok((object, CacheState::Hit)),
                Lookup::Wait(mut answer) => loop {
                    if let Some(outcome) = answer.borrow_and_update().clone() {
                        return outcome.map(|object| (object, CacheState::Coalesced));
                    }
                    if answer.changed().await.is_err() {
                        break; // the fetcher went away without an answer: look again
                    }
                },
                // Boxed: the fetch's future is large, and every request, hits too, would carry
                // (and move) its room.
                Lookup::Fetch { stale } => {
                    return Box::pin(self.fetch(key, path.cache_class(), stale)).await;
                }
            }
        }
    }

    async fn fetch(
        &self,
        key: &str,
        class: CacheClass,
        stale: Option<Arc<Object>>,
    ) -> Result<(Arc<Object>, CacheState), FetchError> {
        // If this request goes away mid-fetch (its viewer left), the waiters look again.
        struct Unfinished<'a>(&'a Cache, &'a str, bool);
        impl Drop for Unfinished<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.abandon(self.1);
                }
            }
        }
        let mut guard = Unfinished(&self.cache, key, false);
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.upstreams.get(key).await {
            Ok((response, took)) => {
                self.metrics.upstream_latency(took);
                self.health(Ok(()));
                let status = response.status();
                let headers = response.headers();
                let cache_control = headers.get(header::CACHE_CONTROL).cloned();
                let fresh_for = cache::freshness(
                    status,
                    cache_control.as_ref().and_then(|v| v.to_str().ok()),
                    match class {
                        // The answer to a blocking request holds the part asked for: it stays
                        // a right answer to that request, for everyone who asks it.
                        CacheClass::BlockingPlaylist => BLOCKING_ANSWER_FLOOR,
                        CacheClass::Playlist => self.playlist_floor,
                        _ => Duration::ZERO,
                    },
                );
                let object = Arc::new(Object {
                    status,
                    content_type: headers.get(header::CONTENT_TYPE).cloned(),
                    cache_control,
                    body: Growing::new(),
                    fetched: Instant::now(),
                    fresh_for,
                });
                self.cache.fill(key, object.clone());
                guard.2 = true;
                self.pump(key.to_owned(), response.into_body(), object.clone());
                Ok((object, CacheState::Miss))
            }
            Err(error) => {
                let error = FetchError::from(error);
                self.health(Err(error.to_string()));
                // A blocking request is never answered from a stale copy (DESIGN.md).
                let usable = stale.filter(|stale| {
                    class == CacheClass::Playlist
                        && stale.fetched.elapsed() < self.stale_limit
                        && stale.body.end() == Some(Ok(()))
                });
                guard.2 = true;
                self.cache.fail(key, error.clone(), usable.clone());
                match usable {
                    Some(stale) => {
                        self.metrics.stale_served.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(path = key, age = ?stale.fetched.elapsed(), %error, "upstream failed: serving a stale playlist");
                        Ok((stale, CacheState::Stale))
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Moves an upstream body into the object's growing body, for every viewer at once. A body
    /// that breaks off, stalls or grows past the limit is dropped from the cache; a whole one is
    /// sized again.
    fn pump(&self, key: String, mut body: hyper::body::Incoming, object: Arc<Object>) {
        let cache = self.cache.clone();
        tokio::spawn(async move {
            let idle = tokio::time::sleep(BODY_IDLE_TIMEOUT);
            tokio::pin!(idle);
            let mut received = 0;
            let outcome = loop {
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + BODY_IDLE_TIMEOUT);
                let frame = tokio::select! {
                    frame = body.frame() => frame,
                    () = idle.as_mut() => {
                        break Err(format!("the upstream sent nothing for {BODY_IDLE_TIMEOUT:?}"));
                    }
                };
                match frame {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            received += data.len();
                            if received > MAX_BODY {
                                break Err(format!("the upstream's body is over {MAX_BODY} bytes"));
                            }
                            object.body.push(data);
                        }
                    }
                    Some(Err(error)) => break Err(error.to_string()),
                    None => break Ok(()),
                }
            };
            match &outcome {
                Ok(()) => {
                    object.body.seal();
                    cache.resize(&key, &object);
                }
                Err(reason) => {
                    tracing::debug!(path = key, %reason, "upstream body broke off");
                    cache.forget(&key, &object);
                }
            }
            object.body.finish(outcome);
        });
    }

    fn health(&self, outcome: Result<(), String>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => *health = (Some(Instant::now()), None),
            Err(reason) => health.1 = Some(reason),
        }
    }
}
