//! Edge reports (DESIGN.md "Edge reports"): every edge tells control, every second, who it is,
//! where, how busy and how well. Sent as JSON to control's `POST /api/v1/reports`, signed with
//! a cluster key in the [`SIGNATURE_HEADER`]; both the bounds a report must keep and the
//! signature are checked here, sans IO (key, body and time in; header or verdict out), so the
//! edge that signs and the control that verifies share one implementation.
//!
//! The signature header is `X-Estuary-Signature: t=<unix ms>,kid=<key id>,sig=<hex>`, where
//! `sig` is the HMAC-SHA256 under the key named `kid` (a line `ID HEX` of a key file in the
//! keycard format; `kid` is left out for a key without an id) of the bytes
//! `estuary-report-v1\n<t>\n<body>`, the body being exactly the bytes sent.

use std::time::Duration;

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::keycard::{KeycardKey, decode_hex, encode_hex};
use crate::mood::Mood;

/// Where control's registry takes reports.
pub const REPORTS_PATH: &str = "/api/v1/reports";

/// The request header that carries a report's signature.
pub const SIGNATURE_HEADER: &str = "x-estuary-signature";

/// What the HMAC covers before the timestamp and the body: a version, so that no other
/// message signed with the same key can pass for a report.
const SIGNED_PREFIX: &[u8] = b"estuary-report-v1\n";

/// The largest report body taken, in bytes. A report is about 250 bytes; the rest is room.
pub const MAX_REPORT_BYTES: usize = 4096;
/// The longest signature header taken, in bytes (a 64-byte key id still fits).
pub const MAX_SIGNATURE_BYTES: usize = 256;
/// The longest edge id, site name and key id.
pub const MAX_NAME_BYTES: usize = 64;
/// The longest public URL of an edge.
pub const MAX_URL_BYTES: usize = 256;
/// The longest reason for a mood; an edge shortens a longer one before sending it.
pub const MAX_REASON_BYTES: usize = 256;
/// The most viewer connections one edge may report.
pub const MAX_CLIENTS: u64 = 10_000_000;
/// The most egress one edge may report: 10 Tbit/s, far past any one machine's network cards.
pub const MAX_EGRESS_BPS: u64 = 10_000_000_000_000;
/// The most CPU one edge may report, in CPUs.
pub const MAX_CPU: f64 = 1024.0;
/// How far a signature's time may be from control's clock unless configured otherwise.
pub const DEFAULT_CLOCK_WINDOW: Duration = Duration::from_secs(30);

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

/// Why a report body is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error("the report has {length} bytes; at most {MAX_REPORT_BYTES} are taken")]
    TooLarge { length: usize },
    #[error("not an edge report: {0}")]
    NotJson(String),
    #[error("the report's {field} {reason}")]
    OutOfBounds { field: &'static str, reason: String },
}

impl EdgeReport {
    /// Reads a report body and checks its bounds.
    pub fn parse(body: &[u8]) -> Result<EdgeReport, ReportError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge { length: body.len() });
        }
        let report: EdgeReport = serde_json::from_slice(body)
            .map_err(|error| ReportError::NotJson(error.to_string()))?;
        report.check()?;
        Ok(report)
    }

    /// Whether every field is within its bound: names of safe characters, an http(s) URL with
    /// a host, numbers a real edge could report.
    pub fn check(&self) -> Result<(), ReportError> {
        let out = |field: &'static str, reason: String| ReportError::OutOfBounds { field, reason };
        check_name(&self.id).map_err(|reason| out("id", reason))?;
        if self.site.is_empty() || self.site.len() > MAX_NAME_BYTES || has_control(&self.site) {
            return Err(out(
                "site",
                format!("must be 1 to {MAX_NAME_BYTES} bytes with no control characters"),
            ));
        }
        check_url(&self.url).map_err(|reason| out("url", format!("{:?} {reason}", self.url)))?;
        if self.clients > MAX_CLIENTS {
            return Err(out("clients", format!("must be at most {MAX_CLIENTS}")));
        }
        if self.egress_bps > MAX_EGRESS_BPS {
            return Err(out(
                "egress_bps",
                format!("must be at most {MAX_EGRESS_BPS}"),
            ));
        }
        // NaN fails both comparisons.
        if !(self.cache_hit_ratio >= 0.0 && self.cache_hit_ratio <= 1.0) {
            return Err(out("cache_hit_ratio", "must be within 0 and 1".into()));
        }
        if !(self.cpu >= 0.0 && self.cpu <= MAX_CPU) {
            return Err(out("cpu", format!("must be within 0 and {MAX_CPU}")));
        }
        if self.mood == Mood::Lost {
            return Err(out(
                "mood",
                "lost is what control says of a silent edge, never what an edge says".into(),
            ));
        }
        if let Some(reason) = &self.reason
            && (reason.len() > MAX_REASON_BYTES || has_control(reason))
        {
            return Err(out(
                "reason",
                format!("must be at most {MAX_REASON_BYTES} bytes with no control characters"),
            ));
        }
        Ok(())
    }
}

/// Shortens `reason` to [`MAX_REASON_BYTES`] (at a character boundary) and replaces control
/// characters, so that an edge's own error message never gets its report refused.
pub fn fit_reason(reason: &str) -> String {
    let mut fitted = String::with_capacity(reason.len().min(MAX_REASON_BYTES));
    for c in reason.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if fitted.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        fitted.push(c);
    }
    fitted
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// An edge id (or key id): 1 to 64 of `A-Z a-z 0-9 . _ : -`, which every log, URL path and
/// page shows as it is.
pub fn check_name(name: &str) -> Result<(), String> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.bytes().all(safe) {
        Err(format!(
            "{name:?} must be 1 to {MAX_NAME_BYTES} of the characters A-Z a-z 0-9 . _ : -"
        ))
    } else {
        Ok(())
    }
}

/// An edge's public URL: `http://` or `https://`, a host (name, IPv4 or `[IPv6]`), an optional
/// port, an optional path; no user, query or fragment, visible ASCII only, at most
/// [`MAX_URL_BYTES`]. Control puts a viewer's path after it in a `Location`.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("is longer than {MAX_URL_BYTES} bytes"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("holds characters other than visible ASCII".into());
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("is not an http(s) URL")?;
    if rest.contains(['?', '#', '@', '\\']) {
        return Err("may not have a user, a query or a fragment".into());
    }
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']').ok_or("has an unclosed [")?;
            address
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| "has a bracketed host that is not an IPv6 address")?;
            match after {
                "" => (address, None),
                _ => (
                    address,
                    Some(after.strip_prefix(':').ok_or("has junk after ]")?),
                ),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if !host_ok {
        return Err("has no usable host".into());
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|port| port > 0)
    {
        return Err(format!("has a port {port:?} that is not 1 to 65535"));
    }
    Ok(())
}

/// Why a report's signature is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the report is not signed: it needs an X-Estuary-Signature header (t=…,kid=…,sig=…)")]
    Unsigned,
    #[error("the X-Estuary-Signature header is malformed: {0}")]
    Malformed(String),
    #[error("the report is signed with key {0:?}, which control does not have")]
    UnknownKey(String),
    #[error("the report's signature does not match: it was altered or signed with another key")]
    BadSignature,
    #[error(
        "the report was signed at {at_ms} ms, {skew_ms} ms from control's clock; at most {window_ms} ms are allowed"
    )]
    Skewed {
        at_ms: u64,
        skew_ms: u64,
        window_ms: u64,
    },
}

/// What a good signature tells: when the report was signed, and with which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The signature's time, Unix milliseconds.
    pub at_ms: u64,
    /// The id of the key that signed, if it has one.
    pub key_id: Option<String>,
}

fn signed_message(at_ms: u64, body: &[u8]) -> Vec<u8> {
    let time = at_ms.to_string();
    let mut message = Vec::with_capacity(SIGNED_PREFIX.len() + time.len() + 1 + body.len());
    message.extend_from_slice(SIGNED_PREFIX);
    message.extend_from_slice(time.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    message
}

/// The signature header's value for `body` sent at `now_ms` (Unix milliseconds).
pub fn sign(key: &KeycardKey, body: &[u8], now_ms: u64) -> String {
    let tag = hmac::sign(&key.key, &signed_message(now_ms, body));
    match &key.id {
        Some(id) => format!("t={now_ms},kid={id},sig={}", encode_hex(tag.as_ref())),
        None => format!("t={now_ms},sig={}", encode_hex(tag.as_ref())),
    }
}

/// Checks `header` (the signature header's value, if the request had one) for `body` against
/// `keys`, at `now_ms`: the signature must match a key (the one `kid` names, or any when there
/// is no `kid`) and its time be within `window` of `now_ms`. Whether the time is newer than
/// the edge's last report is the caller's to check: it keeps that state.
pub fn verify(
    header: Option<&[u8]>,
    body: &[u8],
    keys: &[KeycardKey],
    now_ms: u64,
    window: Duration,
) -> Result<Signed, SignatureError> {
    let header = header.ok_or(SignatureError::Unsigned)?;
    let malformed = |what: &str| SignatureError::Malformed(what.to_owned());
    if header.len() > MAX_SIGNATURE_BYTES {
        return Err(malformed("longer than 256 bytes"));
    }
    let header = std::str::from_utf8(header).map_err(|_| malformed("not text"))?;
    let (mut at, mut key_id, mut mac) = (None, None, None);
    for field in header.split(',') {
        let (name, value) = field
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed("expected t=…,kid=…,sig=…"))?;
        let slot = match name {
            "t" => &mut at,
            "kid" => &mut key_id,
            "sig" => &mut mac,
            _ => return Err(malformed("unknown field (expected t, kid and sig)")),
        };
        if slot.replace(value).is_some() {
            return Err(malformed("a field is given twice"));
        }
    }
    let at_ms = at
        .filter(|at| !at.is_empty() && at.len() <= 16 && at.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|at| at.parse::<u64>().ok())
        .ok_or_else(|| malformed("t must be the Unix time in milliseconds"))?;
    let mac = mac
        .and_then(decode_hex)
        .filter(|mac| mac.len() == 32)
        .ok_or_else(|| malformed("sig must be 64 hex digits"))?;
    let candidates: Vec<&KeycardKey> = match key_id {
        Some(wanted) => {
            check_name(wanted).map_err(|reason| malformed(&format!("kid {reason}")))?;
            let named: Vec<_> = keys
                .iter()
                .filter(|key| key.id.as_deref() == Some(wanted))
                .collect();
            if named.is_empty() {
                return Err(SignatureError::UnknownKey(wanted.to_owned()));
            }
            named
        }
        None => keys.iter().collect(),
    };
    let message = signed_message(at_ms, body);
    let signer = candidates
        .into_iter()
        .find(|key| hmac::verify(&key.key, &message, &mac).is_ok())
        .ok_or(SignatureError::BadSignature)?;
    let skew_ms = at_ms.abs_diff(now_ms);
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    if skew_ms > window_ms {
        return Err(SignatureError::Skewed {
            at_ms,
            skew_ms,
            window_ms,
        });
    }
    Ok(Signed {
        at_ms,
        key_id: signer.id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "52a152a152a152a152a152a152a152a1";
    const NOW: u64 = 1_764_547_200_123;
    const WINDOW: Duration = DEFAULT_CLOCK_WINDOW;

    fn key(id: Option<&str>) -> KeycardKey {
        KeycardKey::from_hex(id, KEY).unwrap()
    }

    fn report() -> EdgeReport {
        EdgeReport {
            id: "lon-1".into(),
            site: "lon".into(),
            url: "http://192.0.2.10:8090".into(),
            clients: 12,
            egress_bps: 36_000_000,
            cache_hit_ratio: 0.98,
            cpu: 0.25,
            mood: Mood::Happy,
            reason: None,
        }
    }

    #[test]
    fn reports_read_back_what_was_written() {
        let report = report();
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"mood\":\"happy\""), "{json}");
        assert!(!json.contains("reason"));
        assert_eq!(EdgeReport::parse(json.as_bytes()).unwrap(), report);
    }

    #[test]
    fn matches_an_independently_computed_signature() {
        // Computed outside this code, by
        // `printf 'estuary-report-v1\n%s\n%s' 1764547200123 '{"id":"lon-1"}' |
        //  openssl dgst -sha256 -mac HMAC -macopt hexkey:52a152a152a152a152a152a152a152a1`.
        assert_eq!(
            sign(&key(Some("k1")), br#"{"id":"lon-1"}"#, NOW),
            "t=1764547200123,kid=k1,sig=\
             505eb96d6887409219a86ed25a68dd13462b91eec3942e55f458627454492383"
        );
        assert!(sign(&key(None), b"x", NOW).starts_with("t=1764547200123,sig="));
    }

    #[test]
    fn signatures_verify_and_say_why_not() {
        let keys = [key(Some("k1"))];
        let body = br#"{"id":"lon-1"}"#;
        let header = sign(&keys[0], body, NOW);
        let check = |header: Option<&str>, body: &[u8], now: u64| {
            verify(header.map(str::as_bytes), body, &keys, now, WINDOW)
        };
        // Good, within the window either way.
        assert_eq!(
            check(Some(&header), body, NOW + 30_000),
            Ok(Signed {
                at_ms: NOW,
                key_id: Some("k1".into())
            })
        );
        assert!(check(Some(&header), body, NOW - 30_000).is_ok());
        // Unsigned.
        assert_eq!(check(None, body, NOW), Err(SignatureError::Unsigned));
        // Another body, or another key.
        assert_eq!(
            check(Some(&header), br#"{"id":"lon-2"}"#, NOW),
            Err(SignatureError::BadSignature)
        );
        let other = KeycardKey::from_hex(Some("k1"), &"ab".repeat(16)).unwrap();
        assert_eq!(
            check(Some(&sign(&other, body, NOW)), body, NOW),
            Err(SignatureError::BadSignature)
        );
        // A key id control does not have.
        let unknown = KeycardKey::from_hex(Some("k9"), KEY).unwrap();
        assert_eq!(
            check(Some(&sign(&unknown, body, NOW)), body, NOW),
            Err(SignatureError::UnknownKey("k9".into()))
        );
        // Too far from control's clock, either way.
        for now in [NOW + 30_001, NOW - 30_001] {
            assert!(
                matches!(
                    check(Some(&header), body, now),
                    Err(SignatureError::Skewed {
                        skew_ms: 30_001,
                        ..
                    })
                ),
                "{now}"
            );
        }
        // The time is signed too: a later t with the old sig does not verify.
        let moved = header.replace("t=1764547200123", "t=1764547200999");
        assert_eq!(
            check(Some(&moved), body, NOW),
            Err(SignatureError::BadSignature)
        );
        // Without a kid, any key may have signed.
        let anonymous = sign(&key(None), body, NOW);
        assert!(check(Some(&anonymous), body, NOW).is_ok());
    }

    #[test]
    fn rotation_keeps_old_and_new_keys() {
        let old = key(Some("2025"));
        let new = KeycardKey::from_hex(Some("2026"), &"cd".repeat(16)).unwrap();
        let keys = [new.clone(), old.clone()];
        for signer in [&old, &new] {
            let verdict = verify(
                Some(sign(signer, b"{}", NOW).as_bytes()),
                b"{}",
                &keys,
                NOW,
                WINDOW,
            );
            assert_eq!(verdict.unwrap().key_id, signer.id);
        }
    }

    #[test]
    fn malformed_headers_are_named() {
        let keys = [key(Some("k1"))];
        let sig = "0".repeat(64);
        for header in [
            String::new(),
            "t=1".into(),
            format!("sig={sig}"),
            format!("t=,sig={sig}"),
            format!("t=-1,sig={sig}"),
            format!("t=99999999999999999,sig={sig}"),
            format!("t=1,t=2,sig={sig}"),
            format!("t=1,sig={sig},extra=1"),
            "t=1,sig=00".into(),
            format!("t=1,kid=a b,sig={sig}"),
            format!("t=1,kid={},sig={sig}", "k".repeat(200)),
            "x".repeat(MAX_SIGNATURE_BYTES + 1),
        ] {
            assert!(
                matches!(
                    verify(Some(header.as_bytes()), b"", &keys, NOW, WINDOW),
                    Err(SignatureError::Malformed(_))
                ),
                "{header}"
            );
        }
        assert!(matches!(
            verify(Some(&[0xff, 0xfe]), b"", &keys, NOW, WINDOW),
            Err(SignatureError::Malformed(_))
        ));
    }

    /// One report with one field changed by `change`: the error names the field.
    fn refused_field(change: impl FnOnce(&mut EdgeReport)) -> &'static str {
        let mut report = report();
        change(&mut report);
        match report.check() {
            Err(ReportError::OutOfBounds { field, .. }) => field,
            other => panic!("{report:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn every_bound_is_kept() {
        assert_eq!(refused_field(|r| r.id.clear()), "id");
        assert_eq!(refused_field(|r| r.id = "a".repeat(65)), "id");
        assert_eq!(refused_field(|r| r.id = "<script>".into()), "id");
        assert_eq!(refused_field(|r| r.site = "s".repeat(65)), "site");
        assert_eq!(refused_field(|r| r.site = "lon\n".into()), "site");
        assert_eq!(refused_field(|r| r.site.clear()), "site");
        assert_eq!(refused_field(|r| r.clients = MAX_CLIENTS + 1), "clients");
        assert_eq!(refused_field(|r| r.egress_bps = u64::MAX), "egress_bps");
        for ratio in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert_eq!(
                refused_field(|r| r.cache_hit_ratio = ratio),
                "cache_hit_ratio"
            );
        }
        for cpu in [-1.0, MAX_CPU + 1.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(refused_field(|r| r.cpu = cpu), "cpu");
        }
        assert_eq!(refused_field(|r| r.mood = Mood::Lost), "mood");
        assert_eq!(
            refused_field(|r| r.reason = Some("x".repeat(MAX_REASON_BYTES + 1))),
            "reason"
        );
        assert_eq!(
            refused_field(|r| r.reason = Some("a\u{1b}[2J".into())),
            "reason"
        );
        // The bounds themselves are taken.
        let mut edge = report();
        edge.id = "a".repeat(64);
        edge.clients = MAX_CLIENTS;
        edge.egress_bps = MAX_EGRESS_BPS;
        edge.cache_hit_ratio = 1.0;
        edge.cpu = MAX_CPU;
        edge.reason = Some("x".repeat(MAX_REASON_BYTES));
        assert_eq!(edge.check(), Ok(()));
    }

    #[test]
    fn urls_are_http_with_a_host() {
        for good in [
            "http://lon-1.cdn.example",
            "https://lon-1.cdn.example:8443/",
            "http://192.0.2.10:8090",
            "http://[2001:db8::1]:8090",
            "https://[::1]",
            "https://cdn.example/edge/lon-1",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in [
            "ftp://x",
            "http://",
            "http:///path",
            "https://:8090",
            "http://user@evil.example",
            "http://x.example/?q=1",
            "http://x.example#f",
            "http://x .example",
            "http://x.example:0",
            "http://x.example:99999",
            "http://x.example:80:80",
            "http://[::1",
            "http://[not-v6]",
            "http://[::1]x",
            "http://é.example",
            "javascript:alert(1)",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("http://{}", "a".repeat(MAX_URL_BYTES))).is_err());
        assert_eq!(refused_field(|r| r.url = "ftp://x".into()), "url");
    }

    #[test]
    fn bodies_are_bounded_before_they_are_read() {
        let mut body = serde_json::to_vec(&report()).unwrap();
        body.resize(MAX_REPORT_BYTES + 1, b' ');
        assert_eq!(
            EdgeReport::parse(&body),
            Err(ReportError::TooLarge {
                length: MAX_REPORT_BYTES + 1
            })
        );
        for bad in [
            &b"{\"id\": 3"[..],
            b"[]",
            b"",
            b"{\"id\":\"a\",\"id\":\"b\"}",
        ] {
            assert!(
                matches!(EdgeReport::parse(bad), Err(ReportError::NotJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge_number = String::from_utf8(serde_json::to_vec(&report()).unwrap())
            .unwrap()
            .replace("\"cpu\":0.25", "\"cpu\":1e999");
        assert!(EdgeReport::parse(huge_number.as_bytes()).is_err());
    }

    #[test]
    fn reasons_are_fitted() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let fitted = fit_reason(&long);
        assert!(fitted.len() <= MAX_REASON_BYTES && fitted.len() >= MAX_REASON_BYTES - 1);
        assert_eq!(fit_reason("line\nbreak"), "line break");
        let mut edge = report();
        edge.reason = Some(fit_reason(&format!("{long}\u{7}")));
        assert_eq!(edge.check(), Ok(()));
    }

    proptest! {
        #[test]
        fn any_header_and_body_are_answered(header in proptest::collection::vec(any::<u8>(), 0..300),
                                            body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let keys = [key(Some("k1"))];
            let _ = verify(Some(&header), &body, &keys, NOW, WINDOW);
            let _ = EdgeReport::parse(&body);
        }

        #[test]
        fn signed_bodies_verify_for_any_time_in_the_window(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            at in 0u64..1 << 44,
            skew in -30_000i64..=30_000,
        ) {
            let keys = [key(Some("k1"))];
            let header = sign(&keys[0], &body, at);
            let now = at.saturating_add_signed(skew);
            let verdict = verify(Some(header.as_bytes()), &body, &keys, now, WINDOW);
            prop_assert_eq!(verdict.map(|signed| signed.at_ms), Ok(at));
        }
    }
}
