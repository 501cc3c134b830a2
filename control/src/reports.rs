//! Reports in: what control checks before its registry hears an edge. The body's size (`413`),
//! the signature, made with a cluster report key within the clock window and newer than the
//! edge's last (`401`), the report's bounds and site (`400`), and the pin the configuration may
//! hold for the edge's id (`403`). A refused report changes nothing. Sans IO: the body, the
//! signature header and the time come in, a verdict goes out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use estuary_proto::keycard::KeycardKey;
use estuary_proto::report::{self, EdgeReport, MAX_REPORT_BYTES, ReportError};

use crate::config::{Config, EdgePin};

/// Why a report was not taken: the status to answer and a short reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// A report whose every check but freshness has passed.
#[derive(Debug)]
pub struct Admitted {
    pub report: EdgeReport,
    /// Its signature's time, Unix milliseconds.
    at_ms: u64,
}

/// The report checks, and the newest signature time taken from each edge.
pub struct Intake {
    /// What a report is checked against: replaced whole by a reload.
    rules: RwLock<Arc<Rules>>,
    /// Edge id -> the time of the newest signature taken from it. An entry older than the
    /// clock window is dropped: a replay of anything that old fails the clock check anyway.
    /// Kept across reloads, so a reload opens no window for a replay.
    newest: Mutex<HashMap<String, u64>>,
}

/// The keys, the clock window and the pins reports are checked against.
struct Rules {
    keys: Vec<KeycardKey>,
    clock_window: Duration,
    pins: HashMap<String, EdgePin>,
    pinned_only: bool,
}

impl Rules {
    fn new(config: &Config, keys: Vec<KeycardKey>) -> Rules {
        Rules {
            keys,
            clock_window: config.reports.clock_window,
            pins: config
                .edges
                .iter()
                .map(|pin| (pin.id.clone(), pin.clone()))
                .collect(),
            pinned_only: config.reports.pinned_only,
        }
    }
}

impl Intake {
    /// Checks as `config` says, with `keys` (the report keys) verifying signatures; with no
    /// key, every report is refused.
    pub fn new(config: &Config, keys: Vec<KeycardKey>) -> Intake {
        Intake {
            rules: RwLock::new(Arc::new(Rules::new(config, keys))),
            newest: Mutex::default(),
        }
    }

    /// Checks the reports that come from now on as `config` says, with `keys`.
    pub fn reconfigure(&self, config: &Config, keys: Vec<KeycardKey>) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Rules::new(config, keys));
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every check but freshness, for the report `body` with the signature header `signature`,
    /// at `now_ms` (Unix milliseconds); `known_site` says which sites control has.
    pub fn check(
        &self,
        signature: Option<&[u8]>,
        body: &[u8],
        now_ms: u64,
        known_site: impl Fn(&str) -> bool,
    ) -> Result<Admitted, Refusal> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ReportError::TooLarge { length: body.len() }.to_string(),
            ));
        }
        let rules = self.rules();
        if rules.keys.is_empty() {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "control has no report key ([reports] key_file), so it takes no report",
            ));
        }
        let signed = report::verify(signature, body, &rules.keys, now_ms, rules.clock_window)
            .map_err(|error| Refusal::new(StatusCode::UNAUTHORIZED, error.to_string()))?;
        let report = EdgeReport::parse(body)
            .map_err(|error| Refusal::new(StatusCode::BAD_REQUEST, error.to_string()))?;
        if !known_site(&report.site) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("site {:?} is not in control's configuration", report.site),
            ));
        }
        let forbidden = |reason: String| Refusal::new(StatusCode::FORBIDDEN, reason);
        match rules.pins.get(&report.id) {
            Some(pin) => {
                if pin.site != report.site {
                    return Err(forbidden(format!(
                        "edge {:?} is pinned to site {:?}, not {:?}",
                        report.id, pin.site, report.site
                    )));
                }
                if let Some(pattern) = &pin.url
                    && !url_matches(pattern, &report.url)
                {
                    return Err(forbidden(format!(
                        "edge {:?} is pinned to URL {pattern:?}, not {:?}",
                        report.id, report.url
                    )));
                }
                if let Some(key_id) = &pin.key_id
                    && signed.key_id.as_ref() != Some(key_id)
                {
                    return Err(forbidden(format!(
                        "edge {:?} must sign with key {key_id:?}",
                        report.id
                    )));
                }
            }
            None if rules.pinned_only => {
                return Err(forbidden(format!(
                    "edge {:?} is not pinned, and control takes reports from pinned edges only",
                    report.id
                )));
            }
            None => {}
        }
        Ok(Admitted {
            report,
            at_ms: signed.at_ms,
        })
    }

    /// Takes `admitted` if its signature is newer than the last one taken from its edge, by
    /// handing it to `hear` (which may refuse it too); a replay is refused (`401`). The check
    /// and the record are one step, so two copies of a report racing each other are not both
    /// taken.
    pub fn commit(
        &self,
        admitted: Admitted,
        hear: impl FnOnce(EdgeReport) -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        let id = admitted.report.id.clone();
        if let Some(&last) = newest.get(&id)
            && admitted.at_ms <= last
        {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "a replay: edge {id:?} already sent a report signed at {last} ms, and this one is signed at {} ms",
                    admitted.at_ms
                ),
            ));
        }
        let at_ms = admitted.at_ms;
        hear(admitted.report)?;
        newest.insert(id, at_ms);
        Ok(())
    }

    /// Drops the signature times older than the clock window at `now_ms`.
    pub fn prune(&self, now_ms: u64) {
        let window = u64::try_from(self.rules().clock_window.as_millis()).unwrap_or(u64::MAX);
        let oldest = now_ms.saturating_sub(window);
        self.newest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, at| *at >= oldest);
    }
}

/// Whether `url` is what `pattern` allows: the same URL (a final `/` aside), or one starting
/// with what comes before the pattern's final `*`.
pub fn url_matches(pattern: &str, url: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => url.starts_with(prefix),
        None => pattern.trim_end_matches('/') == url.trim_end_matches('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::report;

    const NOW: u64 = 1_764_547_200_000;

    fn key(id: &str) -> KeycardKey {
        KeycardKey::from_hex(Some(id), &"5a".repeat(32)).unwrap()
    }

    fn intake(extra: &str) -> Intake {
        let config = Config::parse(&format!(
            "{extra}\n[[sites]]\nname = \"lon\"\nlatitude = 51.5\nlongitude = -0.13\ncost_per_gb = 0.02\ncapacity_mbps = 1000\n\n\
             [[sites]]\nname = \"fra\"\nlatitude = 50.1\nlongitude = 8.7\ncost_per_gb = 0.01\ncapacity_mbps = 1000\n"
        ))
        .unwrap();
        Intake::new(&config, vec![key("k1"), key("lon-1")])
    }

    fn body(report: &EdgeReport) -> Vec<u8> {
        serde_json::to_vec(report).unwrap()
    }

    fn known(site: &str) -> bool {
        site == "lon" || site == "fra"
    }

    /// Checks and commits `report` signed at `at` with `signer`: the status, 204 if taken.
    fn send(intake: &Intake, report: &EdgeReport, signer: &KeycardKey, at: u64) -> StatusCode {
        let body = body(report);
        let header = report::sign(signer, &body, at);
        let admitted = match intake.check(Some(header.as_bytes()), &body, NOW, known) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal.status,
        };
        match intake.commit(admitted, |_| Ok(())) {
            Ok(()) => StatusCode::NO_CONTENT,
            Err(refusal) => refusal.status,
        }
    }

    #[test]
    fn signed_reports_are_taken_once() {
        let intake = intake("");
        let lon = report("lon-1", "lon");
        assert_eq!(send(&intake, &lon, &key("k1"), NOW), StatusCode::NO_CONTENT);
        // The same report again, or one signed earlier: a replay.
        assert_eq!(
            send(&intake, &lon, &key("k1"), NOW),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&intake, &lon, &key("k1"), NOW - 1),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&intake, &lon, &key("k1"), NOW + 1),
            StatusCode::NO_CONTENT
        );
        // Another edge has its own sequence.
        assert_eq!(
            send(&intake, &report("lon-2", "lon"), &key("k1"), NOW - 5),
            StatusCode::NO_CONTENT
        );
        // Skewed, unknown key, unknown site.
        assert_eq!(
            send(&intake, &lon, &key("k1"), NOW + 31_000),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&intake, &lon, &key("k2"), NOW + 2),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&intake, &report("mars-1", "mars"), &key("k1"), NOW),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn refusals_say_why_and_change_nothing() {
        let intake = intake("");
        let lon = body(&report("lon-1", "lon"));
        let check = |header: Option<&str>, body: &[u8]| {
            intake
                .check(header.map(str::as_bytes), body, NOW, known)
                .unwrap_err()
        };
        let unsigned = check(None, &lon);
        assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
        assert!(
            unsigned.reason.contains("not signed"),
            "{}",
            unsigned.reason
        );
        let wrong = KeycardKey::from_hex(Some("k1"), &"ab".repeat(32)).unwrap();
        let bad = check(Some(&report::sign(&wrong, &lon, NOW)), &lon);
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert!(bad.reason.contains("does not match"), "{}", bad.reason);

        let mut large = lon.clone();
        large.resize(MAX_REPORT_BYTES + 1, b' ');
        assert_eq!(
            check(Some(&report::sign(&key("k1"), &large, NOW)), &large).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let mut full = report("lon-1", "lon");
        full.egress_bps = u64::MAX;
        let full = body(&full);
        let refusal = check(Some(&report::sign(&key("k1"), &full, NOW)), &full);
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert!(refusal.reason.contains("egress_bps"), "{}", refusal.reason);
        // None of these left a time behind: the first good report is still taken.
        assert_eq!(
            send(&intake, &report("lon-1", "lon"), &key("k1"), NOW),
            StatusCode::NO_CONTENT
        );

        // Without report keys, nothing is taken.
        let keyless = Intake::new(&Config::parse("").unwrap(), Vec::new());
        let refusal = keyless
            .check(
                Some(report::sign(&key("k1"), &lon, NOW).as_bytes()),
                &lon,
                NOW,
                known,
            )
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::UNAUTHORIZED);
        assert!(refusal.reason.contains("key_file"), "{}", refusal.reason);
    }

    #[test]
    fn a_refusal_by_the_registry_leaves_no_time_behind() {
        let intake = intake("");
        let lon = report("lon-1", "lon");
        let body = body(&lon);
        let header = report::sign(&key("k1"), &body, NOW);
        let admitted = intake
            .check(Some(header.as_bytes()), &body, NOW, known)
            .unwrap();
        let full = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "full");
        assert_eq!(intake.commit(admitted, |_| Err(full.clone())), Err(full));
        assert_eq!(send(&intake, &lon, &key("k1"), NOW), StatusCode::NO_CONTENT);
    }

    #[test]
    fn pins_hold_an_edge_to_its_site_url_and_key() {
        let intake = intake(
            "[[edges]]\nid = \"lon-1\"\nsite = \"lon\"\nurl = \"https://lon-1.cdn.example\"\nkey_id = \"lon-1\"\n\n\
             [[edges]]\nid = \"fra-1\"\nsite = \"fra\"\nurl = \"https://fra-1.cdn.example:*\"\n",
        );
        let pinned = |id: &str, site: &str, url: &str| {
            let mut edge = report(id, site);
            edge.url = url.into();
            edge
        };
        let lon = pinned("lon-1", "lon", "https://lon-1.cdn.example/");
        assert_eq!(
            send(&intake, &lon, &key("lon-1"), NOW),
            StatusCode::NO_CONTENT
        );
        // Its own key only, its site only, its URL only.
        assert_eq!(
            send(&intake, &lon, &key("k1"), NOW + 1),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(
                &intake,
                &pinned("lon-1", "fra", "https://lon-1.cdn.example"),
                &key("lon-1"),
                NOW + 2
            ),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(
                &intake,
                &pinned("lon-1", "lon", "https://attacker.example"),
                &key("lon-1"),
                NOW + 3
            ),
            StatusCode::FORBIDDEN
        );
        // A prefix pin takes any port, and nothing else.
        assert_eq!(
            send(
                &intake,
                &pinned("fra-1", "fra", "https://fra-1.cdn.example:8443"),
                &key("k1"),
                NOW
            ),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            send(
                &intake,
                &pinned("fra-1", "fra", "https://fra-1.cdn.example.attacker.example"),
                &key("k1"),
                NOW + 1
            ),
            StatusCode::FORBIDDEN
        );
        // An edge nobody pinned is taken unless only pinned edges are.
        assert_eq!(
            send(&intake, &report("nyc-9", "lon"), &key("k1"), NOW),
            StatusCode::NO_CONTENT
        );
        let strict = self::intake(
            "[reports]\npinned_only = true\n\n[[edges]]\nid = \"lon-1\"\nsite = \"lon\"\n",
        );
        assert_eq!(
            send(&strict, &report("nyc-9", "lon"), &key("k1"), NOW),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(&strict, &report("lon-1", "lon"), &key("k1"), NOW),
            StatusCode::NO_CONTENT
        );
    }

    #[test]
    fn old_signature_times_are_dropped_once_the_window_covers_them() {
        let intake = intake("");
        let lon = report("lon-1", "lon");
        assert_eq!(send(&intake, &lon, &key("k1"), NOW), StatusCode::NO_CONTENT);
        intake.prune(NOW + 30_000);
        assert_eq!(intake.newest.lock().unwrap().len(), 1);
        intake.prune(NOW + 30_001);
        assert!(intake.newest.lock().unwrap().is_empty());
    }

    #[test]
    fn url_patterns() {
        assert!(url_matches("https://a.example", "https://a.example/"));
        assert!(url_matches("https://a.example/", "https://a.example"));
        assert!(!url_matches("https://a.example", "https://a.example.evil"));
        assert!(url_matches("https://a.example:*", "https://a.example:8443"));
        assert!(!url_matches(
            "https://a.example:*",
            "https://a.example.evil"
        ));
    }
}
