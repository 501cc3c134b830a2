//! What the edge counts for `/metrics` (Prometheus text format), and its access log in the
//! combined format (so that `estuary loadtest replay` can replay it).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use estuary_proto::utc::UtcTime;

use crate::cache::CacheCounts;

/// Upper bounds of the upstream latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Statuses counted without a lock (the rest go to a map).
const COMMON_STATUSES: [u16; 14] = [
    200, 204, 206, 304, 400, 401, 403, 404, 405, 408, 431, 500, 502, 503,
];

#[derive(Default)]
pub struct Metrics {
    common: [AtomicU64; COMMON_STATUSES.len()],
    requests: Mutex<BTreeMap<u16, u64>>,
    pub bytes_out: AtomicU64,
    pub open_connections: AtomicI64,
    /// Requests being answered now (from the request to the end of its response's body).
    pub in_flight: AtomicI64,
    pub stale_served: AtomicU64,
    pub refused_heads: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, status: u16) {
        match COMMON_STATUSES.iter().position(|common| *common == status) {
            Some(index) => {
                self.common[index].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                *self
                    .requests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(status)
                    .or_default() += 1;
            }
        }
    }

    /// Requests answered so far, by status.
    fn by_status(&self) -> BTreeMap<u16, u64> {
        let mut all = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (status, count) in COMMON_STATUSES.iter().zip(&self.common) {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                all.insert(*status, count);
            }
        }
        all
    }

    pub fn upstream_latency(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything, with the cache's counts.
    pub fn render(&self, cache: CacheCounts, upstream_fetches: u64) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        let requests: Vec<_> = self
            .by_status()
            .iter()
            .map(|(status, count)| (format!("{{status=\"{status}\"}}"), count.to_string()))
            .collect();
        let plain = |value: u64| vec![(String::new(), value.to_string())];
        family(
            "estuary_edge_requests_total",
            "counter",
            "Requests answered, by status.",
            &requests,
        );
        family(
            "estuary_edge_bytes_out_total",
            "counter",
            "Body bytes sent to viewers.",
            &plain(self.bytes_out.load(Ordering::Relaxed)),
        );
        family(
            "estuary_edge_cache_hits_total",
            "counter",
            "Requests answered from a fresh cached object.",
            &plain(cache.hits),
        );
        family(
            "estuary_edge_cache_misses_total",
            "counter",
            "Requests that started an upstream fetch.",
            &plain(cache.misses),
        );
        family(
            "estuary_edge_coalesced_total",
            "counter",
            "Requests that waited for a fetch already under way instead of starting one.",
            &plain(cache.coalesced),
        );
        family(
            "estuary_edge_upstream_requests_total",
            "counter",
            "Requests sent upstream.",
            &plain(upstream_fetches),
        );
        family(
            "estuary_edge_stale_served_total",
            "counter",
            "Playlists served stale because the upstream failed.",
            &plain(self.stale_served.load(Ordering::Relaxed)),
        );
        family(
            "estuary_edge_refused_heads_total",
            "counter",
            "Connections closed by the porter (head too large, too slow or malformed).",
            &plain(self.refused_heads.load(Ordering::Relaxed)),
        );
        family(
            "estuary_edge_cache_objects",
            "gauge",
            "Objects in the cache.",
            &plain(cache.objects as u64),
        );
        family(
            "estuary_edge_cache_bytes",
            "gauge",
            "Bytes of bodies in the cache.",
            &plain(cache.bytes as u64),
        );
        family(
            "estuary_edge_open_connections",
            "gauge",
            "Viewer connections open now.",
            &[(
                String::new(),
                self.open_connections.load(Ordering::Relaxed).to_string(),
            )],
        );
        let mut histogram: Vec<(String, String)> = LATENCY_BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(bound, bucket)| {
                (
                    format!("_bucket{{le=\"{bound}\"}}"),
                    bucket.load(Ordering::Relaxed).to_string(),
                )
            })
            .collect();
        let count = self.latency_count.load(Ordering::Relaxed);
        histogram.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
        histogram.push((
            "_sum".into(),
            format!(
                "{}",
                self.latency_micros.load(Ordering::Relaxed) as f64 / 1e6
            ),
        ));
        histogram.push(("_count".into(), count.to_string()));
        family(
            "estuary_edge_upstream_latency_seconds",
            "histogram",
            "Time to the upstream's response head.",
            &histogram,
        );
        out
    }
}

/// One request as the combined log format writes it.
pub struct LogLine<'a> {
    pub client: IpAddr,
    pub unix_nanos: u64,
    pub request_line: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl std::fmt::Display for LogLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = UtcTime::from_unix_nanos(self.unix_nanos);
        let quoted = |text: Option<&str>| {
            text.map_or("-".to_owned(), |text| {
                text.replace('\\', "\\\\").replace('"', "\\\"")
            })
        };
        write!(
            f,
            "{} - - [{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000] \"{}\" {} {} \"{}\" \"{}\"",
            self.client,
            t.day,
            MONTHS[(t.month as usize).clamp(1, 12) - 1],
            t.year,
            t.hour,
            t.minute,
            t.second,
            quoted(Some(self.request_line)),
            self.status,
            self.bytes,
            quoted(self.referer),
            quoted(self.user_agent),
        )
    }
}

/// Writes access-log lines on a thread of its own, to a file or to standard output (`-`).
#[derive(Clone)]
pub struct AccessLog {
    lines: mpsc::Sender<String>,
}

impl AccessLog {
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn std::io::Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (lines, receiver) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                for line in receiver {
                    if out.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    // Write whatever is queued before flushing.
                    if out.flush().is_err() {
                        break;
                    }
                }
            })?;
        Ok(AccessLog { lines })
    }

    pub fn write(&self, line: &LogLine) {
        let _ = self.lines.send(format!("{line}\n"));
    }
}

/// What a finished response adds to the metrics and the access log.
pub struct Tally {
    pub metrics: Arc<Metrics>,
    pub log: Option<(AccessLog, OwnedLogLine)>,
}

/// The parts of a log line known when the response starts.
pub struct OwnedLogLine {
    pub client: std::net::IpAddr,
    pub unix_nanos: u64,
    pub request_line: String,
    pub status: u16,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

impl Tally {
    /// The response is over, `bytes` sent: counted, and logged.
    pub fn finish(self, bytes: u64) {
        self.metrics.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        if let Some((log, line)) = &self.log {
            log.write(&LogLine {
                client: line.client,
                unix_nanos: line.unix_nanos,
                request_line: &line.request_line,
                status: line.status,
                bytes,
                referer: line.referer.as_deref(),
                user_agent: line.user_agent.as_deref(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_in_the_combined_format() {
        let line = LogLine {
            client: "192.0.2.7".parse().unwrap(),
            unix_nanos: 1_795_294_133_000_000_000,
            request_line: "GET /live/demo/master.m3u8 HTTP/1.1",
            status: 200,
            bytes: 512,
            referer: None,
            user_agent: Some("hls.js \"test\""),
        };
        assert_eq!(
            line.to_string(),
            r#"192.0.2.7 - - [21/Nov/2026:20:48:53 +0000] "GET /live/demo/master.m3u8 HTTP/1.1" 200 512 "-" "hls.js \"test\"""#
        );
    }

    #[test]
    fn metrics_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.count_request(200);
        metrics.count_request(200);
        metrics.count_request(403);
        metrics.upstream_latency(Duration::from_millis(3));
        let text = metrics.render(CacheCounts::default(), 1);
        assert!(text.contains("estuary_edge_requests_total{status=\"200\"} 2\n"));
        assert!(text.contains("estuary_edge_requests_total{status=\"403\"} 1\n"));
        assert!(text.contains("estuary_edge_upstream_latency_seconds_bucket{le=\"0.002\"} 0\n"));
        assert!(text.contains("estuary_edge_upstream_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("estuary_edge_upstream_latency_seconds_count 1\n"));
    }
}
