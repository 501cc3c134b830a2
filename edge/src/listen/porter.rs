//! The porter: the first thing a connection meets. It reads the first request head itself,
//! within the head size and time limits, and decides who serves the connection: plain
//! HTTP/1.x goes to the edge's own HTTP/1 engine, HTTP/2 with prior knowledge and everything
//! over TLS to hyper, with the bytes already read put back in front. From a trusted proxy, a
//! PROXY protocol header (version 1 or 2) before the request names the client.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use estuary_http::head::{self, FirstLine, HTTP2_PREFACE, HeadError};
use estuary_http::{Limits, Prefixed};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads into `buffer` from `stream` until `parse` finds what it looks for, within the head
/// timeout and size limit; on a bad start, answers (when there is an answer), closes, and
/// gives the reason.
async fn read_until<S, T>(
    stream: &mut S,
    buffer: &mut BytesMut,
    limits: &Limits,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>, HeadError>,
) -> Result<T, HeadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let read = async {
        loop {
            if let Some(found) = parse(buffer)? {
                return Ok(found);
            }
            let mut piece = [0u8; 2048];
            // Room for a head, the preface before it, and a PROXY header.
            let room = (limits.head_bytes + HTTP2_PREFACE.len() + 600).saturating_sub(buffer.len());
            if room == 0 {
                return Err(HeadError::TooLarge);
            }
            let count = stream
                .read(&mut piece[..room.min(2048)])
                .await
                .map_err(|_| HeadError::Closed)?;
            if count == 0 {
                return Err(HeadError::Closed);
            }
            buffer.extend_from_slice(&piece[..count]);
        }
    };
    let outcome = match tokio::time::timeout(limits.head_timeout, read).await {
        Ok(outcome) => outcome,
        Err(_) => Err(HeadError::TimedOut),
    };
    if let Err(error) = &outcome
        && let Some(answer) = error.response()
    {
        let _ = stream.write_all(answer).await;
        let _ = stream.shutdown().await;
    }
    outcome
}

/// For a connection from a trusted proxy: the PROXY protocol header, if one comes first. Gives
/// the client it names and the bytes read past it (the start of the request, or of TLS).
pub async fn read_proxy(
    stream: &mut TcpStream,
    limits: &Limits,
) -> Result<(Option<IpAddr>, Bytes), HeadError> {
    let mut buffer = BytesMut::with_capacity(256);
    let (client, length) =
        read_until(stream, &mut buffer, limits, estuary_http::proxy::parse).await?;
    let _ = buffer.split_to(length);
    Ok((client, buffer.freeze()))
}

/// Reads the first request head of `stream`, whose first bytes (`already`) were read before;
/// gives the head and the connection with everything read put back in front.
pub async fn admit<S>(
    mut stream: S,
    already: Bytes,
    limits: &Limits,
) -> Result<(FirstLine, Prefixed<S>), HeadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::from(&already[..]);
    let head = read_until(&mut stream, &mut buffer, limits, |bytes| {
        head::first_line(bytes, limits)
    })
    .await?;
    Ok((head, Prefixed::new(buffer.freeze(), stream)))
}
