//! Control's front door: every connection's requests are read here first. Redirects, which
//! are nearly all of control's traffic, are answered here, request after request on a
//! kept-alive connection (pipelined ones in order), with no more work than finding the
//! request line and `X-Forwarded-For`. The first request of any other kind (a report, the
//! admin API, the dashboard and its event stream) hands the connection, with what was read of
//! it, to axum for the rest of its life (crate::connection).
//!
//! Timeouts (config `[timeouts]`): a head must arrive whole within `header` of its first byte
//! (`408` past it), a kept-alive connection may wait `idle` for its next request, and a write
//! that makes no progress for `write` ends the connection.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use bytes::{Buf as _, BytesMut};
use estuary_http::{Prefixed, read_request_bytes};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::redirect::Answer;
use crate::server::Control;

/// The largest request head read (request line and headers); larger is answered `431`.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most request headers read; more is answered `431`.
const MAX_HEADERS: usize = 64;

/// Serves `app` and the redirects on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    control: Arc<Control>,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(control.clone(), app.clone(), stream, peer));
                }
                Err(error) => {
                    // Out of file descriptors, most likely: let some connections end first.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

/// What to do with the head at the start of the buffer.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Its answer is written; the head took `consumed` bytes.
    Answered { consumed: usize, keep_alive: bool },
    /// Not a redirect: axum serves the connection from here on.
    HandOver,
}

/// Why a connection is closed with an answer of its own.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    TooLarge,
    Malformed,
    TimedOut,
}

impl Refusal {
    fn answer(&self) -> &'static [u8] {
        match self {
            Refusal::TooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Refusal::Malformed => {
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Refusal::TimedOut => {
                b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
        }
    }
}

async fn connection(
    control: Arc<Control>,
    app: axum::Router,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let timeouts = *control.timeouts();
    let mut buffer = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    // The connection's one timer, moved rather than made anew for each request.
    let mut deadline: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(timeouts.idle));
    let mut waiting_for_head = false;
    loop {
        match step(&control, peer.ip(), &buffer, &mut out) {
            Ok(Some(Step::Answered {
                consumed,
                keep_alive,
            })) => {
                buffer.advance(consumed);
                waiting_for_head = false;
                if !keep_alive {
                    if write_within(&mut stream, &out, timeouts.write).await {
                        let _ = stream.shutdown().await;
                    }
                    return;
                }
            }
            Ok(Some(Step::HandOver)) => {
                if !out.is_empty() && !write_within(&mut stream, &out, timeouts.write).await {
                    return;
                }
                crate::connection::serve_http(
                    app,
                    Prefixed::new(buffer.freeze(), stream),
                    peer,
                    timeouts,
                )
                .await;
                return;
            }
            Ok(None) => {
                // Everything buffered is answered (or a head is incomplete): send the answers
                // in one write, then read on.
                if !out.is_empty() {
                    if !write_within(&mut stream, &out, timeouts.write).await {
                        return;
                    }
                    out.clear();
                }
                if !waiting_for_head {
                    let wait = if buffer.is_empty() {
                        timeouts.idle
                    } else {
                        timeouts.header
                    };
                    deadline.as_mut().reset(Instant::now() + wait);
                    waiting_for_head = !buffer.is_empty();
                }
                tokio::select! {
                    read = read_request_bytes(&mut stream, &mut buffer) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if !waiting_for_head {
                                // The next head has started: it gets the header timeout.
                                deadline.as_mut().reset(Instant::now() + timeouts.header);
                                waiting_for_head = true;
                            }
                        }
                    },
                    () = deadline.as_mut() => {
                        if buffer.is_empty() {
                            return;
                        }
                        return refuse(stream, &out, Refusal::TimedOut, timeouts.write).await;
                    }
                }
            }
            Err(refusal) => return refuse(stream, &out, refusal, timeouts.write).await,
        }
    }
}

/// Writes `bytes` whole within `limit`; false if the peer took too long or went away.
async fn write_within(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

async fn refuse(mut stream: TcpStream, answered: &[u8], refusal: Refusal, limit: Duration) {
    let mut answer = answered.to_vec();
    answer.extend_from_slice(refusal.answer());
    if write_within(&mut stream, &answer, limit).await {
        let _ = stream.shutdown().await;
    }
}

/// Looks at the head at the start of `buffer` (sans IO): a redirect is answered into `out`;
/// anything else is handed over; `None` while the head is incomplete. Public for the fuzz
/// target (control/fuzz).
pub fn step(
    control: &Control,
    peer: IpAddr,
    buffer: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<Step>, Refusal> {
    if buffer.is_empty() {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut fields);
    let consumed = match head.parse(buffer) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::TooLarge);
        }
        Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD => {
            return Err(Refusal::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        // Not HTTP/1 (an HTTP/2 preface, garbage): hyper gives the answer it deserves.
        Err(_) => return Ok(Some(Step::HandOver)),
    };
    let (Some(method), Some(target), Some(minor)) = (head.method, head.path, head.version) else {
        return Err(Refusal::Malformed);
    };
    let head_only = method == "HEAD";
    let redirect = (method == "GET" || head_only)
        && (target.starts_with("/live/") || target.starts_with("/vod/"));
    if !redirect {
        return Ok(Some(Step::HandOver));
    }
    let mut keep_alive = minor == 1;
    let mut forwarded_for = None;
    for field in head.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = std::str::from_utf8(field.value).ok();
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && field.value.trim_ascii() != b"0")
        {
            // A GET with a body: rare enough that hyper may read it.
            return Ok(Some(Step::HandOver));
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let answer = control.answer(peer, path, query, forwarded_for);
    write_answer(out, &answer, head_only, keep_alive);
    Ok(Some(Step::Answered {
        consumed,
        keep_alive,
    }))
}

/// Writes `answer` as an HTTP/1.1 response.
fn write_answer(out: &mut Vec<u8>, answer: &Answer, head_only: bool, keep_alive: bool) {
    let (status, body) = match answer {
        Answer::Redirect(location) => {
            out.extend_from_slice(b"HTTP/1.1 302 Found\r\nlocation: ");
            out.extend_from_slice(location.as_bytes());
            out.extend_from_slice(b"\r\naccess-control-allow-origin: *\r\n");
            (StatusCode::FOUND, "")
        }
        Answer::Problem(status, reason) => {
            let _ = write!(
                out,
                "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            if *status == StatusCode::SERVICE_UNAVAILABLE {
                out.extend_from_slice(b"retry-after: 2\r\n");
            }
            (*status, reason.as_str())
        }
    };
    let newline = if status == StatusCode::FOUND {
        ""
    } else {
        "\n"
    };
    let _ = write!(
        out,
        "cache-control: no-store\r\ncontent-length: {}\r\n",
        body.len() + newline.len()
    );
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
        out.extend_from_slice(newline.as_bytes());
    }
}

/// The current time as an HTTP date, worked out once a second per thread.
fn with_date(use_it: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    DATE.with_borrow_mut(|(cached, date)| {
        if *cached != second {
            *cached = second;
            *date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        }
        use_it(date.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn control() -> Arc<Control> {
        let config = Config::parse(
            "trusted_proxies = [\"127.0.0.1/32\"]\n\n[[sites]]\nname = \"lon\"\nlatitude = 51.5\nlongitude = -0.13\ncost_per_gb = 0.02\ncapacity_mbps = 1000\n",
        )
        .unwrap();
        let control = Control::new(&config).unwrap();
        control
            .hear(crate::registry::tests::report("lon-1", "lon"))
            .unwrap();
        control
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn redirects_are_answered_and_pipelined_requests_follow_in_order() {
        let control = control();
        let requests = b"GET /live/demo/master.m3u8?x=1 HTTP/1.1\r\nHost: c\r\nX-Forwarded-For: 192.0.2.9\r\n\r\nHEAD /vod/demo/0-60/master.m3u8 HTTP/1.1\r\nConnection: close\r\n\r\nGET /healthz";
        let mut out = Vec::new();
        let Ok(Some(Step::Answered {
            consumed,
            keep_alive: true,
        })) = step(&control, LOCAL, requests, &mut out)
        else {
            panic!("the first request is a redirect");
        };
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 302 Found\r\nlocation: http://lon-1.example:8090/live/demo/master.m3u8?x=1\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("content-length: 0\r\n") && text.ends_with("\r\n\r\n"));
        let rest = &requests[consumed..];
        out.clear();
        assert_eq!(
            step(&control, LOCAL, rest, &mut out),
            Ok(Some(Step::Answered {
                consumed: rest.len() - b"GET /healthz".len(),
                keep_alive: false,
            }))
        );
        assert!(String::from_utf8_lossy(&out).contains("connection: close\r\n"));
        assert_eq!(step(&control, LOCAL, b"GET /healthz", &mut out), Ok(None));
        assert_eq!(
            step(&control, LOCAL, b"GET /healthz HTTP/1.1\r\n\r\n", &mut out),
            Ok(Some(Step::HandOver))
        );
        assert_eq!(
            step(
                &control,
                LOCAL,
                b"POST /live/demo/x HTTP/1.1\r\n\r\n",
                &mut out
            ),
            Ok(Some(Step::HandOver))
        );
    }

    #[test]
    fn problems_carry_their_reason_and_bad_heads_are_refused() {
        let control = control();
        let mut out = Vec::new();
        step(
            &control,
            LOCAL,
            b"GET /live/../x HTTP/1.1\r\n\r\n",
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let length: usize = text
            .split("content-length: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(body.len(), length, "{text}");

        let huge = format!(
            "GET /live/demo/x HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(
            step(&control, LOCAL, huge.as_bytes(), &mut Vec::new()),
            Err(Refusal::TooLarge)
        );
        assert_eq!(
            step(
                &control,
                LOCAL,
                b"GET /live/demo/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                &mut Vec::new()
            ),
            Ok(Some(Step::HandOver)),
            "hyper reads bodies"
        );
    }
}
