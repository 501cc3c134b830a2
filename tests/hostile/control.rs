//! Hostile requests to control: an `estuary control` of its own (sites lon, fra and nyc, a
//! report key, edges pinned, the admin API on its own address behind a token, a header
//! timeout of 5 s), fed every half second by three legitimate edges' signed reports. An
//! attacker sends reports unsigned, badly signed, replayed, with an unknown key, skewed,
//! oversized, out of bounds and against a pin; after each, a London viewer is still sent to
//! lon-1, and nothing names the attacker's URL. Then the views of viewers without the token,
//! slowloris on both addresses, thousands of channel names, and an edge that falls silent.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use estuary_proto::KeycardKey;
use estuary_proto::report;

use crate::support::{Running, estuary, free_port, unix_now};
use crate::{Cases, Demo};

#[path = "control_rest.rs"]
mod rest;

const REPORT_KEY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const KEY_ID: &str = "edges";
const ADMIN_TOKEN: &str = "a-long-admin-token-for-the-hostile-test";
/// The configured header timeout (`[timeouts] header`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The configured `[reports] forget_after`.
const FORGET_AFTER: Duration = Duration::from_secs(5);
/// What every malicious report wants viewers sent to.
const ATTACKER: &str = "http://attacker.example";
/// A viewer in the coverage zone placed in London.
const LONDON_VIEWER: &str = "192.0.2.10";
/// The legitimate edges that report all along: id, site, public URL.
const EDGES: [(&str, &str, &str); 3] = [
    ("lon-1", "lon", "http://lon-1.example:8090"),
    ("fra-1", "fra", "http://fra-1.example:8090"),
    ("nyc-1", "nyc", "http://nyc-1.example:8090"),
];

/// Control under attack, and the thread that reports for its legitimate edges.
struct Target {
    public: SocketAddr,
    admin: SocketAddr,
    key: KeycardKey,
    reporting: Arc<AtomicBool>,
    reporter: Option<std::thread::JoinHandle<()>>,
    _process: Running,
    _dir: tempfile::TempDir,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.reporting.store(false, Ordering::Relaxed);
        if let Some(reporter) = self.reporter.take() {
            let _ = reporter.join();
        }
    }
}

fn now_ms() -> u64 {
    (unix_now() * 1000.0) as u64
}

/// A report of edge `id` in `site` at `url`, as JSON.
fn report_body(id: &str, site: &str, url: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "site": site, "url": url, "clients": 3, "egress_bps": 10_000_000,
        "cache_hit_ratio": 0.9, "cpu": 0.1, "mood": "happy",
    })
}

/// Reads an answer to its end: the status and the body (a problem's `detail`, when it is an
/// RFC 9457 problem, as every error of control's is).
fn read_answer(mut stream: TcpStream) -> Result<(u16, String), String> {
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    if answer.is_empty() {
        return Err(format!("no answer ({read:?})"));
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    let problem = text
        .to_ascii_lowercase()
        .contains("content-type: application/problem+json");
    if problem {
        let problem: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("not a problem ({e}): {body}"))?;
        return match problem["detail"].as_str() {
            Some(detail) if problem["status"] == status => Ok((status, detail.to_owned())),
            _ => Err(format!("a problem without its status and detail: {body}")),
        };
    }
    Ok((status, body))
}

/// Sends `request` (which asks for `Connection: close`) whole and reads the answer.
fn exchange(address: SocketAddr, request: &[u8]) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(address).map_err(|e| format!("{address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    read_answer(stream)
}

fn get(address: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    exchange(
        address,
        format!("GET {path} HTTP/1.1\r\nHost: control\r\n{authorization}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// POSTs a report body with `signature` (the header's value, if any).
fn post_report(
    address: SocketAddr,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(u16, String), String> {
    let signature = signature
        .map(|value| format!("X-Estuary-Signature: {value}\r\n"))
        .unwrap_or_default();
    let mut request = format!(
        "POST /api/v1/reports HTTP/1.1\r\nHost: control\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{signature}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    exchange(address, &request)
}

impl Target {
    fn start() -> Target {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("report-keys.txt"),
            format!("# the edges' report key\n{KEY_ID} {REPORT_KEY}\n"),
        )
        .unwrap();
        let public = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut config = format!(
            "listen = \"{public}\"\nadmin_listen = \"{admin}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
             trusted_proxies = [\"127.0.0.1/32\"]\n\n\
             [reports]\nkey_file = \"report-keys.txt\"\nforget_after = \"{}s\"\npinned_only = true\n\n\
             [timeouts]\nheader = \"{}s\"\n\n\
             [[zones]]\nname = \"london\"\nnetworks = [\"192.0.2.0/24\"]\nlatitude = 51.5\nlongitude = -0.13\n",
            FORGET_AFTER.as_secs(),
            HEADER_TIMEOUT.as_secs()
        );
        for (site, latitude, longitude, cost) in [
            ("lon", 51.5, -0.13, 0.02),
            ("fra", 50.1, 8.7, 0.01),
            ("nyc", 40.7, -74.0, 0.03),
        ] {
            config.push_str(&format!(
                "\n[[sites]]\nname = \"{site}\"\nlatitude = {latitude}\nlongitude = {longitude}\n\
                 cost_per_gb = {cost}\ncapacity_mbps = 1000\n"
            ));
        }
        let pins = EDGES
            .iter()
            .copied()
            .chain([("nyc-2", "nyc", "http://nyc-2.example:8090")]);
        for (id, site, url) in pins {
            config.push_str(&format!(
                "\n[[edges]]\nid = \"{id}\"\nsite = \"{site}\"\nurl = \"{url}\"\nkey_id = \"{KEY_ID}\"\n"
            ));
        }
        let path = dir.path().join("control.toml");
        std::fs::write(&path, config).unwrap();
        let process = Running(
            estuary()
                .arg("control")
                .arg("--config")
                .arg(&path)
                .stdout(Stdio::null())
                .spawn()
                .expect("starting estuary control"),
        );
        let key = KeycardKey::from_hex(Some(KEY_ID), REPORT_KEY).unwrap();
        let reporting = Arc::new(AtomicBool::new(true));
        let reporter = std::thread::spawn({
            let (reporting, key) = (reporting.clone(), key.clone());
            move || {
                while reporting.load(Ordering::Relaxed) {
                    for (id, site, url) in EDGES {
                        let body = report_body(id, site, url).to_string();
                        let signature = report::sign(&key, body.as_bytes(), now_ms());
                        let _ = post_report(public, body.as_bytes(), Some(&signature));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        });
        let target = Target {
            public,
            admin,
            key,
            reporting,
            reporter: Some(reporter),
            _process: process,
            _dir: dir,
        };
        let started = Instant::now();
        while target.unchanged().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "control never sent the London viewer to lon-1: {:?}",
                target.unchanged()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        target
    }

    fn sign(&self, body: &[u8], at_ms: u64) -> String {
        report::sign(&self.key, body, at_ms)
    }

    /// The London viewer still goes to lon-1, in the explained decision and in a redirect, and
    /// no edge control knows names the attacker's URL.
    fn unchanged(&self) -> Result<(), String> {
        let (status, body) = get(
            self.admin,
            &format!("/api/v1/route?ip={LONDON_VIEWER}&path=/live/demo/master.m3u8"),
            None,
        )?;
        if status != 200 {
            return Err(format!("route: {status} {body}"));
        }
        let decision: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("route: {e}: {body}"))?;
        if decision["edge"]["url"] != EDGES[0].2 || body.contains("attacker") {
            return Err(format!("the decision changed: {body}"));
        }
        let mut stream = TcpStream::connect(self.public).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: control\r\n\
             X-Forwarded-For: {LONDON_VIEWER}\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let location = format!("location: {}/live/demo/master.m3u8", EDGES[0].2);
        if !answer.starts_with("HTTP/1.1 302 ") || !answer.contains(&location) {
            return Err(format!("the redirect changed: {answer}"));
        }
        let (_, edges) = get(self.admin, "/api/v1/edges", None)?;
        if edges.contains("attacker") || edges.contains("evil") {
            return Err(format!("an attacker's edge is known: {edges}"));
        }
        Ok(())
    }

    /// Sends a report and expects `status`, with `says` in the reason; then nothing changed.
    fn refused(
        &self,
        body: &[u8],
        signature: Option<&str>,
        status: u16,
        says: &str,
    ) -> Result<(), String> {
        let (got, reason) = post_report(self.public, body, signature)?;
        if got != status || !reason.contains(says) {
            return Err(format!(
                "expected {status} saying {says:?}, got {got}: {reason}"
            ));
        }
        self.unchanged()
    }
}

/// A report an attacker would send: a happy edge in lon that wants the viewers.
fn attack() -> Vec<u8> {
    report_body("evil-1", "lon", ATTACKER)
        .to_string()
        .into_bytes()
}

/// Sends `bytes` to `address` one a second (after `prelude`, whose answer is read first),
/// and says how long after the first slow byte control closed the connection.
fn slowloris(address: SocketAddr, prelude: &[u8], bytes: &[u8]) -> Result<Duration, String> {
    let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    if !prelude.is_empty() {
        stream.write_all(prelude).map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => return Err(format!("the prelude got no answer: {other:?}")),
            }
        }
        let text = String::from_utf8_lossy(&head).to_lowercase();
        let length: usize = text
            .split("content-length: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|length| length.trim().parse().ok())
            .ok_or("the prelude's answer has no length")?;
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    for &byte in bytes {
        if stream.write_all(&[byte]).is_err() {
            return Ok(started.elapsed());
        }
        let waited = Instant::now();
        let mut answer = [0u8; 256];
        // Wait out the second, watching for the close (or a 408 before it).
        while waited.elapsed() < Duration::from_secs(1) {
            match stream.read(&mut answer) {
                Ok(0) => return Ok(started.elapsed()),
                Ok(_) => continue,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Ok(started.elapsed()),
            }
        }
    }
    Err(format!(
        "still open after {:?} of one byte a second",
        started.elapsed()
    ))
}

/// `count` channel names of 12 letters, from a small generator seeded by the clock.
fn random_channels(count: usize) -> Vec<String> {
    let mut state = now_ms() | 1;
    (0..count)
        .map(|_| {
            (0..12)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'a' + (state % 26) as u8)
                })
                .collect()
        })
        .collect()
}

pub fn run(_demo: &Demo, cases: &mut Cases) {
    let target = Target::start();
    let other_key = KeycardKey::from_hex(Some(KEY_ID), &"ab".repeat(32)).unwrap();
    let unknown_key = KeycardKey::from_hex(Some("stolen"), REPORT_KEY).unwrap();

    cases.case("control_unsigned_report_is_401", || {
        target.refused(&attack(), None, 401, "not signed")
    });

    cases.case("control_badly_signed_report_is_401", || {
        let body = attack();
        let forged = report::sign(&other_key, &body, now_ms());
        target.refused(&body, Some(&forged), 401, "does not match")?;
        // A good signature over another body.
        let legit = report_body("lon-1", "lon", EDGES[0].2).to_string();
        let borrowed = target.sign(legit.as_bytes(), now_ms());
        target.refused(&body, Some(&borrowed), 401, "does not match")?;
        target.refused(&body, Some("t=1,sig=zz"), 401, "malformed")
    });

    cases.case("control_replayed_report_is_401", || {
        let body = report_body("nyc-2", "nyc", "http://nyc-2.example:8090").to_string();
        let first = target.sign(body.as_bytes(), now_ms() - 2_000);
        let (status, reason) = post_report(target.public, body.as_bytes(), Some(&first))?;
        if status != 204 {
            return Err(format!("the first report was refused: {status} {reason}"));
        }
        target.refused(body.as_bytes(), Some(&first), 401, "replay")?;
        let older = target.sign(body.as_bytes(), now_ms() - 3_000);
        target.refused(body.as_bytes(), Some(&older), 401, "replay")
    });

    cases.case("control_report_with_an_unknown_key_id_is_401", || {
        let body = attack();
        let signature = report::sign(&unknown_key, &body, now_ms());
        target.refused(&body, Some(&signature), 401, "\"stolen\"")
    });

    cases.case("control_skewed_report_is_401", || {
        let body = report_body("lon-1", "lon", EDGES[0].2).to_string();
        for skew in [-120_000i64, 120_000] {
            let signature = target.sign(body.as_bytes(), now_ms().saturating_add_signed(skew));
            target.refused(body.as_bytes(), Some(&signature), 401, "clock")?;
        }
        Ok(())
    });

    cases.case("control_oversized_report_is_413", || {
        // Content-Length says 5,000 bytes: refused after the head, before the body comes.
        let mut stream = TcpStream::connect(target.public).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let head = "POST /api/v1/reports HTTP/1.1\r\nHost: control\r\nContent-Length: 5000\r\n\r\n";
        stream
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        stream.write_all(&[b' '; 100]).map_err(|e| e.to_string())?;
        let (status, reason) = read_answer(stream)?;
        if status != 413 {
            return Err(format!("Content-Length 5000: {status} {reason}"));
        }
        // Chunked, with no length said: refused once past 4 KiB.
        let mut stream = TcpStream::connect(target.public).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut request =
            b"POST /api/v1/reports HTTP/1.1\r\nHost: control\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for _ in 0..5 {
            request.extend_from_slice(b"400\r\n");
            request.extend_from_slice(&[b' '; 0x400]);
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request).map_err(|e| e.to_string())?;
        let (status, reason) = read_answer(stream)?;
        if status != 413 {
            return Err(format!("chunked: {status} {reason}"));
        }
        target.unchanged()
    });

    cases.case("control_out_of_bound_report_is_400", || {
        // Signed with the real key, as a compromised edge would: still refused.
        let legit = report_body("lon-1", "lon", EDGES[0].2);
        for (field, value) in [
            ("egress_bps", serde_json::json!(u64::MAX)),
            ("clients", serde_json::json!(1_000_000_000_000u64)),
            ("cache_hit_ratio", serde_json::json!(2.5)),
            ("cpu", serde_json::json!(-1)),
            ("reason", serde_json::json!("x".repeat(1000))),
            ("id", serde_json::json!("lon-1".repeat(20))),
        ] {
            let mut body = legit.clone();
            body[field] = value;
            let body = body.to_string();
            let signature = target.sign(body.as_bytes(), now_ms());
            target.refused(body.as_bytes(), Some(&signature), 400, field)?;
        }
        let body = b"{\"id\": \"lon-1\", \"egress_bps\": 1e400}";
        let signature = target.sign(body, now_ms());
        target.refused(body, Some(&signature), 400, "not an edge report")
    });

    cases.case("control_pinned_edge_with_another_url_is_403", || {
        for (site, url, says) in [
            ("lon", ATTACKER, "pinned to URL"),
            ("fra", EDGES[0].2, "pinned to site"),
        ] {
            let body = report_body("lon-1", site, url).to_string();
            let signature = target.sign(body.as_bytes(), now_ms());
            target.refused(body.as_bytes(), Some(&signature), 403, says)?;
        }
        Ok(())
    });

    cases.case("control_unpinned_edge_is_403", || {
        let body = attack();
        let signature = target.sign(&body, now_ms());
        target.refused(&body, Some(&signature), 403, "not pinned")
    });

    cases.case("control_redirects_only_the_canonical_spelling", || {
        // Other spellings of a media path are no path of the layout: a problem, no redirect.
        for (path, status) in [
            ("//live/demo/master.m3u8", 400),
            ("/live/%64emo/master.m3u8", 400),
            ("/live/demo/../demo/master.m3u8", 400),
            ("/LIVE/demo/master.m3u8", 404),
            ("/live/demo/master.m3u8;x=1", 400),
            ("/live/demo/v720/media.m3u8?_HLS_msn=1&_HLS_msn=2", 400),
        ] {
            let (got, reason) = get(target.public, path, None)?;
            if got != status {
                return Err(format!("{path}: {got} {reason}"));
            }
        }
        // A viewer's own keycard and other parameters do not reach the edge.
        let mut stream = TcpStream::connect(target.public).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET /live/demo/stream.ts?track=v360&keycard=forged&x=%0d%0a HTTP/1.1\r\n\
             Host: control\r\nX-Forwarded-For: {LONDON_VIEWER}\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let expected = format!(
            "location: {}/live/demo/stream.ts?track=v360\r\n",
            EDGES[0].2
        );
        if !answer.starts_with("HTTP/1.1 302 ") || !answer.contains(&expected) {
            return Err(format!(
                "the redirect kept what the layout does not: {answer}"
            ));
        }
        target.unchanged()
    });

    rest::run(&target, cases);
}
