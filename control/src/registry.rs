//! The registry: what control last heard from each edge. An edge that has not reported for
//! [`LOST_AFTER`] is `lost` and gets no viewers; it comes back with its next report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::Mood;
use estuary_proto::report::EdgeReport;
use serde::Serialize;

/// How long an edge may stay silent before it is lost.
pub const LOST_AFTER: Duration = Duration::from_secs(3);

/// How long routing may reuse a snapshot when no report has come since: this much later than
/// [`LOST_AFTER`] a silent edge may still be given viewers.
pub const SNAPSHOT_REUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct Registry {
    edges: Mutex<BTreeMap<String, (EdgeReport, Instant)>>,
    /// The snapshot routing last used, and when it was taken; dropped by every change.
    shared: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

/// The registry at one moment: every edge ever heard, with its last report and its mood now.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    pub edges: Vec<EdgeState>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EdgeState {
    pub report: EdgeReport,
    /// Seconds since its last report.
    pub age_seconds: f64,
    /// The reported mood, or `lost` after [`LOST_AFTER`] without a report.
    pub mood: Mood,
}

impl EdgeState {
    /// Whether the edge may be sent viewers: heard from lately and not failing. A `waking`
    /// edge (one no viewer has asked anything yet) is live: viewers are what wakes it.
    pub fn is_live(&self) -> bool {
        matches!(self.mood, Mood::Waking | Mood::Happy | Mood::Hungry)
    }
}

impl Registry {
    /// Takes a report. One that names no edge, no site known to `known_site`, or no usable URL
    /// is refused, and changes nothing.
    pub fn hear(
        &self,
        report: EdgeReport,
        known_site: impl Fn(&str) -> bool,
        now: Instant,
    ) -> Result<(), String> {
        if report.id.trim().is_empty() {
            return Err("the report names no edge (id)".into());
        }
        if !known_site(&report.site) {
            return Err(format!(
                "site {:?} is not in control's configuration",
                report.site
            ));
        }
        let url_ok = (report.url.starts_with("http://") || report.url.starts_with("https://"))
            && report
                .url
                .parse::<hyper::Uri>()
                .is_ok_and(|uri| uri.host().is_some());
        if !url_ok {
            return Err(format!("{:?} is not an http(s) URL", report.url));
        }
        if !(report.cache_hit_ratio.is_finite() && report.cpu.is_finite()) {
            return Err("cache_hit_ratio and cpu must be numbers".into());
        }
        self.lock().insert(report.id.clone(), (report, now));
        self.changed();
        Ok(())
    }

    fn changed(&self) {
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A snapshot for routing: the one taken less than [`SNAPSHOT_REUSE`] ago if nothing has
    /// changed since, else a new one. Routing a viewer then copies nothing.
    pub fn shared(&self, now: Instant) -> Arc<Snapshot> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((taken, snapshot)) = shared.as_ref()
            && now.saturating_duration_since(*taken) < SNAPSHOT_REUSE
        {
            return snapshot.clone();
        }
        let snapshot = Arc::new(self.snapshot(now));
        *shared = Some((now, snapshot.clone()));
        snapshot
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let edges = self
            .lock()
            .values()
            .map(|(report, heard)| {
                let age = now.saturating_duration_since(*heard);
                EdgeState {
                    report: report.clone(),
                    age_seconds: age.as_secs_f64(),
                    mood: if age >= LOST_AFTER {
                        Mood::Lost
                    } else {
                        report.mood
                    },
                }
            })
            .collect();
        Snapshot { edges }
    }

    /// Forgets an edge (until it reports again); whether it was known.
    pub fn forget(&self, id: &str) -> bool {
        let forgotten = self.lock().remove(id).is_some();
        self.changed();
        forgotten
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (EdgeReport, Instant)>> {
        self.edges.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn report(id: &str, site: &str) -> EdgeReport {
        EdgeReport {
            id: id.into(),
            site: site.into(),
            url: format!("http://{id}.example:8090"),
            clients: 0,
            egress_bps: 0,
            cache_hit_ratio: 1.0,
            cpu: 0.1,
            mood: Mood::Happy,
            reason: None,
        }
    }

    #[test]
    fn silent_edges_are_lost_and_come_back() {
        let registry = Registry::default();
        let start = Instant::now();
        registry.hear(report("a", "lon"), |_| true, start).unwrap();
        let live = |at: Instant| registry.snapshot(at).edges[0].is_live();
        assert!(live(start + Duration::from_millis(2900)));
        assert!(!live(start + LOST_AFTER));
        assert_eq!(
            registry.snapshot(start + LOST_AFTER).edges[0].mood,
            Mood::Lost
        );
        registry
            .hear(
                report("a", "lon"),
                |_| true,
                start + Duration::from_secs(10),
            )
            .unwrap();
        assert!(live(start + Duration::from_secs(11)));

        // Routing's shared snapshot is reused for a moment, and renewed by a report.
        let at = start + Duration::from_secs(12);
        let first = registry.shared(at);
        assert!(Arc::ptr_eq(
            &first,
            &registry.shared(at + Duration::from_millis(50))
        ));
        assert!(!Arc::ptr_eq(&first, &registry.shared(at + SNAPSHOT_REUSE)));
        let before = registry.shared(at + SNAPSHOT_REUSE);
        registry.hear(report("b", "lon"), |_| true, at).unwrap();
        let after = registry.shared(at + SNAPSHOT_REUSE);
        assert_eq!((before.edges.len(), after.edges.len()), (1, 2));
    }

    #[test]
    fn bad_reports_change_nothing() {
        let registry = Registry::default();
        let now = Instant::now();
        let known = |site: &str| site == "lon";
        assert!(registry.hear(report("", "lon"), known, now).is_err());
        assert!(registry.hear(report("a", "mars"), known, now).is_err());
        let mut no_url = report("a", "lon");
        no_url.url = "ftp://x".into();
        assert!(registry.hear(no_url, known, now).is_err());
        assert!(registry.snapshot(now).edges.is_empty());
        let mut sad = report("a", "lon");
        sad.mood = Mood::Sad;
        registry.hear(sad, known, now).unwrap();
        assert!(!registry.snapshot(now).edges[0].is_live());
    }
}
