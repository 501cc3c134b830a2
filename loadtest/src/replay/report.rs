//! What a replay measured, and how a person reads it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::percentiles::Percentiles;

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
