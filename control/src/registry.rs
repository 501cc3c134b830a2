//! The registry: what control last heard from each edge. An edge that has not reported for
//! [`LOST_AFTER`] is `lost` and gets no viewers; it comes back with its next report. One silent
//! for the registry's `forget_after` is forgotten. Reports reach it checked (crate::reports).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::Mood;
use estuary_proto::report::EdgeReport;
use serde::Serialize;

/// How long an edge may stay silent before it is lost.
pub const LOST_AFTER: Duration = Duration::from_secs(3);

/// The most edges the registry holds: a report from another edge is refused.
pub const MAX_EDGES: usize = 10_000;

/// How long routing may reuse a snapshot when no report has come since: this much later than
/// [`LOST_AFTER`] a silent edge may still be given viewers.
pub const SNAPSHOT_REUSE: Duration = Duration::from_millis(100);

/// A new edge's report when the registry holds [`MAX_EDGES`] already.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("control already knows {MAX_EDGES} edges; edge {id:?} is not taken")]
pub struct Full {
    pub id: String,
}

#[derive(Debug)]
pub struct Registry {
    edges: Mutex<BTreeMap<String, (EdgeReport, Instant)>>,
    /// The snapshot routing last used, and when it was taken; dropped by every change.
    shared: Mutex<Option<(Instant, Arc<Snapshot>)>>,
    /// How long an edge may stay silent before it is forgotten.
    forget_after: Duration,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::new(Duration::from_secs(60))
    }
}

/// The registry at one moment: every edge heard from within `forget_after`, with its last
/// report and its mood now.
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
    pub fn new(forget_after: Duration) -> Registry {
        Registry {
            edges: Mutex::default(),
            shared: Mutex::default(),
            forget_after,
        }
    }

    /// Takes a report (checked already: see crate::reports). A new edge past [`MAX_EDGES`] is
    /// refused, and nothing changes.
    pub fn hear(&self, report: EdgeReport, now: Instant) -> Result<(), Full> {
        {
            let mut edges = self.lock();
            if edges.len() >= MAX_EDGES && !edges.contains_key(&report.id) {
                return Err(Full { id: report.id });
            }
            edges.insert(report.id.clone(), (report, now));
        }
        self.changed();
        Ok(())
    }

    /// Forgets the edges silent for `forget_after` at `now`: their ids.
    pub fn forget_silent(&self, now: Instant) -> Vec<String> {
        let mut forgotten = Vec::new();
        self.lock().retain(|id, (_, heard)| {
            let keep = now.saturating_duration_since(*heard) < self.forget_after;
            if !keep {
                forgotten.push(id.clone());
            }
            keep
        });
        if !forgotten.is_empty() {
            self.changed();
        }
        forgotten
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
            .filter(|(_, heard)| now.saturating_duration_since(*heard) < self.forget_after)
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
    fn silent_edges_are_lost_come_back_and_are_forgotten() {
        let registry = Registry::new(Duration::from_secs(60));
        let start = Instant::now();
        registry.hear(report("a", "lon"), start).unwrap();
        let live = |at: Instant| registry.snapshot(at).edges[0].is_live();
        assert!(live(start + Duration::from_millis(2900)));
        assert!(!live(start + LOST_AFTER));
        assert_eq!(
            registry.snapshot(start + LOST_AFTER).edges[0].mood,
            Mood::Lost
        );
        registry
            .hear(report("a", "lon"), start + Duration::from_secs(10))
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
        registry.hear(report("b", "lon"), at).unwrap();
        let after = registry.shared(at + SNAPSHOT_REUSE);
        assert_eq!((before.edges.len(), after.edges.len()), (1, 2));

        // 60 s after its last report, a is forgotten (and out of snapshots even before the
        // sweep); b, heard 2 s later, is still lost only.
        let a_silent = start + Duration::from_secs(70);
        assert_eq!(registry.snapshot(a_silent).edges.len(), 1);
        assert_eq!(
            registry.forget_silent(a_silent - Duration::from_millis(1)),
            Vec::<String>::new()
        );
        assert_eq!(registry.forget_silent(a_silent), vec!["a".to_owned()]);
        let left = registry.snapshot(a_silent);
        assert_eq!(left.edges[0].report.id, "b");
        assert_eq!(left.edges[0].mood, Mood::Lost);
        assert_eq!(
            registry.forget_silent(at + Duration::from_secs(60)),
            vec!["b".to_owned()]
        );
        assert!(
            registry
                .snapshot(at + Duration::from_secs(60))
                .edges
                .is_empty()
        );
        // A forgotten edge comes back with its next report.
        registry
            .hear(report("a", "lon"), at + Duration::from_secs(61))
            .unwrap();
        assert!(live(at + Duration::from_secs(62)));
    }

    #[test]
    fn the_registry_holds_a_bounded_number_of_edges() {
        let registry = Registry::default();
        let now = Instant::now();
        for n in 0..MAX_EDGES {
            registry.hear(report(&format!("e{n}"), "lon"), now).unwrap();
        }
        let error = registry.hear(report("one-more", "lon"), now).unwrap_err();
        assert!(error.to_string().contains("one-more"), "{error}");
        // Edges it knows still report.
        registry.hear(report("e7", "lon"), now).unwrap();
        assert_eq!(registry.snapshot(now).edges.len(), MAX_EDGES);
    }
}
