//! HTTP/1.x on plain TCP, served by the edge itself: request after request on a connection
//! (keep-alive, pipelined requests in order), through the same handler as every other
//! protocol. Whole cached bodies that were sealed in memory files are sent by the kernel
//! (`sendfile`), not copied out of the edge's memory for each viewer; bodies still arriving are
//! sent chunked as they grow. TLS and HTTP/2 connections go to hyper instead.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Buf as _, Bytes, BytesMut};
use estuary_http::head::{self, HeadError, ParsedRequest};
use estuary_http::response::{Framing, write_head};
use estuary_http::{Body, Limits, read_request_bytes, sealed};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::{Method, Response, Version};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::answer::{handle_routed, serve_continuous};
use crate::node::Edge;
use crate::route::{Route, route};

/// Bodies up to this long are copied behind the head (a copy costs less than the allocations
/// and the longer writev it saves); longer ones are written from where they are, in one writev
/// with the head.
const COPY_LIMIT: usize = 16 * 1024;

/// Serves the connection, whose first bytes (holding at least the first whole head) are in
/// `buffer`, until the client closes it, asks to close, goes idle, or breaks a rule.
pub async fn serve(
    edge: &Arc<Edge>,
    mut stream: TcpStream,
    mut buffer: BytesMut,
    client: IpAddr,
    mut closing: watch::Receiver<bool>,
) {
    let mut out = Vec::with_capacity(1024);
    let limits = edge.config().limits;
    let mut idle = Box::pin(tokio::time::sleep(limits.idle_timeout));
    loop {
        let next = next_request(&mut stream, &mut buffer, &mut idle, &limits, &mut closing);
        let incoming = match next.await {
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
        if skip_body(&mut stream, &mut buffer, incoming.body_length, &limits)
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
        let exchange = Exchange {
            head_only,
            http10,
            keep_alive: incoming.keep_alive,
            write_timeout: limits.write_timeout,
        };
        match respond(&mut stream, &mut out, response, exchange).await {
            // A server closing takes no further request on the connection.
            Ok(true) if incoming.keep_alive && !*closing.borrow() => {}
            _ => {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// The next request's head: parsed from what is buffered, else read within the limits. `None`
/// when the client closed or stayed idle between requests, or the server closes (`closing`)
/// while it waits for one. `idle` is the connection's one timer: moving a deadline later
/// costs next to nothing, registering a timer per request would not.
async fn next_request(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    idle: &mut Pin<Box<tokio::time::Sleep>>,
    limits: &Limits,
    closing: &mut watch::Receiver<bool>,
) -> Result<Option<ParsedRequest>, HeadError> {
    if let Some(parsed) = head::parse_request(buffer, limits)? {
        return Ok(Some(parsed));
    }
    if buffer.is_empty() {
        idle.as_mut().reset(Instant::now() + limits.idle_timeout);
        tokio::select! {
            read = read_request_bytes(stream, buffer) => match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
            () = idle.as_mut() => return Ok(None),
            Ok(()) = async { closing.wait_for(|closing| *closing).await.map(drop) } => {
                return Ok(None);
            }
        }
        if let Some(parsed) = head::parse_request(buffer, limits)? {
            return Ok(Some(parsed));
        }
    }
    // The head came in pieces: the rest must come within the head timeout.
    idle.as_mut().reset(Instant::now() + limits.head_timeout);
    loop {
        tokio::select! {
            read = read_request_bytes(stream, buffer) => match read {
                Ok(0) | Err(_) => return Err(HeadError::Closed),
                Ok(_) => {}
            },
            () = idle.as_mut() => return Err(HeadError::TimedOut),
        }
        if let Some(parsed) = head::parse_request(buffer, limits)? {
            return Ok(Some(parsed));
        }
    }
}

/// Reads and drops a request body of `length` bytes, within the head timeout.
async fn skip_body(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    length: u64,
    limits: &Limits,
) -> io::Result<()> {
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
    tokio::time::timeout(limits.head_timeout, skip)
        .await
        .unwrap_or(Err(io::ErrorKind::TimedOut.into()))
}

/// `wait` (for the socket to take more), given up after `limit`: a client that stops reading
/// is cut off rather than holding its connection and its body for ever. Only a write that
/// would block waits here, so a response the socket takes at once costs no timer.
async fn progress<T>(limit: Duration, wait: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Writes all of `bytes`, waiting (within `limit` each time) only when the socket is full.
async fn write_all(stream: &TcpStream, mut bytes: &[u8], limit: Duration) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                progress(limit, stream.writable()).await?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// How one response is written.
struct Exchange {
    head_only: bool,
    http10: bool,
    keep_alive: bool,
    /// How long a write may make no progress.
    write_timeout: Duration,
}

/// Writes the response: its head, then its body (none for HEAD). Gives whether the
/// connection can carry another request. Every write must make progress within the write
/// timeout.
async fn respond(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    response: Response<Body>,
    exchange: Exchange,
) -> io::Result<bool> {
    let Exchange {
        head_only,
        http10,
        keep_alive,
        write_timeout: limit,
    } = exchange;
    let (parts, mut body) = response.into_parts();
    let framing = Framing::of(parts.status, body.size_hint().exact(), http10, keep_alive);
    let (bodiless, chunked, keep_alive) = (framing.bodiless, framing.chunked, framing.keep_alive);
    write_head(out, parts.status, &parts.headers, &framing);

    if head_only || bodiless {
        write_all(stream, out, limit).await?;
        return Ok(keep_alive);
    }
    if let Some(sealed) = body.take_sealed() {
        send_more(stream, out, limit).await?;
        let mut sent = 0;
        let outcome = send_sealed(stream, &sealed, &mut sent, limit).await;
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
            write_all(stream, out, limit).await?;
        } else {
            write_all_vectored(stream, out, pieces, limit).await?;
        }
        body.count_sent(length as u64);
        return Ok(keep_alive);
    }
    write_all(stream, out, limit).await?;
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
            write_all_vectored(stream, size.as_bytes(), pieces, limit).await?;
        } else {
            write_all_vectored(stream, &[], [data].into(), limit).await?;
        }
    }
    if chunked {
        write_all(stream, b"0\r\n\r\n", limit).await?;
    }
    Ok(keep_alive)
}

/// Writes `bytes` with MSG_MORE, so that the kernel holds them for what follows (the body sent
/// by `sendfile`) rather than sending the head in a packet of its own.
async fn send_more(stream: &TcpStream, mut bytes: &[u8], limit: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    while !bytes.is_empty() {
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
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                progress(limit, stream.writable()).await?;
            }
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
    limit: Duration,
) -> io::Result<()> {
    let length = body.len() as u64;
    while *offset < length {
        let left = (length - *offset) as usize;
        match stream.try_io(Interest::WRITABLE, || {
            sealed::send_file(stream, body.file(), offset, left)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                progress(limit, stream.writable()).await?;
            }
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
    limit: Duration,
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
        let mut written = match stream.try_write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                progress(limit, stream.writable()).await?;
                continue;
            }
            Err(error) => return Err(error),
        };
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
