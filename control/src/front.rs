//! Control's front door: every connection's requests are read here first. A viewer's request,
//! nearly all of control's traffic, is answered here, request after request on a kept-alive
//! connection (pipelined ones in order), with estuary-http's request-head reader and response
//! writer and nothing else. The first request of any other kind (a report, the admin API, the
//! dashboard and its event stream, a path outside the public layout) hands the connection, with
//! what was read of it, to axum for the rest of its life (crate::connection).
//!
//! A request is a viewer's when it is a `GET` or `HEAD` of a media path of the public layout,
//! as `PublicPath::parse` reads it (`/live/…`, `/vod/…` in their one canonical spelling). Its
//! answer is said by crate::redirect. Timeouts and bounds are control's `Limits`: a head must
//! arrive whole within the head timeout of its first byte (`408` past it), a kept-alive
//! connection may wait the idle timeout for its next request, heads are at most 16 KiB and 64
//! headers (`431`), and a write that makes no progress for the write timeout ends the
//! connection.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use estuary_http::head::{self, HeadError};
use estuary_http::response::{Framing, write_head};
use estuary_http::{Body, Prefixed, read_request_bytes};
use estuary_proto::url::PublicPath;
use hyper::{Method, Response, Version};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::redirect;
use crate::state::Control;

/// What to do with the head at the start of the buffer.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Its answer is written; the head took `consumed` bytes.
    Answered { consumed: usize, keep_alive: bool },
    /// Not a viewer's request: axum serves the connection from here on.
    HandOver,
}

/// Serves one connection from `peer` until it ends: viewers here, the rest by `app`.
pub async fn connection(
    control: Arc<Control>,
    app: axum::Router,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let limits = *control.limits();
    let mut buffer = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    // The connection's one timer, moved rather than made anew for each request.
    let mut deadline: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(limits.idle_timeout));
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
                    if write_within(&mut stream, &out, limits.write_timeout).await {
                        let _ = stream.shutdown().await;
                    }
                    return;
                }
            }
            Ok(Some(Step::HandOver)) => {
                if !out.is_empty() && !write_within(&mut stream, &out, limits.write_timeout).await {
                    return;
                }
                crate::connection::serve_http(
                    app,
                    Prefixed::new(buffer.freeze(), stream),
                    peer,
                    limits,
                )
                .await;
                return;
            }
            Ok(None) => {
                // Everything buffered is answered (or a head is incomplete): send the answers
                // in one write, then read on.
                if !out.is_empty() {
                    if !write_within(&mut stream, &out, limits.write_timeout).await {
                        return;
                    }
                    out.clear();
                }
                if !waiting_for_head {
                    let wait = if buffer.is_empty() {
                        limits.idle_timeout
                    } else {
                        limits.head_timeout
                    };
                    deadline.as_mut().reset(Instant::now() + wait);
                    waiting_for_head = !buffer.is_empty();
                }
                tokio::select! {
                    read = read_request_bytes(&mut stream, &mut buffer) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if !waiting_for_head {
                                // The next head has started: it gets the head timeout.
                                deadline.as_mut().reset(Instant::now() + limits.head_timeout);
                                waiting_for_head = true;
                            }
                        }
                    },
                    () = deadline.as_mut() => {
                        if buffer.is_empty() {
                            return;
                        }
                        return refuse(stream, &out, HeadError::TimedOut, limits.write_timeout).await;
                    }
                }
            }
            Err(error) => return refuse(stream, &out, error, limits.write_timeout).await,
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

/// Sends the answers already made, then the refusal's, and closes.
async fn refuse(mut stream: TcpStream, answered: &[u8], error: HeadError, limit: Duration) {
    let mut answer = answered.to_vec();
    answer.extend_from_slice(error.response().unwrap_or_default());
    if write_within(&mut stream, &answer, limit).await {
        let _ = stream.shutdown().await;
    }
}

/// Looks at the head at the start of `buffer` (sans IO): a viewer's request is answered into
/// `out`; anything else is handed over; `None` while the head is incomplete; a head that is
/// too large or not HTTP/1 is refused. Public for the fuzz target (control/fuzz).
pub fn step(
    control: &Control,
    peer: IpAddr,
    buffer: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<Step>, HeadError> {
    if buffer.is_empty() {
        return Ok(None);
    }
    let limits = control.limits();
    let Some(line) = head::first_line(buffer, limits)? else {
        return Ok(None);
    };
    // HTTP/2 (which axum does not speak here), other methods, other paths: axum answers, so
    // that a report's chunked body is read by hyper rather than refused here.
    if line.http2 || (line.method != "GET" && line.method != "HEAD") {
        return Ok(Some(Step::HandOver));
    }
    let (path, query) = match line.target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (line.target.as_str(), None),
    };
    let public = match PublicPath::parse(path, query) {
        Ok(public) if public.is_media() => public,
        _ => return Ok(Some(Step::HandOver)),
    };
    let Some(parsed) = head::parse_request(buffer, limits)? else {
        return Ok(None);
    };
    if parsed.body_length > 0 {
        // A GET with a body: rare enough that hyper may read it.
        return Ok(Some(Step::HandOver));
    }
    let request = &parsed.request;
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    let answer = control.answer(peer, &public, forwarded_for);
    let keep_alive = write_response(
        out,
        redirect::response(&answer),
        request.method() == Method::HEAD,
        request.version() == Version::HTTP_10,
        parsed.keep_alive,
    );
    Ok(Some(Step::Answered {
        consumed: parsed.head_length,
        keep_alive,
    }))
}

/// Appends `response` (whose body is whole) to `out` as HTTP/1.1; says whether the connection
/// carries another request.
fn write_response(
    out: &mut Vec<u8>,
    response: Response<Body>,
    head_only: bool,
    http10: bool,
    keep_alive: bool,
) -> bool {
    let (parts, mut body) = response.into_parts();
    let pieces = body.take_ready().unwrap_or_default();
    let length: usize = pieces.iter().map(bytes::Bytes::len).sum();
    body.count_sent(length as u64);
    let framing = Framing::of(parts.status, Some(length as u64), http10, keep_alive);
    let mut head = Vec::with_capacity(512 + length);
    write_head(&mut head, parts.status, &parts.headers, &framing);
    out.extend_from_slice(&head);
    if !head_only && !framing.bodiless {
        for piece in &pieces {
            out.extend_from_slice(piece);
        }
    }
    framing.keep_alive
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Keys;

    fn control() -> Arc<Control> {
        crate::state::tests::control("trusted_proxies = [\"127.0.0.1/32\"]", Keys::default())
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// The status, the headers (lowercase) and the body of the first answer in `out`.
    fn first_answer(out: &[u8]) -> (u16, String, String) {
        let text = String::from_utf8(out.to_vec()).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .split("content-length: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        (
            status,
            head.to_owned(),
            rest[..length.min(rest.len())].to_owned(),
        )
    }

    #[test]
    fn viewers_are_answered_and_pipelined_requests_follow_in_order() {
        let control = control();
        let requests = b"GET /live/demo/master.m3u8?x=1 HTTP/1.1\r\nHost: c\r\nX-Forwarded-For: 192.0.2.9\r\n\r\nHEAD /vod/demo/0-60/master.m3u8 HTTP/1.1\r\nConnection: close\r\n\r\nGET /healthz";
        let mut out = Vec::new();
        let Ok(Some(Step::Answered {
            consumed,
            keep_alive: true,
        })) = step(&control, LOCAL, requests, &mut out)
        else {
            panic!("the first request is a viewer's");
        };
        let (status, head, body) = first_answer(&out);
        assert_eq!(status, 302, "{head}");
        assert!(
            head.contains("\r\nlocation: http://lon-1.example:8090/live/demo/master.m3u8\r\n"),
            "the layout has no x: {head}"
        );
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(head.contains("content-length: 0"), "{head}");
        assert!(body.is_empty());
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
        for other in [
            "GET /healthz HTTP/1.1\r\n\r\n",
            "GET /api/v1/edges HTTP/1.1\r\n\r\n",
            "POST /live/demo/master.m3u8 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "POST /api/v1/reports HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /live/demo/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            // Not the canonical spelling: axum says why.
            "GET //live/demo/master.m3u8 HTTP/1.1\r\n\r\n",
            "GET /live/%64emo/master.m3u8 HTTP/1.1\r\n\r\n",
            "GET /play/demo HTTP/1.1\r\n\r\n",
        ] {
            out.clear();
            assert_eq!(
                step(&control, LOCAL, other.as_bytes(), &mut out),
                Ok(Some(Step::HandOver)),
                "{other}"
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn problems_are_rfc_9457_and_bad_heads_are_refused() {
        let control = control();
        let mut out = Vec::new();
        // No origin says so, but nobody can take a viewer of a site with no live edge: none
        // here, so a control with no edge answers 503 with its reason.
        let empty = Control::with_keys(
            &crate::Config::parse("[[sites]]\nname = \"lon\"\nlatitude = 1\nlongitude = 1\ncost_per_gb = 0\ncapacity_mbps = 1\n").unwrap(),
            Keys::default(),
        )
        .unwrap();
        step(
            &empty,
            LOCAL,
            b"GET /live/demo/master.m3u8 HTTP/1.1\r\n\r\n",
            &mut out,
        )
        .unwrap();
        let (status, head, body) = first_answer(&out);
        assert_eq!(status, 503, "{head}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(head.contains("retry-after: 2"), "{head}");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], 503);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("no site can take viewers"),
            "{problem}"
        );

        let huge = format!(
            "GET /live/demo/x HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(control.limits().head_bytes)
        );
        assert_eq!(
            step(&control, LOCAL, huge.as_bytes(), &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
        let mut many = b"GET /live/demo/master.m3u8 HTTP/1.1\r\n".to_vec();
        for n in 0..=control.limits().headers {
            many.extend_from_slice(format!("x-{n}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            step(&control, LOCAL, &many, &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
        assert_eq!(
            step(&control, LOCAL, b"\x16\x03\x01\x02\x00", &mut Vec::new()),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            step(
                &control,
                LOCAL,
                b"GET /live/demo/master.m3u8 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                &mut Vec::new()
            ),
            Err(HeadError::Malformed),
            "a viewer's GET with a body of unknown length"
        );
    }

    #[test]
    fn http_1_0_viewers_get_their_answer_and_the_connection_ends() {
        let control = control();
        let mut out = Vec::new();
        let answered = step(
            &control,
            LOCAL,
            b"GET /live/demo/master.m3u8 HTTP/1.0\r\n\r\n",
            &mut out,
        );
        assert!(
            matches!(
                answered,
                Ok(Some(Step::Answered {
                    keep_alive: false,
                    ..
                }))
            ),
            "{answered:?}"
        );
        let (status, head, _) = first_answer(&out);
        assert_eq!(status, 302);
        assert!(head.contains("connection: close"), "{head}");
    }
}
