//! The cache: objects fetched from upstream, shared by every viewer who asks for the same thing,
//! in memory bounded by a byte budget (least recently used goes first).
//!
//! However many viewers miss at once, one fetch goes upstream: the first becomes the fetcher,
//! the others wait for what it gets (coalescing). An object's body is a [`Growing`] list of
//! shared `Bytes`, readable while it is still arriving, so a segment the packager sends while
//! it is being written reaches every waiting viewer as it grows. Objects stay after they go
//! stale, so a playlist can be served stale when the upstream fails.
//!
//! Everything an entry costs is charged to the budget (its key and bookkeeping as well as its
//! body), so a flood of tiny answers cannot grow the cache past it; answers that say "nothing
//! here" are also capped in number, so they cannot push real objects out. Eviction takes the
//! least recently used entry in logarithmic time, however many there are.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use hyper::header::HeaderValue;
use tokio::sync::watch;

use crate::failure::FetchError;
pub use estuary_http::{Growing, Now};

/// An upstream answer as kept in the cache.
#[derive(Debug)]
pub struct Object {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub cache_control: Option<HeaderValue>,
    pub body: Arc<Growing>,
    pub fetched: Instant,
    pub fresh_for: Duration,
}

impl Object {
    pub fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.fetched) < self.fresh_for
    }
}

/// How long an answer stays fresh: the upstream's `max-age` (an `immutable` one for a year),
/// a short negative-cache time for a 404 that says nothing, at least `floor` for playlists
/// (which the packager marks `max-age=0`: the edge still shares one fetch among the viewers
/// who ask within `floor`).
pub fn freshness(status: StatusCode, cache_control: Option<&str>, floor: Duration) -> Duration {
    let directives = cache_control.unwrap_or("");
    if directives
        .split(',')
        .any(|d| matches!(d.trim(), "no-store" | "private"))
    {
        return Duration::ZERO;
    }
    let max_age = directives.split(',').find_map(|directive| {
        directive
            .trim()
            .strip_prefix("max-age=")
            .and_then(|value| value.parse::<u64>().ok())
    });
    match (status, max_age) {
        (status, Some(seconds)) if status.is_success() || status == StatusCode::NOT_FOUND => {
            Duration::from_secs(seconds).max(floor)
        }
        (StatusCode::NOT_FOUND, None) => NEGATIVE,
        (status, None) if status.is_success() => floor,
        _ => Duration::ZERO,
    }
}

/// How long a 404 without Cache-Control is remembered.
pub const NEGATIVE: Duration = Duration::from_secs(1);

/// What a lookup found.
pub enum Lookup {
    /// A fresh object: serve it.
    Hit(Arc<Object>),
    /// Someone is already fetching it: wait for their answer.
    Wait(watch::Receiver<Option<Fetched>>),
    /// Nobody is: the caller fetches, and hands the answer to [`Cache::fill`]. A stale copy,
    /// if there is one, comes along for when the upstream fails.
    Fetch { stale: Option<Arc<Object>> },
}

/// The outcome of a fetch, as waiters see it.
pub type Fetched = Result<Arc<Object>, FetchError>;

/// What an entry costs beyond its key and body: the object, its headers, the map entries.
pub const ENTRY_OVERHEAD: usize = 512;
/// At most this many answers that are not a success (404s for segments not there yet) are
/// kept; the least recently used goes first.
pub const MAX_NEGATIVE: usize = 4096;

struct Stored {
    object: Arc<Object>,
    last_used: u64,
    size: usize,
}

impl Stored {
    fn negative(&self) -> bool {
        !self.object.status.is_success()
    }
}

#[derive(Default)]
struct Inner {
    objects: HashMap<String, Stored>,
    /// Keys by when they were last used (each use takes a new tick): the least recently used
    /// first.
    by_use: BTreeMap<u64, String>,
    /// The same, for negative entries alone.
    negative_by_use: BTreeMap<u64, String>,
    inflight: HashMap<String, watch::Sender<Option<Fetched>>>,
    bytes: usize,
    clock: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn insert(&mut self, key: &str, stored: Stored) {
        self.remove(key);
        self.by_use.insert(stored.last_used, key.to_owned());
        if stored.negative() {
            self.negative_by_use
                .insert(stored.last_used, key.to_owned());
        }
        self.bytes += stored.size;
        self.objects.insert(key.to_owned(), stored);
    }

    fn remove(&mut self, key: &str) -> Option<Stored> {
        let stored = self.objects.remove(key)?;
        self.by_use.remove(&stored.last_used);
        self.negative_by_use.remove(&stored.last_used);
        self.bytes -= stored.size;
        Some(stored)
    }

    /// Marks `key` used now.
    fn touch(&mut self, key: &str) {
        let now = self.tick();
        let Some(stored) = self.objects.get_mut(key) else {
            return;
        };
        let before = std::mem::replace(&mut stored.last_used, now);
        self.by_use.remove(&before);
        self.by_use.insert(now, key.to_owned());
        if self.negative_by_use.remove(&before).is_some() {
            self.negative_by_use.insert(now, key.to_owned());
        }
    }
}

/// What keeping `body_bytes` under `key` costs.
fn charge(key: &str, body_bytes: usize) -> usize {
    body_bytes + key.len() + ENTRY_OVERHEAD
}

/// Counts of what lookups found, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
    pub coalesced: u64,
    pub objects: usize,
    pub bytes: usize,
}

pub struct Cache {
    budget: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
}

impl Cache {
    /// A cache holding at most `budget` bytes of bodies.
    pub fn new(budget: usize) -> Cache {
        Cache {
            budget,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counts(&self) -> CacheCounts {
        let inner = self.lock();
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            objects: inner.objects.len(),
            bytes: inner.bytes,
        }
    }

    /// Looks `key` up at `now`. A `Fetch` answer makes the caller the fetcher for `key`: it
    /// must call [`Cache::fill`] (or [`Cache::fail`]) once, whatever happens.
    pub fn lookup(&self, key: &str, now: Instant) -> Lookup {
        let mut inner = self.lock();
        inner.touch(key);
        let mut stale = None;
        if let Some(stored) = inner.objects.get(key) {
            if stored.object.is_fresh(now) {
                let object = stored.object.clone();
                drop(inner);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Hit(object);
            }
            stale = Some(stored.object.clone());
        }
        if let Some(sender) = inner.inflight.get(key) {
            let receiver = sender.subscribe();
            drop(inner);
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            return Lookup::Wait(receiver);
        }
        inner
            .inflight
            .insert(key.to_owned(), watch::channel(None).0);
        drop(inner);
        self.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Fetch { stale }
    }

    /// The fetcher's answer: kept (when it may be) and handed to every waiter.
    pub fn fill(&self, key: &str, object: Arc<Object>) {
        let mut inner = self.lock();
        if !object.fresh_for.is_zero() {
            // Sized by what has arrived; a body still growing is sized again when whole.
            let stored = Stored {
                object: object.clone(),
                last_used: inner.tick(),
                size: charge(key, object.body.len()),
            };
            inner.insert(key, stored);
            self.evict(&mut inner);
        }
        if let Some(sender) = inner.inflight.remove(key) {
            sender.send_replace(Some(Ok(object)));
        }
    }

    /// The fetch failed: waiters get `fallback` (a stale copy the fetcher chose to serve) or
    /// the reason; the stale copy (if any) stays.
    pub fn fail(&self, key: &str, failure: FetchError, fallback: Option<Arc<Object>>) {
        if let Some(sender) = self.lock().inflight.remove(key) {
            sender.send_replace(Some(fallback.ok_or(failure)));
        }
    }

    /// The fetcher gave up without an answer (its viewer left): waiters look again, and one of
    /// them fetches.
    pub fn abandon(&self, key: &str) {
        self.lock().inflight.remove(key);
    }

    /// Drops `object` (if it is still the one kept for `key`): its body broke off.
    pub fn forget(&self, key: &str, object: &Arc<Object>) {
        let mut inner = self.lock();
        if inner
            .objects
            .get(key)
            .is_some_and(|stored| Arc::ptr_eq(&stored.object, object))
        {
            inner.remove(key);
        }
    }

    /// Corrects the size of an object whose body grew after it was stored.
    pub fn resize(&self, key: &str, object: &Arc<Object>) {
        let mut inner = self.lock();
        let size = charge(key, object.body.len());
        let Some(stored) = inner.objects.get_mut(key) else {
            return;
        };
        if !Arc::ptr_eq(&stored.object, object) {
            return;
        }
        let old = std::mem::replace(&mut stored.size, size);
        inner.bytes = inner.bytes - old + size;
        self.evict(&mut inner);
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.negative_by_use.len() > MAX_NEGATIVE {
            let Some((_, oldest)) = inner.negative_by_use.pop_first() else {
                break;
            };
            inner.remove(&oldest);
        }
        while inner.bytes > self.budget {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            inner.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn object(bytes: usize, fresh_for: Duration) -> Arc<Object> {
        answer(StatusCode::OK, bytes, fresh_for)
    }

    fn answer(status: StatusCode, bytes: usize, fresh_for: Duration) -> Arc<Object> {
        Arc::new(Object {
            status,
            content_type: None,
            cache_control: None,
            body: Growing::whole(vec![Bytes::from(vec![0u8; bytes])]),
            fetched: Instant::now(),
            fresh_for,
        })
    }

    #[test]
    fn one_fetch_however_many_ask() {
        let cache = Cache::new(1 << 20);
        let now = Instant::now();
        assert!(matches!(
            cache.lookup("/a", now),
            Lookup::Fetch { stale: None }
        ));
        let mut waiters: Vec<_> = (0..499)
            .map(|_| match cache.lookup("/a", now) {
                Lookup::Wait(receiver) => receiver,
                _ => panic!("a second fetch"),
            })
            .collect();
        cache.fill("/a", object(10, Duration::from_secs(60)));
        for waiter in &mut waiters {
            assert!(matches!(&*waiter.borrow_and_update(), Some(Ok(_))));
        }
        assert!(matches!(cache.lookup("/a", now), Lookup::Hit(_)));
        let counts = cache.counts();
        assert_eq!((counts.misses, counts.coalesced, counts.hits), (1, 499, 1));
    }

    #[test]
    fn when_the_fetcher_gives_up_a_waiter_fetches() {
        let cache = Cache::new(1 << 20);
        let now = Instant::now();
        assert!(matches!(cache.lookup("/a", now), Lookup::Fetch { .. }));
        let Lookup::Wait(waiter) = cache.lookup("/a", now) else {
            panic!("a second fetch")
        };
        cache.abandon("/a");
        assert!(
            waiter.has_changed().is_err(),
            "the waiter learns the fetch is gone"
        );
        assert!(matches!(cache.lookup("/a", now), Lookup::Fetch { .. }));
    }

    #[test]
    fn stale_copies_stay_for_when_the_upstream_fails() {
        let cache = Cache::new(1 << 20);
        let now = Instant::now();
        let _ = cache.lookup("/p", now);
        cache.fill("/p", object(10, Duration::from_millis(100)));
        let later = now + Duration::from_secs(5);
        let Lookup::Fetch { stale: Some(stale) } = cache.lookup("/p", later) else {
            panic!("the stale copy comes with the fetch")
        };
        assert!(!stale.is_fresh(later));
        cache.fail("/p", FetchError::Upstream("upstream down".into()), None);
        assert!(matches!(
            cache.lookup("/p", later),
            Lookup::Fetch { stale: Some(_) }
        ));
    }

    #[test]
    fn the_least_recently_used_goes_when_over_budget() {
        let entry = charge("/1", 100);
        let cache = Cache::new(2 * entry + 50);
        let now = Instant::now();
        for key in ["/1", "/2"] {
            let _ = cache.lookup(key, now);
            cache.fill(key, object(100, Duration::from_secs(60)));
        }
        assert!(matches!(cache.lookup("/1", now), Lookup::Hit(_)));
        let _ = cache.lookup("/3", now);
        cache.fill("/3", object(100, Duration::from_secs(60)));
        assert!(matches!(cache.lookup("/1", now), Lookup::Hit(_)));
        assert!(matches!(cache.lookup("/3", now), Lookup::Hit(_)));
        assert!(matches!(cache.lookup("/2", now), Lookup::Fetch { .. }));
        assert!(cache.counts().bytes <= 2 * entry + 50);
    }

    /// A flood of answers with empty bodies under many keys (404s for made-up segments) is
    /// held to the budget, keys and all, and to the cap on negative entries, and pushes out
    /// no real object while the negatives fit under their cap.
    #[test]
    fn empty_answers_under_many_keys_are_charged_and_capped() {
        let budget = 8 << 20;
        let cache = Cache::new(budget);
        let now = Instant::now();
        let _ = cache.lookup("/live/demo/v720/1.m4s", now);
        cache.fill(
            "/live/demo/v720/1.m4s",
            object(1 << 20, Duration::from_secs(60)),
        );
        for n in 0..50_000u64 {
            let key = format!("/live/demo/v720/{}.m4s", 1_000_000 + n);
            let _ = cache.lookup(&key, now);
            cache.fill(
                &key,
                answer(StatusCode::NOT_FOUND, 20, Duration::from_secs(1)),
            );
        }
        let counts = cache.counts();
        assert!(counts.bytes <= budget, "{counts:?}");
        assert_eq!(counts.objects, MAX_NEGATIVE + 1, "{counts:?}");
        assert!(matches!(
            cache.lookup("/live/demo/v720/1.m4s", now),
            Lookup::Hit(_)
        ));
        // Tiny successful answers under many keys are held to the budget too.
        let small = Cache::new(1 << 20);
        for n in 0..20_000u64 {
            let key = format!("/k/{n}");
            let _ = small.lookup(&key, now);
            small.fill(&key, object(1, Duration::from_secs(60)));
        }
        let counts = small.counts();
        assert!(counts.bytes <= 1 << 20, "{counts:?}");
        assert!(counts.objects < (1 << 20) / ENTRY_OVERHEAD, "{counts:?}");
    }

    #[test]
    fn freshness_follows_cache_control() {
        let floor = Duration::from_millis(100);
        assert_eq!(
            freshness(
                StatusCode::OK,
                Some("public, max-age=31536000, immutable"),
                floor
            ),
            Duration::from_secs(31_536_000)
        );
        assert_eq!(
            freshness(StatusCode::OK, Some("public, max-age=0"), floor),
            floor
        );
        assert_eq!(
            freshness(StatusCode::NOT_FOUND, Some("public, max-age=1"), floor),
            Duration::from_secs(1)
        );
        assert_eq!(freshness(StatusCode::NOT_FOUND, None, floor), NEGATIVE);
        assert_eq!(
            freshness(StatusCode::OK, Some("no-store"), floor),
            Duration::ZERO
        );
        assert_eq!(
            freshness(StatusCode::BAD_GATEWAY, None, floor),
            Duration::ZERO
        );
    }
}
