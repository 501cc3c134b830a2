//! Edge reports (DESIGN.md "Edge reports"): every edge tells control, every second, who it is,
//! where, how busy and how well. Sent as JSON to control's `POST /api/v1/reports`.

use serde::{Deserialize, Serialize};

use crate::mood::Mood;

/// Where control's registry takes reports.
pub const REPORTS_PATH: &str = "/api/v1/reports";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeReport {
    /// The edge's name, unique among the edges of a CDN.
    pub id: String,
    /// The site (place) the edge is in, as control's configuration names it.
    pub site: String,
    /// Where viewers reach this edge, e.g. `https://lon-1.cdn.example`.
    pub url: String,
    /// Viewer connections open now.
    pub clients: u64,
    /// Bits per second sent to viewers over the last report's interval.
    pub egress_bps: u64,
    /// Share of requests answered from the cache over the interval, 0 to 1 (1 with none).
    pub cache_hit_ratio: f64,
    /// Share of one CPU the edge process used over the interval.
    pub cpu: f64,
    pub mood: Mood,
    /// Why the mood is not happy, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_back_what_was_written() {
        let report = EdgeReport {
            id: "lon-1".into(),
            site: "lon".into(),
            url: "http://192.0.2.10:8090".into(),
            clients: 12,
            egress_bps: 36_000_000,
            cache_hit_ratio: 0.98,
            cpu: 0.25,
            mood: Mood::Happy,
            reason: None,
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"mood\":\"happy\""), "{json}");
        assert!(!json.contains("reason"));
        assert_eq!(serde_json::from_str::<EdgeReport>(&json).unwrap(), report);
    }
}
