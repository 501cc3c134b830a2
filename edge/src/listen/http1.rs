//! HTTP/1.x on plain TCP, served by the edge itself: request after request on a connection
//! (keep-alive, pipelined requests in order), through the same handler as every other
//! protocol. Whole cached bodies that were sealed in memory files are sent by the kernel
//! (`sendfile`), not copied out of the edge's memory for each viewer; bodies still arriving are
//! sent chunked as they grow. TLS and HTTP/2 connections go to hyper instead.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::time::Instant;

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

use crate::body::Body;
use estuary_proto::io::read_request_bytes;

use super::porter::{HEAD_TIMEOUT, HeadError, MAX_HEAD};
use crate::answer::{handle_routed, serve_continuous};
use crate::node::Edge;
use crate::route::{Route, route};
use crate::sealed;

/// How long a kept-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write to a client may make no progress: one that stops reading is cut off
/// rather than holding its connection and the body it was sent for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most request headers read; more is answered `431`.
const MAX_HEADERS: usize = 64;
/// The largest request body read (and thrown away: the edge serves GET and HEAD).
const MAX_REQUEST_BODY: u64 = 64 * 1024;
/// Bodies up to this long are copied behind the head (a copy costs less than the allocations
/// and the longer writev it saves); longer ones are written from where they are, in one writev
/// with the head.
const COPY_LIMIT: usize = 16 * 1024;

/// A request as read off the connection, and what the connection does after it.
pub struct ParsedRequest {
    pub request: Request<()>,
    /// Bytes of the buffer the head took.
    pub head_length: usize,
    /// The request body's length, to be read past.
    pub body_length: u64,
    pub keep_alive: bool,
}

/// Serves the connection, whose first bytes (holding at least the first whole head) are in
/// `buffer`, until the client closes it, asks to close, goes idle, or breaks a rule.
pub async fn serve(edge: &Arc<Edge>, mut stream: TcpStream, mut buffer: BytesMut, client: IpAddr) {
    let mut out = Vec::with_capacity(1024);
    let mut idle = Box::pin(tokio::time::sleep(IDLE_TIMEOUT));
    loop {
        let incoming = match next_request(&mut stream, &mut buffer, &mut idle).await {
            Ok(Some(incoming)) => incoming,
            Ok(None) => return,
            Err(error) => {
                if let Some(answer) = error.response() {
                    let _ = stream.write_all(answer).await;
                }
                let _ = stream.shutdown().await;
                return;
            }
        };
        buffer.advance(incoming.head_length);
        if skip_body(&mut stream, &mut buffer, incoming.body_length)
            .await
            .is_err()
        {
            return;
        }
        let head_only = incoming.request.method() == Method::HEAD;
        let http10 = incoming.request.version() == Version::HTTP_10;
        let routed = route(incoming.request.method(), incoming.request.uri());
        let response = if let Route::Stream(path) = routed {
            // The fan-out engine takes the socket for good, unless the bouncers say no.
            let request = incoming.request;
            match serve_continuous(edge, stream, client, request, path).await {
                Ok(()) => return,
                Err(refused) => {
                    let (socket, refusal) = *refused;
                    stream = socket;
                    refusal
                }
            }
        } else {
            handle_routed(edge, client, incoming.request, routed).await
        };
        match respond(
            &mut stream,
            &mut out,
            response,
            head_only,
            http10,
            incoming.keep_alive,
        )
        .await
        {
            Ok(true) if incoming.keep_alive => {}
            _ => {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// The next request's head: parsed from what is buffered, else read within the limits. `None`
/// when the client closed or stayed idle between requests. `idle` is the connection's one
/// timer: moving a deadline later costs next to nothing, registering a timer per request
/// would not.
async fn next_request(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    idle: &mut Pin<Box<tokio::time::Sleep>>,
) -> Result<Option<ParsedRequest>, HeadError> {
    if let Some(parsed) = parse(buffer)? {
        return Ok(Some(parsed));
    }
    if buffer.is_empty() {
        idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
        tokio::select! {
            read = read_request_bytes(stream, buffer) => match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
            () = idle.as_mut() => return Ok(None),
        }
        if let Some(parsed) = parse(buffer)? {
            return Ok(Some(parsed));
        }
    }
    // The head came in pieces: the rest must come within the head timeout.
    idle.as_mut().reset(Instant::now() + HEAD_TIMEOUT);
    loop {
        tokio::select! {
            read = read_request_bytes(stream, buffer) => match read {
                Ok(0) | Err(_) => return Err(HeadError::Closed),
                Ok(_) => {}
            },
            () = idle.as_mut() => return Err(HeadError::TimedOut),
        }
        if let Some(parsed) = parse(buffer)? {
            return Ok(Some(parsed));
        }
    }
}

/// Parses a request head at the start of `buffer` (sans IO): `None` while more bytes are
/// needed.
pub fn parse(buffer: &[u8]) -> Result<Option<ParsedRequest>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_length = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HeadError::Malformed);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
    let uri = Uri::try_from(target).map_err(|_| HeadError::Malformed)?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut body_length = 0;
    let mut connection_close = minor == 0;
    for field in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| HeadError::Malformed)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| HeadError::Malformed)?;
        if name == header::CONTENT_LENGTH {
            body_length = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or(HeadError::Malformed)?;
            if body_length > MAX_REQUEST_BODY {
                return Err(HeadError::BodyTooLarge);
            }
        } else if name == header::TRANSFER_ENCODING {
            // A GET or HEAD has no use for a body of unknown length.
            return Err(HeadError::Malformed);
        } else if name == header::CONNECTION {
            let tokens = value.to_str().unwrap_or("");
            for token in tokens.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    connection_close = false;
                }
            }
        }
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *request.headers_mut() = headers;
    Ok(Some(ParsedRequest {
        request,
        head_length,
        body_length,
        keep_alive: !connection_close,
    }))
}

/// Reads and drops a request body of `length` bytes, within the head timeout.
async fn skip_body(stream: &mut TcpStream, buffer: &mut BytesMut, length: u64) -> io::Result<()> {
    if length == 0 {
        return Ok(());
    }
    let mut left = length;
    let skip = async {
        loop {
            let here = left.min(buffer.len() as u64);
            buffer.advance(here as usize);
            left -= here;
            if left == 0 {
                return Ok(());
            }
            buffer.reserve(4096);
            if stream.read_buf(buffer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, skip)
        .await
        .unwrap_or(Err(io::ErrorKind::TimedOut.into()))
}

/// `write` (one step of writing that makes some progress), given up after [`WRITE_TIMEOUT`].
async fn progress<T>(write: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Writes the response: its head, then its body (none for HEAD). Gives whether the
/// connection can carry another request. Every write must make progress within
/// [`WRITE_TIMEOUT`].
async fn respond(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    response: Response<Body>,
    head_only: bool,
    http10: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let bodiless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    // A body of unknown length is chunked for HTTP/1.1 and ends with the connection for 1.0.
    let chunked = length.is_none() && !bodiless && !http10;
    let keep_alive = keep_alive && (length.is_some() || chunked || bodiless);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !bodiless {
        match length {
            Some(length) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa(length, &mut [0; 20]));
                out.extend_from_slice(b"\r\n");
            }
            None if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            None => {}
        }
    }
    match (keep_alive, http10) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, false) => {}
    }
    out.extend_from_slice(b"\r\n");

    if head_only || bodiless {
        progress(stream.write_all(out)).await?;
        return Ok(keep_alive);
    }
    if let Some(sealed) = body.take_sealed() {
        send_more(stream, out).await?;
        let mut sent = 0;
        let outcome = send_sealed(stream, &sealed, &mut sent).await;
        body.count_sent(sent);
        outcome?;
        return Ok(keep_alive);
    }
    if let Some(pieces) = body.take_ready() {
        // A whole body that was not sealed (a short one): short ones are copied behind the
        // head and go in one write; longer ones go from where they are, with the head, in one
        // writev.
        let length: usize = pieces.iter().map(Bytes::len).sum();
        if length <= COPY_LIMIT {
            for piece in &pieces {
                out.extend_from_slice(piece);
            }
            progress(stream.write_all(out)).await?;
        } else {
            write_all_vectored(stream, out, pieces).await?;
        }
        body.count_sent(length as u64);
        return Ok(keep_alive);
    }
    progress(stream.write_all(out)).await?;
    // A growing body, piece by piece as it comes; an error ends the connection without the
    // last chunk, so the client does not take a cut-short body for whole.
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            let pieces = [data, Bytes::from_static(b"\r\n")].into();
            write_all_vectored(stream, size.as_bytes(), pieces).await?;
        } else {
            write_all_vectored(stream, &[], [data].into()).await?;
        }
    }
    if chunked {
        progress(stream.write_all(b"0\r\n\r\n")).await?;
    }
    Ok(keep_alive)
}

/// Writes `bytes` with MSG_MORE, so that the kernel holds them for what follows (the body sent
/// by `sendfile`) rather than sending the head in a packet of its own.
async fn send_more(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    while !bytes.is_empty() {
        progress(stream.writable()).await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: sends from a valid slice on an open socket.
            let sent = unsafe {
                libc::send(
                    stream.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_MORE | libc::MSG_NOSIGNAL,
                )
            };
            if sent < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(sent as usize)
            }
        });
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) => bytes = &bytes[sent..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Has the kernel send a sealed body from its memory file to the socket; `offset` says how far
/// it got, also when it fails.
async fn send_sealed(
    stream: &TcpStream,
    body: &sealed::Sealed,
    offset: &mut u64,
) -> io::Result<()> {
    let length = body.len() as u64;
    while *offset < length {
        progress(stream.writable()).await?;
        let left = (length - *offset) as usize;
        match stream.try_io(Interest::WRITABLE, || {
            sealed::send_file(stream, body.file(), offset, left)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Writes `head`, then every piece, with as few system calls as the socket allows.
async fn write_all_vectored(
    stream: &mut TcpStream,
    mut head: &[u8],
    mut pieces: VecDeque<Bytes>,
) -> io::Result<()> {
    while !head.is_empty() || !pieces.is_empty() {
        let mut slices = [IoSlice::new(&[]); 64];
        let mut count = 0;
        if !head.is_empty() {
            slices[0] = IoSlice::new(head);
            count = 1;
        }
        for piece in pieces.iter().take(slices.len() - count) {
            slices[count] = IoSlice::new(piece);
            count += 1;
        }
        let mut written = progress(stream.write_vectored(&slices[..count])).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = written.min(head.len());
        head = &head[from_head..];
        written -= from_head;
        while let Some(piece) = pieces.front_mut() {
            if written < piece.len() {
                piece.advance(written);
                break;
            }
            written -= piece.len();
            pieces.pop_front();
        }
    }
    Ok(())
}

/// The decimal digits of `value`, written at the end of `digits`.
fn itoa(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[at..];
        }
    }
}

/// The current time as an HTTP date (RFC 9110, 5.6.7), worked out once a second per thread.
/// The second is read from the coarse clock, which costs less than the precise one.
fn with_date(use_it: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let mut coarse = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel writes the time into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut coarse) };
    DATE.with_borrow_mut(|(cached, date)| {
        if *cached != coarse.tv_sec {
            *cached = coarse.tv_sec;
            *date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(coarse.tv_sec as u64));
        }
        use_it(date.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_with_their_connection_rules() {
        let head = b"GET /live/demo/master.m3u8?keycard=x HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let incoming = parse(head).unwrap().unwrap();
        assert_eq!(incoming.request.uri().path(), "/live/demo/master.m3u8");
        assert_eq!(incoming.request.uri().query(), Some("keycard=x"));
        assert_eq!(incoming.request.headers()["host"], "a");
        assert_eq!(&head[incoming.head_length..], b"GET /next");
        assert!(incoming.keep_alive);

        let close = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!close.keep_alive);
        let old = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!old.keep_alive);
        let old_kept = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(old_kept.keep_alive);
        assert_eq!(old_kept.request.version(), Version::HTTP_10);
        let with_body = parse(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(with_body.body_length, 5);

        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").err(),
            Some(HeadError::Malformed)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").err(),
            Some(HeadError::BodyTooLarge)
        );
        assert_eq!(
            parse(b"\x16\x03\x01garbage\r\n\r\n").err(),
            Some(HeadError::Malformed)
        );
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(parse(&long).err(), Some(HeadError::TooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn numbers_and_dates_are_written_as_http_wants_them() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(1_048_576, &mut [0; 20]), b"1048576");
        assert_eq!(itoa(u64::MAX, &mut [0; 20]), b"18446744073709551615");
        with_date(|date| {
            let date = std::str::from_utf8(date).unwrap();
            assert_eq!(date.len(), 29, "{date}");
            assert!(date.ends_with(" GMT"), "{date}");
        });
    }
}
