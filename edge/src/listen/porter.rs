//! The porter: the first thing a connection meets. It reads the request head itself, within a
//! size and a time limit, and decides who serves the connection: plain HTTP/1.x goes to the
//! edge's own HTTP/1 engine, HTTP/2 with prior knowledge and everything over TLS to hyper, with
//! the bytes already read put back in front; continuous-stream requests will be handed to the
//! fan-out engine here instead. From a
//! trusted proxy, a PROXY protocol header (version 1 or 2) before the request names the
//! client.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
pub use estuary_proto::io::Prefixed;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// What an HTTP/2 client with prior knowledge sends first.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The PROXY protocol: version 1 starts with this text and is at most 107 bytes long...
const PROXY_V1: &[u8] = b"PROXY ";
const PROXY_V1_MAX: usize = 107;
/// ...and version 2 with this signature.
const PROXY_V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The request line of a connection's first request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub http2: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("the request head did not arrive within {HEAD_TIMEOUT:?}")]
    TimedOut,
    #[error("the connection closed before a request head")]
    Closed,
    #[error("the request line is malformed")]
    Malformed,
    #[error("the request has a body larger than the edge reads")]
    BodyTooLarge,
}

impl HeadError {
    /// The answer written before closing, if any.
    pub fn response(&self) -> Option<&'static [u8]> {
        match self {
            HeadError::TooLarge => Some(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ),
            HeadError::TimedOut => {
                Some(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            }
            HeadError::Malformed => {
                Some(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            }
            HeadError::BodyTooLarge => Some(
                b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ),
            HeadError::Closed => None,
        }
    }
}

/// Looks for a whole head in `buffer` (sans IO): `Ok(None)` while more bytes are needed.
pub fn parse_head(buffer: &[u8]) -> Result<Option<Head>, HeadError> {
    if buffer.starts_with(HTTP2_PREFACE) {
        return Ok(Some(Head {
            method: "PRI".into(),
            target: "*".into(),
            http2: true,
        }));
    }
    if HTTP2_PREFACE.starts_with(buffer) {
        return Ok(None);
    }
    let Some(end) = find(buffer, b"\r\n\r\n") else {
        if buffer.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        // A request line must start with a method: reject binary garbage early.
        if !buffer
            .iter()
            .take_while(|byte| **byte != b' ')
            .all(u8::is_ascii_uppercase)
        {
            return Err(HeadError::Malformed);
        }
        return Ok(None);
    };
    if end + 4 > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let line_end = find(buffer, b"\r\n").unwrap_or(end);
    let line = std::str::from_utf8(&buffer[..line_end]).map_err(|_| HeadError::Malformed)?;
    let mut fields = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(HeadError::Malformed);
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !version.starts_with("HTTP/1.")
    {
        return Err(HeadError::Malformed);
    }
    Ok(Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        http2: false,
    }))
}

/// Reads a PROXY protocol header at the start of `buffer` (sans IO): `Ok(None)` while more
/// bytes are needed; else the client it names (none for `UNKNOWN` or `LOCAL`) and how many
/// bytes the header took. A buffer that starts with neither signature has no header.
pub fn parse_proxy(buffer: &[u8]) -> Result<Option<(Option<IpAddr>, usize)>, HeadError> {
    let needed = |signature: &[u8]| buffer.len() < signature.len() && signature.starts_with(buffer);
    if needed(PROXY_V1) || needed(PROXY_V2) {
        return Ok(None);
    }
    if buffer.starts_with(PROXY_V1) {
        let Some(end) = find(&buffer[..buffer.len().min(PROXY_V1_MAX)], b"\r\n") else {
            return if buffer.len() >= PROXY_V1_MAX {
                Err(HeadError::Malformed)
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&buffer[..end]).map_err(|_| HeadError::Malformed)?;
        let fields: Vec<&str> = line.split(' ').collect();
        let client = match fields.as_slice() {
            ["PROXY", "UNKNOWN", ..] => None,
            [
                "PROXY",
                "TCP4" | "TCP6",
                source,
                destination,
                source_port,
                destination_port,
            ] => {
                let source: IpAddr = source.parse().map_err(|_| HeadError::Malformed)?;
                let _: IpAddr = destination.parse().map_err(|_| HeadError::Malformed)?;
                for port in [source_port, destination_port] {
                    port.parse::<u16>().map_err(|_| HeadError::Malformed)?;
                }
                Some(source)
            }
            _ => return Err(HeadError::Malformed),
        };
        return Ok(Some((client, end + 2)));
    }
    if buffer.starts_with(PROXY_V2) {
        let Some(header) = buffer.get(..16) else {
            return Ok(None);
        };
        let (version_command, family) = (header[12], header[13]);
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if version_command >> 4 != 2 || length > 512 {
            return Err(HeadError::Malformed);
        }
        let Some(addresses) = buffer.get(16..16 + length) else {
            return Ok(None);
        };
        let client = match (version_command & 0x0f, family >> 4) {
            (0, _) => None, // LOCAL: the proxy's own connection (a health check)
            (1, 1) if addresses.len() >= 12 => Some(IpAddr::from(
                <[u8; 4]>::try_from(&addresses[..4]).map_err(|_| HeadError::Malformed)?,
            )),
            (1, 2) if addresses.len() >= 36 => Some(IpAddr::from(
                <[u8; 16]>::try_from(&addresses[..16]).map_err(|_| HeadError::Malformed)?,
            )),
            (1, 0) => None, // UNSPEC
            _ => return Err(HeadError::Malformed),
        };
        return Ok(Some((client, 16 + length)));
    }
    Ok(Some((None, 0)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Reads into `buffer` from `stream` until `parse` finds what it looks for, within
/// [`HEAD_TIMEOUT`] and the size limit; on a bad start, answers (when there is an answer),
/// closes, and gives the reason.
async fn read_until<S, T>(
    stream: &mut S,
    buffer: &mut BytesMut,
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
            let room = (MAX_HEAD + HTTP2_PREFACE.len() + 600).saturating_sub(buffer.len());
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
    let outcome = match tokio::time::timeout(HEAD_TIMEOUT, read).await {
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
pub async fn read_proxy(stream: &mut TcpStream) -> Result<(Option<IpAddr>, Bytes), HeadError> {
    let mut buffer = BytesMut::with_capacity(256);
    let (client, length) = read_until(stream, &mut buffer, parse_proxy).await?;
    let _ = buffer.split_to(length);
    Ok((client, buffer.freeze()))
}

/// Reads the first request head of `stream`, whose first bytes (`already`) were read before;
/// gives the head and the connection with everything read put back in front.
pub async fn admit<S>(mut stream: S, already: Bytes) -> Result<(Head, Prefixed<S>), HeadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::from(&already[..]);
    let head = read_until(&mut stream, &mut buffer, parse_head).await?;
    Ok((head, Prefixed::new(buffer.freeze(), stream)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heads_are_read_whole_or_refused() {
        assert_eq!(
            parse_head(b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        assert_eq!(
            parse_head(b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Some(Head {
                method: "GET".into(),
                target: "/live/demo/master.m3u8".into(),
                http2: false
            }))
        );
        assert!(parse_head(HTTP2_PREFACE).unwrap().unwrap().http2);
        assert_eq!(parse_head(b"PRI * HTTP/2"), Ok(None));
        assert_eq!(parse_head(b"\x16\x03\x01\x02"), Err(HeadError::Malformed));
        assert_eq!(
            parse_head(b"GET / SPDY/3\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(parse_head(&huge), Err(HeadError::TooLarge));
    }

    #[test]
    fn proxy_headers_name_the_client() {
        let v1 = b"PROXY TCP4 81.2.69.142 127.0.0.1 56324 8090\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse_proxy(v1),
            Ok(Some((Some("81.2.69.142".parse().unwrap()), 45)))
        );
        assert_eq!(parse_proxy(b"PROXY TCP4 81.2"), Ok(None));
        assert_eq!(parse_proxy(b"PROXY UNKNOWN\r\n"), Ok(Some((None, 15))));
        assert_eq!(
            parse_proxy(b"PROXY TCP4 nonsense\r\n"),
            Err(HeadError::Malformed)
        );
        let endless = [PROXY_V1, &[b'x'; 200]].concat();
        assert_eq!(parse_proxy(&endless), Err(HeadError::Malformed));
        assert_eq!(parse_proxy(b"GET / HTTP/1.1\r\n"), Ok(Some((None, 0))));
        let mut v2 = PROXY_V2.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 89, 160, 20, 112, 127, 0, 0, 1, 0x1f, 0x90, 0x1f, 0x90,
        ]);
        assert_eq!(
            parse_proxy(&v2),
            Ok(Some((Some("89.160.20.112".parse().unwrap()), 28)))
        );
        assert_eq!(parse_proxy(&v2[..20]), Ok(None));
        let mut bad = PROXY_V2.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert_eq!(parse_proxy(&bad), Err(HeadError::Malformed));
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_answer_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
        }
    }
}
