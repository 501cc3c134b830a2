//! What all the viewers saw, gathered from each one's outcome into percentiles, and how a
//! person reads it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Kind, Options, Outcome};
use crate::percentiles::{Percentiles, histogram};

/// What all the viewers saw.
#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub kind: Kind,
    pub viewers: usize,
    pub seconds: f64,
    /// Viewers whose playback started.
    pub started: usize,
    /// Viewers that stopped on an error, by the error.
    pub failures: BTreeMap<String, u64>,
    /// From a viewer's first request to its first media loaded, in milliseconds.
    pub startup_ms: Percentiles,
    /// Live latency (UTC now minus the media time played) over every unit loaded, ms.
    pub latency_ms: Percentiles,
    pub stalls: u64,
    pub viewers_with_stalls: usize,
    /// Time spent stalled, over all viewers, in seconds.
    pub stalled_seconds: f64,
    pub requests: u64,
    pub bytes: u64,
    /// Body bytes per viewer, percentiles, in kilobytes.
    pub kilobytes_per_viewer: Percentiles,
}

impl Report {
    pub fn text(&self) -> String {
        let mut text = format!(
            "{} {} viewers of {} for {:.1} s: {} started playing\n",
            self.viewers,
            serde_json::to_value(self.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            self.url,
            self.seconds,
            self.started
        );
        let s = &self.startup_ms;
        text += &format!(
            "start-up ms: p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}\n",
            s.p50, s.p90, s.p99, s.max
        );
        let l = &self.latency_ms;
        if self.kind == Kind::Continuous && l.max == 0.0 {
            text +=
                "live latency: not measured (stream.mp4 carries capture times, this does not)\n";
        } else {
            text += &format!(
                "live latency ms: p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}\n",
                l.p50, l.p90, l.p99, l.max
            );
        }
        if self.kind == Kind::Continuous {
            text += &format!(
                "gaps (over {} s without data): {} in {} viewers, {:.1} s in all\n",
                super::stream::GAP.as_secs_f64(),
                self.stalls,
                self.viewers_with_stalls,
                self.stalled_seconds
            );
        } else {
            text += &format!(
                "stalls: {} in {} viewers, {:.1} s stalled in all\n",
                self.stalls, self.viewers_with_stalls, self.stalled_seconds
            );
        }
        let k = &self.kilobytes_per_viewer;
        text += &format!(
            "{} requests, {:.1} MB; per viewer kB: p50 {:.0}, p90 {:.0}, max {:.0}\n",
            self.requests,
            self.bytes as f64 / 1e6,
            k.p50,
            k.p90,
            k.max
        );
        if self.failures.is_empty() {
            text += "failures: none\n";
        } else {
            for (reason, count) in &self.failures {
                text += &format!("failure ({count} viewers): {reason}\n");
            }
        }
        text
    }
}

pub(super) fn summarize(options: &Options, outcomes: &[Outcome], seconds: f64) -> Report {
    let (mut startup, mut latency, mut bytes_per_viewer) = (histogram(), histogram(), histogram());
    let mut failures = BTreeMap::new();
    for outcome in outcomes {
        if let Some(time) = outcome.startup {
            let _ = startup.record((time.as_micros() as u64).max(1));
        }
        for seconds in &outcome.latencies {
            let _ = latency.record(((seconds * 1e6).max(1.0)) as u64);
        }
        let _ = bytes_per_viewer.record(outcome.bytes.max(1));
        if let Some(reason) = &outcome.failure {
            *failures.entry(reason.clone()).or_default() += 1;
        }
    }
    Report {
        url: options.url.clone(),
        kind: options.kind,
        viewers: outcomes.len(),
        seconds,
        started: outcomes.iter().filter(|o| o.startup.is_some()).count(),
        failures,
        startup_ms: Percentiles::of(&startup, 1000.0),
        latency_ms: Percentiles::of(&latency, 1000.0),
        stalls: outcomes.iter().map(|o| o.stalls).sum(),
        viewers_with_stalls: outcomes.iter().filter(|o| o.stalls > 0).count(),
        stalled_seconds: outcomes.iter().map(|o| o.stalled_for.as_secs_f64()).sum(),
        requests: outcomes.iter().map(|o| o.requests).sum(),
        bytes: outcomes.iter().map(|o| o.bytes).sum(),
        kilobytes_per_viewer: Percentiles::of(&bytes_per_viewer, 1000.0),
    }
}
