//! Replays a request log against a live system as an open model: each logged request is sent
//! at its logged time (from the log's first request, divided by the speed), whether or not
//! earlier ones have been answered, so a slow server meets the arrivals the log had instead
//! of slowing them down. The logged client goes in `X-Forwarded-For`; `--map` rules move the
//! log's paths onto content the target has. The report counts requests, answers by status,
//! client-side failures by kind, bytes, and latency percentiles from an HDR histogram.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::log::{Format, LogReader, Tally};

/// How long one request may take, head and body, before it counts as timed out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Logs are written as requests end, so lines come a little out of time order (up to a
/// minute in the 2015 Apache log used in the tests); lines up to this many logged seconds out
/// of order are sent in time order.
const REORDER_WINDOW: f64 = 120.0;
/// How often a live mapping reads its channel's media playlist again.
const LIVE_REFRESH: Duration = Duration::from_secs(1);
/// Logged responses at least this long are mapped onto segments by a live mapping; shorter
/// ones onto the playlist.
const SEGMENT_SIZED: u64 = 16 * 1024;

pub struct Options {
    pub log: PathBuf,
    pub format: Option<Format>,
    /// `http://host:port`, no trailing slash.
    pub target: String,
    /// How many times faster than logged the requests are sent.
    pub speed: f64,
    pub maps: Vec<Map>,
    /// Stop sending after this long (answers already asked for are still waited for).
    pub duration: Option<Duration>,
    /// The most requests waiting for an answer at once; past it, a request is not sent and
    /// counts as a client-side failure (`too many in flight`): the arrivals stay the log's.
    pub max_in_flight: usize,
}

/// A rule that moves logged paths onto the target's content. Rules are tried in order; the
/// first whose prefix the path starts with applies; a path no rule matches is sent as logged.
#[derive(Clone, Debug, PartialEq)]
pub enum Map {
    /// `FROM=TO`: the prefix `FROM` becomes `TO` (the query is kept).
    Prefix { from: String, to: String },
    /// `FROM=live:CHANNEL`: the request becomes one a viewer of the live channel makes now:
    /// for its media playlist when the logged response was small, for its newest segment when
    /// it was large.
    Live { from: String, channel: String },
}

impl std::str::FromStr for Map {
    type Err = String;

    fn from_str(text: &str) -> Result<Map, String> {
        let Some((from, to)) = text.split_once('=') else {
            return Err(format!(
                "{text:?} is not a mapping: expected FROM=TO or FROM=live:CHANNEL"
            ));
        };
        if !from.starts_with('/') {
            return Err(format!(
                "{text:?}: FROM must be a path prefix starting with /"
            ));
        }
        if let Some(channel) = to.strip_prefix("live:") {
            estuary_proto::url::ChannelName::new(channel).map_err(|e| format!("{text:?}: {e}"))?;
            return Ok(Map::Live {
                from: from.into(),
                channel: channel.into(),
            });
        }
        if !to.starts_with('/') {
            return Err(format!(
                "{text:?}: TO must be a path starting with / (or live:CHANNEL)"
            ));
        }
        Ok(Map::Prefix {
            from: from.into(),
            to: to.into(),
        })
    }
}

/// What a live channel offers now, as its media playlist says.
#[derive(Clone, Debug, Default, PartialEq)]
struct LiveObjects {
    /// e.g. `/live/demo/v720/media.m3u8`.
    playlist: String,
    /// The newest whole segment's path, once the playlist has been read.
    segment: Option<String>,
}

/// Where a logged request goes, by the rules.
fn mapped(
    maps: &[Map],
    live: &BTreeMap<String, RwLock<LiveObjects>>,
    target: &str,
    logged_bytes: u64,
) -> String {
    for map in maps {
        match map {
            Map::Prefix { from, to } if target.starts_with(from.as_str()) => {
                return format!("{to}{}", &target[from.len()..]);
            }
            Map::Live { from, channel } if target.starts_with(from.as_str()) => {
                let objects = live[channel].read().unwrap_or_else(|e| e.into_inner());
                return match (&objects.segment, logged_bytes >= SEGMENT_SIZED) {
                    (Some(segment), true) => segment.clone(),
                    _ => objects.playlist.clone(),
                };
            }
            _ => {}
        }
    }
    target.to_owned()
}

/// The first media playlist a multivariant playlist names, and the newest segment a media
/// playlist names (the last URI line: parts and hints are tags, not URI lines).
fn first_uri(playlist: &str) -> Option<&str> {
    playlist
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
}

fn last_uri(playlist: &str) -> Option<&str> {
    playlist
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !line.starts_with('#'))
}

/// A path relative to the playlist at `base` (a path), as the playlist's URI lines are.
fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_owned();
    }
    let folder = &base[..base.rfind('/').map_or(0, |at| at + 1)];
    format!("{folder}{uri}")
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub speed: f64,
    /// Log lines read, records among them, bad lines.
    pub log_lines: u64,
    pub log_records: u64,
    pub log_bad_lines: u64,
    /// Requests sent.
    pub requests: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer, by why (connect, timeout, too many in flight, …).
    pub failures: BTreeMap<String, u64>,
    /// Requests of methods other than GET and HEAD, not sent.
    pub skipped: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Latency (request sent to the last byte of the answer), in milliseconds.
    pub latency_ms: Percentiles,
    /// How late a request left compared with its logged time scaled by the speed, in
    /// milliseconds: large values mean the replayer itself could not keep up.
    pub late_ms: Percentiles,
    /// Whether `--duration` ended the run before the end of the log.
    pub cut_short: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// The histogram's percentiles, each value divided by `unit` (1000 makes microseconds
    /// milliseconds).
    pub fn of(histogram: &Histogram<u64>, unit: f64) -> Percentiles {
        let ms = |value: u64| value as f64 / unit;
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

impl Report {
    /// The report as a person reads it.
    pub fn text(&self) -> String {
        let mut text = format!(
            "replayed {} requests against {} at {}x in {:.1} s{}\n",
            self.requests,
            self.target,
            self.speed,
            self.seconds,
            if self.cut_short {
                " (stopped by --duration)"
            } else {
                ""
            }
        );
        text += &format!(
            "log: {} lines, {} requests, {} bad lines; {} requests of other methods than GET and HEAD not sent\n",
            self.log_lines, self.log_records, self.log_bad_lines, self.skipped
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        text += &format!("answers by status: {}\n", statuses.join(", "));
        let failures: u64 = self.failures.values().sum();
        if failures == 0 {
            text += "client-side failures: none\n";
        } else {
            let kinds: Vec<String> = self
                .failures
                .iter()
                .map(|(kind, count)| format!("{kind}: {count}"))
                .collect();
            text += &format!("client-side failures: {failures} ({})\n", kinds.join(", "));
        }
        text += &format!("received {:.1} MB of bodies\n", self.bytes as f64 / 1e6);
        let l = &self.latency_ms;
        text += &format!(
            "latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}\n",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        let late = &self.late_ms;
        text += &format!(
            "sent late by ms: p50 {:.2}, p99 {:.2}, max {:.2}\n",
            late.p50, late.p99, late.max
        );
        text
    }
}

/// One request to send, read from the log.
struct Planned {
    /// Seconds after the log's first request.
    offset: f64,
    method: Method,
    target: String,
    client: IpAddr,
    logged_bytes: u64,
}

/// A planned request in the reordering queue, earliest first (then in log order).
struct Queued {
    offset: f64,
    sequence: u64,
    plan: Planned,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Queued) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Queued) -> std::cmp::Ordering {
        self.offset
            .total_cmp(&other.offset)
            .then(self.sequence.cmp(&other.sequence))
    }
}

/// What the request tasks add up.
struct Totals {
    statuses: Mutex<BTreeMap<u16, u64>>,
    failures: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
    bytes: AtomicU64,
}

impl Totals {
    fn fail(&self, kind: &str) {
        *self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.to_owned())
            .or_default() += 1;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Log(#[from] crate::log::LogError),
    #[error("--target {0:?} is not an http:// URL with a host")]
    Target(String),
    #[error("--speed must be above 0")]
    Speed,
    #[error("the live channel {channel:?}: {reason}")]
    Live { channel: String, reason: String },
}

/// Replays the log; `progress` hears the number of requests sent so far, now and then.
pub async fn run(
    options: &Options,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, ReplayError> {
    let target = options.target.trim_end_matches('/').to_owned();
    match target.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
        _ => return Err(ReplayError::Target(options.target.clone())),
    }
    if options.speed.is_nan() || options.speed <= 0.0 {
        return Err(ReplayError::Speed);
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);

    // Live channels: what they offer is read before the first request, then every second.
    let mut live = BTreeMap::new();
    for map in &options.maps {
        if let Map::Live { channel, .. } = map {
            let objects = live_objects(&client, &target, channel, None).await?;
            live.insert(channel.clone(), RwLock::new(objects));
        }
    }
    let live = Arc::new(live);
    let refresher = tokio::spawn({
        let (client, target, live) = (client.clone(), target.clone(), live.clone());
        async move {
            let mut ticks = tokio::time::interval(LIVE_REFRESH);
            loop {
                ticks.tick().await;
                for (channel, objects) in live.iter() {
                    let known = objects.read().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Ok(now) = live_objects(&client, &target, channel, Some(known)).await {
                        *objects.write().unwrap_or_else(|e| e.into_inner()) = now;
                    }
                }
            }
        }
    });

    // The log is read on a thread of its own, ahead of the clock, into a bounded queue.
    let (sender, mut planned) = mpsc::channel::<Planned>(4096);
    let mut reader = LogReader::open(&options.log, options.format)?;
    let reading = tokio::task::spawn_blocking(move || {
        let mut first = None;
        let result = reader.try_for_each(|record| {
            let first = *first.get_or_insert(record.time);
            let Ok(method) = Method::from_bytes(record.method.as_bytes()) else {
                return std::ops::ControlFlow::Continue(());
            };
            let plan = Planned {
                offset: (record.time - first) as f64,
                method,
                target: record.target.to_owned(),
                client: record.client,
                logged_bytes: record.bytes,
            };
            match sender.blocking_send(plan) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(_) => std::ops::ControlFlow::Break(()),
            }
        });
        (result, reader.into_tally())
    });

    let totals = Arc::new(Totals {
        statuses: Mutex::default(),
        failures: Mutex::default(),
        latency: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds")),
        bytes: AtomicU64::new(0),
    });
    let mut late = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let in_flight = Arc::new(tokio::sync::Semaphore::new(options.max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let (mut sent, mut skipped, mut cut_short) = (0u64, 0u64, false);
    let start = Instant::now();
    let stop = options.duration.map(|duration| start + duration);
    // Requests leave in logged-time order: the queue holds what was read until the log has
    // moved REORDER_WINDOW past it.
    let mut queue = BinaryHeap::new();
    let (mut newest, mut sequence, mut log_open) = (f64::NEG_INFINITY, 0u64, true);
    loop {
        while log_open
            && queue.peek().is_none_or(|Reverse(first): &Reverse<Queued>| {
                newest - first.offset < REORDER_WINDOW
            })
        {
            match planned.recv().await {
                Some(plan) => {
                    newest = newest.max(plan.offset);
                    sequence += 1;
                    queue.push(Reverse(Queued {
                        offset: plan.offset,
                        sequence,
                        plan,
                    }));
                }
                None => log_open = false,
            }
        }
        let Some(Reverse(Queued { plan, .. })) = queue.pop() else {
            break;
        };
        let due = start + Duration::from_secs_f64((plan.offset / options.speed).max(0.0));
        if let Some(stop) = stop
            && due > stop
        {
            tokio::time::sleep_until(stop).await;
            cut_short = true;
            break;
        }
        tokio::time::sleep_until(due).await;
        let _ = late.record(due.elapsed().as_micros() as u64);
        if plan.method != Method::GET && plan.method != Method::HEAD {
            skipped += 1;
            continue;
        }
        sent += 1;
        if sent % 256 == 0 {
            progress(sent, plan.offset as u64);
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            totals.fail("too many in flight");
            continue;
        };
        let path = mapped(&options.maps, &live, &plan.target, plan.logged_bytes);
        let request = Request::builder()
            .method(plan.method)
            .uri(format!("{target}{path}"))
            .header("x-forwarded-for", plan.client.to_string())
            .header("user-agent", "estuary-loadtest-replay")
            .body(Empty::new());
        let Ok(request) = request else {
            totals.fail("unusable path");
            continue;
        };
        let (client, totals) = (client.clone(), totals.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let sent_at = Instant::now();
            let exchange = async {
                let response = client.request(request).await?;
                let status = response.status().as_u16();
                let mut body = response.into_body();
                let mut bytes = 0u64;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame?.into_data() {
                        bytes += data.len() as u64;
                    }
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, bytes))
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(Ok((status, bytes))) => {
                    let micros = sent_at.elapsed().as_micros() as u64;
                    let _ = totals
                        .latency
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(micros.max(1));
                    totals.bytes.fetch_add(bytes, Ordering::Relaxed);
                    *totals
                        .statuses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(status)
                        .or_default() += 1;
                }
                Ok(Err(error)) => totals.fail(&failure_kind(&*error)),
                Err(_) => totals.fail("timeout"),
            }
        });
        // Finished tasks are reaped as the run goes, so the set stays as small as the
        // requests in flight.
        while tasks.try_join_next().is_some() {}
    }
    drop(planned);
    while tasks.join_next().await.is_some() {}
    refresher.abort();
    let (read, tally): (Result<Option<()>, crate::log::LogError>, Tally) =
        reading.await.expect("the log reader does not panic");
    if !cut_short {
        read?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let totals = Arc::into_inner(totals).expect("every request task has ended");
    Ok(Report {
        target,
        speed: options.speed,
        log_lines: tally.lines,
        log_records: tally.records,
        log_bad_lines: tally.bad,
        requests: sent,
        statuses: totals
            .statuses
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        failures: totals
            .failures
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        skipped,
        bytes: totals.bytes.into_inner(),
        seconds,
        latency_ms: Percentiles::of(
            &totals
                .latency
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
            1000.0,
        ),
        late_ms: Percentiles::of(&late, 1000.0),
        cut_short,
    })
}

/// A failure's kind, for the report: the innermost cause's words, without addresses.
fn failure_kind(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    match text.split_once(" (os error") {
        Some((words, _)) => words.to_owned(),
        None => text,
    }
}

/// Reads the channel's playlists: the first media playlist of its multivariant playlist
/// (kept from `known` once found), and the newest segment that one names.
async fn live_objects(
    client: &Client<HttpConnector, Empty<Bytes>>,
    target: &str,
    channel: &str,
    known: Option<LiveObjects>,
) -> Result<LiveObjects, ReplayError> {
    let failed = |reason: String| ReplayError::Live {
        channel: channel.to_owned(),
        reason,
    };
    let get = |path: String| async move {
        let request = Request::get(format!("{target}{path}"))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
            .await
            .map_err(|_| format!("{path}: no answer"))?
            .map_err(|e| format!("{path}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{path}: {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| format!("{path}: not text"))
    };
    let playlist = match known {
        Some(known) => known.playlist,
        None => {
            let master = format!("/live/{channel}/master.m3u8");
            let text = get(master.clone()).await.map_err(failed)?;
            let uri = first_uri(&text)
                .ok_or_else(|| failed(format!("{master} names no media playlist")))?;
            // Query strings (a carried keycard) stay with the URI.
            resolve(&master, uri)
        }
    };
    let text = get(playlist.clone()).await.map_err(failed)?;
    let segment = last_uri(&text).map(|uri| resolve(&playlist, uri));
    Ok(LiveObjects { playlist, segment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_read_and_applied_in_order() {
        let maps: Vec<Map> = ["/images/=/live/demo/v360/", "/=live:demo"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        assert_eq!(
            maps[1],
            Map::Live {
                from: "/".into(),
                channel: "demo".into()
            }
        );
        let mut live = BTreeMap::new();
        live.insert(
            "demo".to_owned(),
            RwLock::new(LiveObjects {
                playlist: "/live/demo/v720/media.m3u8".into(),
                segment: Some("/live/demo/v720/900.m4s".into()),
            }),
        );
        assert_eq!(
            mapped(&maps, &live, "/images/a.png?x=1", 5),
            "/live/demo/v360/a.png?x=1"
        );
        assert_eq!(
            mapped(&maps, &live, "/blog/", 4000),
            "/live/demo/v720/media.m3u8"
        );
        assert_eq!(
            mapped(&maps, &live, "/video.mp4", 2_000_000),
            "/live/demo/v720/900.m4s"
        );
        assert_eq!(mapped(&[], &live, "/as/logged", 1), "/as/logged");
        assert!("images=/x".parse::<Map>().is_err());
        assert!("/x=y".parse::<Map>().is_err());
        assert!("/x=live:../etc".parse::<Map>().is_err());
    }

    #[test]
    fn playlists_name_their_media_playlists_and_newest_segments() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv720/media.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nv360/media.m3u8\n";
        assert_eq!(first_uri(master), Some("v720/media.m3u8"));
        let media = "#EXTM3U\n#EXTINF:2.0,\n10.m4s\n#EXTINF:2.0,\n11.m4s\n#EXT-X-PART:DURATION=0.33,URI=\"12.0.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.1.m4s\"\n";
        assert_eq!(last_uri(media), Some("11.m4s"));
        assert_eq!(
            resolve("/live/demo/master.m3u8", "v720/media.m3u8"),
            "/live/demo/v720/media.m3u8"
        );
        assert_eq!(
            resolve("/live/demo/v720/media.m3u8", "/x/1.m4s"),
            "/x/1.m4s"
        );
    }
}
