//! Reports to control (DESIGN.md "Edge reports"): once a second, `POST {control}/api/v1/reports`
//! with the edge's id, site, public URL, open connections, egress, cache hit ratio, CPU and mood,
//! signed with the report key (`--report-key`) in the `X-Estuary-Signature` header.
//! A drain sends one at once, so that control sends the edge no one new from then on.
//! Control marks an edge lost after 3 s without one, so a failed report is only logged (once a
//! minute at most, with control's reason) and the next one goes out on time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use estuary_proto::report::{self, EdgeReport, REPORTS_PATH, SIGNATURE_HEADER};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::node::Edge;

pub const INTERVAL: Duration = Duration::from_secs(1);

/// The most of control's answer to a refused report that is read (for the log).
const MAX_REFUSAL_BYTES: usize = 512;

pub use crate::config::Identity;

/// Sends a report every second, and one when the mood changes, until the process ends.
pub async fn run(edge: Arc<Edge>, control: String, identity: Identity) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let target = format!("{}{REPORTS_PATH}", control.trim_end_matches('/'));
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Sample::take(&edge);
    let mut last_complaint: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = edge.mood_changed() => ticker.reset(),
        }
        let now = Sample::take(&edge);
        let report = now.report_since(&last, &edge, &identity);
        last = now;
        let body = match serde_json::to_vec(&report) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot write a report");
                continue;
            }
        };
        let mut request = Request::post(&target).header("content-type", "application/json");
        if let Some(key) = &identity.key {
            request = request.header(SIGNATURE_HEADER, report::sign(key, &body, unix_ms()));
        }
        let outcome = match request.body(Full::new(Bytes::from(body))) {
            Ok(request) => {
                let answered = async {
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    if response.status().is_success() {
                        return Ok(());
                    }
                    let status = response.status();
                    let reason = Limited::new(response.into_body(), MAX_REFUSAL_BYTES)
                        .collect()
                        .await
                        .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_owned())
                        .unwrap_or_default();
                    Err(format!("control answered {status}: {reason}"))
                };
                match tokio::time::timeout(INTERVAL, answered).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err("control did not answer within a second".into()),
                }
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(reason) = outcome
            && last_complaint.is_none_or(|at| at.elapsed() > Duration::from_secs(60))
        {
            tracing::warn!(control = %target, %reason, "report not delivered");
            last_complaint = Some(Instant::now());
        }
    }
}

/// Counters at one moment, to take differences of.
struct Sample {
    at: Instant,
    bytes_out: u64,
    hits: u64,
    lookups: u64,
    cpu_ticks: Option<u64>,
}

impl Sample {
    fn take(edge: &Edge) -> Sample {
        let cache = edge.cache_counts();
        Sample {
            at: Instant::now(),
            bytes_out: edge.metrics().bytes_out.load(Ordering::Relaxed),
            hits: cache.hits + cache.coalesced,
            lookups: cache.hits + cache.coalesced + cache.misses,
            cpu_ticks: process_cpu_ticks(),
        }
    }

    fn report_since(&self, earlier: &Sample, edge: &Edge, identity: &Identity) -> EdgeReport {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64().max(1e-3);
        let lookups = self.lookups - earlier.lookups;
        let (mood, reason) = edge.mood();
        EdgeReport {
            id: identity.id.clone(),
            site: identity.site.clone(),
            url: identity.url.clone(),
            clients: edge
                .metrics()
                .open_connections
                .load(Ordering::Relaxed)
                .max(0) as u64,
            egress_bps: ((self.bytes_out - earlier.bytes_out) as f64 * 8.0 / seconds) as u64,
            cache_hit_ratio: if lookups == 0 {
                1.0
            } else {
                (self.hits - earlier.hits) as f64 / lookups as f64
            },
            cpu: match (self.cpu_ticks, earlier.cpu_ticks) {
                // /proc counts CPU time in clock ticks of 1/100 s on Linux.
                (Some(now), Some(then)) => (now.saturating_sub(then)) as f64 / 100.0 / seconds,
                _ => 0.0,
            },
            mood,
            // Control refuses a report whose reason is too long or holds control characters.
            reason: reason.as_deref().map(report::fit_reason),
        }
    }
}

fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// User and system CPU time of this process, in clock ticks, from /proc/self/stat.
fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}
