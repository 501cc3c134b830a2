//! Replays a request log against a live system as an open model: each logged request is sent
//! at its logged time (from the log's first request, divided by the speed), whether or not
//! earlier ones have been answered, so a slow server meets the arrivals the log had instead
//! of slowing them down. The logged client goes in `X-Forwarded-For`; `--map` rules move the
//! log's paths onto content the target has. The report counts requests, answers by status,
//! client-side failures by kind, bytes, and latency percentiles from an HDR histogram.

mod map;
mod report;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use estuary_proto::url::ChannelName;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::log::{Format, LogReader, Tally};
use crate::percentiles::{Percentiles, histogram};
pub use map::{BadMap, LiveError, Map};
use map::{live_objects, mapped};
pub use report::Report;

/// How long one request may take, head and body, before it counts as timed out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Logs are written as requests end, so lines come a little out of time order (up to a
/// minute in the 2015 Apache log used in the tests); lines up to this many logged seconds out
/// of order are sent in time order.
const REORDER_WINDOW: f64 = 120.0;
/// How often a live mapping reads its channel's media playlist again.
const LIVE_REFRESH: Duration = Duration::from_secs(1);

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
    #[error("the live channel {channel}: {source}")]
    Live {
        channel: ChannelName,
        source: LiveError,
    },
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
            let objects = live_objects(&client, &target, channel, None)
                .await
                .map_err(|source| ReplayError::Live {
                    channel: channel.clone(),
                    source,
                })?;
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
        latency: Mutex::new(histogram()),
        bytes: AtomicU64::new(0),
    });
    let mut late = histogram();
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
