//! Hostile requests to a public edge: every other spelling of a path that needs a keycard
//! (over HTTP/1.1, HTTP/2 and HTTP/3), the packager's own endpoints, methods, heads, slow
//! clients, and a flood of decorated URLs; each gets a 4xx and not one byte of media.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{Running, estuary, free_port, require_tool, run_ok};
use crate::{Cases, Demo};

#[path = "edge_http3.rs"]
mod http3;

/// An answer read off a connection, as it came.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    /// The answer is `status` and carries no media: a short text reason, nothing a player
    /// could play.
    fn refused(&self, status: u16) -> Result<(), String> {
        if self.status != status {
            return Err(format!(
                "expected {status}, got {}: {}\n{}",
                self.status,
                self.head,
                String::from_utf8_lossy(&self.body)
            ));
        }
        no_media(&self.body)
    }
}

/// Whether `body` is free of media: no playlist, manifest, MPEG-TS, MP4 or MP3 bytes.
fn no_media(body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    let media = text.contains("#EXT")
        || text.contains("<MPD")
        || body.first() == Some(&0x47)
        || body.windows(4).any(|w| w == b"ftyp" || w == b"moof")
        || body.windows(2).any(|w| w[0] == 0xff && w[1] & 0xe0 == 0xe0);
    if media || body.len() > 512 {
        return Err(format!(
            "media in a refusal ({} bytes): {text:.200}",
            body.len()
        ));
    }
    Ok(())
}

/// Sends `request` as it is on a new connection to `address` and reads the answer until the
/// connection closes (at most 20 s).
fn exchange(address: &str, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(address).expect("connecting to the edge");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |at| at + 4);
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head,
        body: bytes[split..].to_vec(),
    }
}

/// `GET target` over HTTP/1.1, the bytes of the target exactly as given.
fn get(demo: &Demo, target: &str) -> Answer {
    exchange(
        demo.edge_address(),
        format!("GET {target} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `GET url` over HTTP/2 with prior knowledge, the path as given (curl --path-as-is).
fn get_h2(url: &str) -> Answer {
    let output = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "--path-as-is", "-D", "-"])
        .args(["--max-time", "20", url])
        .output()
        .expect("running curl");
    let bytes = output.stdout;
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |at| at + 4);
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    Answer {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0),
        head,
        body: bytes[split..].to_vec(),
    }
}

/// The demo process's resident memory, in kB.
fn resident_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn run(demo: &Demo, cases: &mut Cases) {
    require_tool("curl", "curl");
    spellings_over_http1(demo, cases);
    spellings_over_http2(demo, cases);
    packager_endpoints(demo, cases);
    methods_and_heads(demo, cases);
    keycards(demo, cases);
    slow_clients(demo, cases);
    memory_under_decorated_urls(demo, cases);
    http3::spellings_over_http3(demo, cases);
}

/// Every other spelling of a protected path, over HTTP/1.1.
fn spellings_over_http1(demo: &Demo, cases: &mut Cases) {
    let rows: &[(&str, &str, u16)] = &[
        ("edge_master_without_keycard", "/live/demo/master.m3u8", 403),
        ("edge_double_slash", "//live/demo/master.m3u8", 400),
        ("edge_triple_slash", "///live/demo/master.m3u8", 400),
        ("edge_slash_inside", "/live//demo/master.m3u8", 400),
        ("edge_trailing_slash", "/live/demo/master.m3u8/", 400),
        ("edge_encoded_letter", "/live/%64emo/master.m3u8", 400),
        ("edge_encoded_slash", "/live%2fdemo/master.m3u8", 400),
        ("edge_encoded_dot", "/live/demo/%2e/master.m3u8", 400),
        ("edge_dot_segment", "/live/demo/./master.m3u8", 400),
        ("edge_dot_dot_segment", "/live/demo/x/../master.m3u8", 400),
        (
            "edge_double_encoded_slash",
            "/live/%252fdemo/master.m3u8",
            400,
        ),
        (
            "edge_semicolon_parameter",
            "/live/demo/master.m3u8;x=1",
            400,
        ),
        ("edge_semicolon_in_segment", "/live;x/demo/master.m3u8", 400),
        ("edge_upper_case_prefix", "/LIVE/demo/master.m3u8", 404),
        ("edge_mixed_case_prefix", "/Live/demo/master.m3u8", 404),
        ("edge_upper_case_file", "/live/demo/MASTER.M3U8", 404),
        ("edge_leading_zero_segment", "/live/demo/v720/01.m4s", 404),
        ("edge_stream_double_slash", "//live/demo/stream.mp3", 400),
        ("edge_stream_without_keycard", "/live/demo/stream.mp3", 403),
        ("edge_stream_ts_encoded", "/live/demo/stream%2ets", 400),
        (
            "edge_stream_bad_track",
            "/live/demo/stream.ts?track=../v1",
            404,
        ),
        (
            "edge_vod_without_keycard",
            "/vod/demo/1-2000000000/master.m3u8",
            403,
        ),
        (
            "edge_vod_double_slash",
            "//vod/demo/1-2000000000/master.m3u8",
            400,
        ),
        (
            "edge_vod_dot_dot",
            "/vod/demo/1-2/../../live/demo/master.m3u8",
            400,
        ),
        (
            "edge_absolute_form_double_slash",
            "http://edge//live/demo/master.m3u8",
            400,
        ),
        (
            "edge_absolute_form_without_keycard",
            "http://edge/live/demo/master.m3u8",
            403,
        ),
    ];
    for (name, target, status) in rows {
        cases.case(name, || get(demo, target).refused(*status));
    }
    cases.case("edge_backslashes", || {
        let answer = get(demo, "/live\\demo\\master.m3u8");
        if !(400..500).contains(&answer.status) {
            return Err(format!("got {}", answer.status));
        }
        no_media(&answer.body)
    });
    cases.case("edge_host_with_a_path", || {
        exchange(
            demo.edge_address(),
            b"GET /master.m3u8 HTTP/1.1\r\nHost: edge/live/demo\r\nConnection: close\r\n\r\n",
        )
        .refused(404)
    });
    cases.case("edge_keycard_in_another_spelling_is_refused", || {
        // Even with a good keycard, another spelling is not the path the keycard allows.
        let target = format!("//live/demo/master.m3u8?keycard={}", demo.keycard);
        get(demo, &target).refused(400)
    });
}

/// The same spellings as HTTP/2 pseudo-headers (`:path`).
fn spellings_over_http2(demo: &Demo, cases: &mut Cases) {
    let rows: &[(&str, &str, u16)] = &[
        (
            "edge_h2_master_without_keycard",
            "/live/demo/master.m3u8",
            403,
        ),
        ("edge_h2_double_slash", "//live/demo/master.m3u8", 400),
        ("edge_h2_encoded_letter", "/live/%64emo/master.m3u8", 400),
        ("edge_h2_dot_segment", "/live/demo/./master.m3u8", 400),
        ("edge_h2_stream_double_slash", "//live/demo/stream.mp3", 400),
        (
            "edge_h2_admin",
            "/admin/metadata?mount=/live/demo/stream.mp3&mode=updinfo&song=x",
            404,
        ),
    ];
    for (name, path, status) in rows {
        cases.case(name, || {
            get_h2(&format!("{}{path}", demo.edge)).refused(*status)
        });
    }
}

/// What a packager serves besides the layout is not reachable through an edge.
fn packager_endpoints(demo: &Demo, cases: &mut Cases) {
    cases.case("edge_admin_metadata_is_not_forwarded", || {
        let target = "/admin/metadata?mount=/live/demo/stream.mp3&mode=updinfo&song=pwned";
        get(demo, target).refused(404)
    });
    cases.case("edge_admin_anything_is_not_forwarded", || {
        get(demo, "/admin/").refused(400)?;
        get(demo, "/admin/reload").refused(404)
    });
    cases.case("edge_ingest_get_is_not_forwarded", || {
        get(demo, "/ingest/demo/v720").refused(404)
    });
    cases.case("edge_ingest_post_is_not_forwarded", || {
        exchange(
            demo.edge_address(),
            b"POST /ingest/demo/v720 HTTP/1.1\r\nHost: edge\r\nContent-Length: 4\r\nConnection: close\r\n\r\nmoof",
        )
        .refused(404)
    });
}

fn methods_and_heads(demo: &Demo, cases: &mut Cases) {
    cases.case("edge_post_to_media_is_refused", || {
        exchange(
            demo.edge_address(),
            b"POST /live/demo/master.m3u8 HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .refused(405)
    });
    cases.case("edge_head_double_slash", || {
        let answer = exchange(
            demo.edge_address(),
            b"HEAD //live/demo/master.m3u8 HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n",
        );
        if answer.status != 400 || !answer.body.is_empty() {
            return Err(format!(
                "{} with {} bytes",
                answer.status,
                answer.body.len()
            ));
        }
        Ok(())
    });
    cases.case("edge_chunked_get_is_refused", || {
        exchange(
            demo.edge_address(),
            b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .refused(400)
    });
    cases.case("edge_oversized_head", || {
        let request = format!(
            "GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: edge\r\nX: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        exchange(demo.edge_address(), request.as_bytes()).refused(431)
    });
    cases.case("edge_too_many_headers", || {
        let mut request = String::from("GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: edge\r\n");
        for n in 0..100 {
            request.push_str(&format!("X-{n}: y\r\n"));
        }
        request.push_str("\r\n");
        exchange(demo.edge_address(), request.as_bytes()).refused(431)
    });
    cases.case("edge_bad_blocking_query", || {
        let target = format!(
            "/live/demo/v720/media.m3u8?_HLS_msn=x&keycard={}",
            demo.keycard
        );
        get(demo, &target).refused(400)
    });
}

fn keycards(demo: &Demo, cases: &mut Cases) {
    cases.case("edge_good_keycard_plays", || {
        let answer = get(
            demo,
            &format!("/live/demo/master.m3u8?keycard={}", demo.keycard),
        );
        let text = String::from_utf8_lossy(&answer.body);
        if answer.status == 200 && text.starts_with("#EXTM3U") {
            Ok(())
        } else {
            Err(format!("{}: {text:.200}", answer.status))
        }
    });
    cases.case("edge_keycard_of_another_channel", || {
        let target = format!("/live/other/master.m3u8?keycard={}", demo.keycard);
        get(demo, &target).refused(403)
    });
    cases.case("edge_tampered_keycard", || {
        let tampered = demo.keycard.replacen("exp=", "exp=9", 1);
        get(demo, &format!("/live/demo/master.m3u8?keycard={tampered}")).refused(403)
    });
    cases.case("edge_keycard_for_everything_signed_elsewhere", || {
        let forged = format!("exp=4000000000~acl=/*~hmac={}", "ab".repeat(32));
        get(demo, &format!("/live/demo/stream.mp3?keycard={forged}")).refused(403)
    });
}

/// A client that sends its request a byte a second is cut off within the head timeout, over
/// HTTP/1.1 and HTTP/2.
fn slow_clients(demo: &Demo, cases: &mut Cases) {
    const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
    let dribble = |prefix: &[u8], slow: &[u8]| -> Result<Duration, String> {
        let mut stream = TcpStream::connect(demo.edge_address()).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).ok();
        stream.write_all(prefix).map_err(|e| e.to_string())?;
        let started = Instant::now();
        for byte in slow.iter().cycle() {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            if started.elapsed() > HEAD_TIMEOUT + Duration::from_secs(5) {
                return Err("still open 5 s past the head timeout".into());
            }
        }
        Ok(started.elapsed())
    };
    cases.case("edge_slowloris_http1", || {
        let took = dribble(
            b"",
            b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: edge\r\n",
        )?;
        println!(
            "    HTTP/1.1 slowloris cut off after {:.1} s",
            took.as_secs_f64()
        );
        if took < HEAD_TIMEOUT - Duration::from_secs(1) {
            return Err(format!("cut off after only {took:?}"));
        }
        Ok(())
    });
    cases.case("edge_slowloris_http2", || {
        // The preface and an empty SETTINGS frame at once, then a HEADERS frame a byte a
        // second.
        let mut prefix = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        prefix.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let headers = [0, 0, 40, 1, 4, 0, 0, 0, 1, 0x82, 0x86, 0x84];
        let took = dribble(&prefix, &headers)?;
        println!(
            "    HTTP/2 slowloris cut off after {:.1} s",
            took.as_secs_f64()
        );
        Ok(())
    });
}

/// 10,000 requests whose queries are all different (a cache-buster, a parameter of its own,
/// the keycard): they ask for one object, so the edge's memory stays where it was.
fn memory_under_decorated_urls(demo: &Demo, cases: &mut Cases) {
    cases.case("edge_random_queries_leave_memory_flat", || {
        let send = |count: u32, seed: u64| -> Result<(), String> {
            let mut stream = TcpStream::connect(demo.edge_address()).map_err(|e| e.to_string())?;
            let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
            let keycard = demo.keycard.clone();
            let writer = std::thread::spawn(move || {
                let mut x = seed;
                for _ in 0..count {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let request = format!(
                        "GET /live/demo/master.m3u8?cb={x:x}&keycard={keycard}&p{x:x}={x} HTTP/1.1\r\nHost: edge\r\n\r\n"
                    );
                    if stream.write_all(request.as_bytes()).is_err() {
                        break;
                    }
                }
                let _ = stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
            });
            reader.set_read_timeout(Some(Duration::from_secs(120))).ok();
            let mut answers = Vec::new();
            let _ = reader.read_to_end(&mut answers);
            writer.join().map_err(|_| "the writer failed")?;
            let ok = answers.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
            if ok < count as usize {
                let statuses: std::collections::BTreeMap<String, usize> = answers
                    .windows(12)
                    .filter(|w| w.starts_with(b"HTTP/1.1 "))
                    .fold(Default::default(), |mut seen, w| {
                        *seen.entry(String::from_utf8_lossy(&w[9..]).into_owned()).or_default() += 1;
                        seen
                    });
                return Err(format!("{ok} of {count} answered 200: {statuses:?}"));
            }
            Ok(())
        };
        send(1_000, 1)?;
        let before = resident_kb(demo.pid());
        send(10_000, 7)?;
        let after = resident_kb(demo.pid());
        println!(
            "    resident memory {before} kB before 10,000 decorated requests, {after} kB after"
        );
        if after > before + before / 10 {
            return Err(format!("resident memory grew from {before} kB to {after} kB"));
        }
        Ok(())
    });
}
