//! Request heads, sans IO: the first line of a connection told apart (HTTP/1.x, or the HTTP/2
//! preface) and whole HTTP/1 request heads parsed, each within [`Limits`], or refused with the
//! answer a server writes before it closes.

use std::mem::MaybeUninit;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};

use crate::limits::Limits;

/// What an HTTP/2 client with prior knowledge sends first.
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection is refused before a request could be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is larger than the limit")]
    TooLarge,
    #[error("the request head did not arrive within the head timeout")]
    TimedOut,
    #[error("the connection closed before a request head")]
    Closed,
    #[error("the request line or a header is malformed")]
    Malformed,
    #[error("the request has a body larger than the server reads")]
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

/// The request line of a connection's first request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstLine {
    pub method: String,
    pub target: String,
    pub http2: bool,
}

/// Looks for a whole first head in `buffer`: `Ok(None)` while more bytes are needed.
pub fn first_line(buffer: &[u8], limits: &Limits) -> Result<Option<FirstLine>, HeadError> {
    if buffer.starts_with(HTTP2_PREFACE) {
        return Ok(Some(FirstLine {
            method: "PRI".into(),
            target: "*".into(),
            http2: true,
        }));
    }
    if HTTP2_PREFACE.starts_with(buffer) {
        return Ok(None);
    }
    let Some(end) = find(buffer, b"\r\n\r\n") else {
        if buffer.len() >= limits.head_bytes {
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
    if end + 4 > limits.head_bytes {
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
    Ok(Some(FirstLine {
        method: method.to_owned(),
        target: target.to_owned(),
        http2: false,
    }))
}

/// A request as read off the connection, and what the connection does after it.
#[derive(Debug)]
pub struct ParsedRequest {
    pub request: Request<()>,
    /// Bytes of the buffer the head took.
    pub head_length: usize,
    /// The request body's length, to be read (or read past).
    pub body_length: u64,
    pub keep_alive: bool,
}

/// The most header fields parsed without a heap allocation.
const STACK_HEADERS: usize = 128;

/// Parses an HTTP/1 request head at the start of `buffer`: `None` while more bytes are needed.
/// A body must have a `Content-Length` within the limit: chunked request bodies are refused.
pub fn parse_request(buffer: &[u8], limits: &Limits) -> Result<Option<ParsedRequest>, HeadError> {
    // The fields live on the stack for the usual limits, and are left uninitialised until
    // parsed: a heap block for every request, or zeroing the whole array, cost more than the
    // rest of the parse.
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let fields = if limits.headers <= STACK_HEADERS {
        &mut on_stack[..limits.headers]
    } else {
        on_heap.resize_with(limits.headers, MaybeUninit::uninit);
        &mut on_heap[..]
    };
    let mut parsed = httparse::Request::new(&mut []);
    let head_length = match parsed.parse_with_uninit_headers(buffer, fields) {
        Ok(httparse::Status::Complete(length)) if length <= limits.head_bytes => length,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) if buffer.len() >= limits.head_bytes => {
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
            let length = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or(HeadError::Malformed)?;
            // Two lengths that disagree are a smuggling attempt.
            if headers.contains_key(header::CONTENT_LENGTH) && length != body_length {
                return Err(HeadError::Malformed);
            }
            body_length = length;
            if body_length > limits.request_body {
                return Err(HeadError::BodyTooLarge);
            }
        } else if name == header::TRANSFER_ENCODING {
            // A body of unknown length is never read.
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

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn first_lines_are_read_whole_or_refused() {
        let limits = limits();
        assert_eq!(
            first_line(
                b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: x\r\n",
                &limits
            ),
            Ok(None)
        );
        assert_eq!(
            first_line(
                b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
                &limits
            ),
            Ok(Some(FirstLine {
                method: "GET".into(),
                target: "/live/demo/master.m3u8".into(),
                http2: false
            }))
        );
        assert!(first_line(HTTP2_PREFACE, &limits).unwrap().unwrap().http2);
        assert_eq!(first_line(b"PRI * HTTP/2", &limits), Ok(None));
        assert_eq!(
            first_line(b"\x16\x03\x01\x02", &limits),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            first_line(b"GET / SPDY/3\r\n\r\n", &limits),
            Err(HeadError::Malformed)
        );
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 16 * 1024]].concat();
        assert_eq!(first_line(&huge, &limits), Err(HeadError::TooLarge));
    }

    #[test]
    fn heads_are_parsed_with_their_connection_rules() {
        let limits = limits();
        let head = b"GET /live/demo/master.m3u8?keycard=x HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let incoming = parse_request(head, &limits).unwrap().unwrap();
        assert_eq!(incoming.request.uri().path(), "/live/demo/master.m3u8");
        assert_eq!(incoming.request.uri().query(), Some("keycard=x"));
        assert_eq!(incoming.request.headers()["host"], "a");
        assert_eq!(&head[incoming.head_length..], b"GET /next");
        assert!(incoming.keep_alive);

        let parse = |bytes: &[u8]| parse_request(bytes, &limits);
        assert!(
            !parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            !parse(b"GET / HTTP/1.0\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
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
        for refused in [
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"\x16\x03\x01garbage\r\n\r\n",
        ] {
            assert_eq!(
                parse(refused).err(),
                Some(HeadError::Malformed),
                "{refused:?}"
            );
        }
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").err(),
            Some(HeadError::BodyTooLarge)
        );
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', limits.head_bytes));
        assert_eq!(parse(&long).err(), Some(HeadError::TooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=limits.headers {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn the_header_count_limit_holds_on_either_side_of_the_stack_array() {
        for count in [STACK_HEADERS - 1, STACK_HEADERS + 72] {
            let limits = Limits {
                headers: count,
                head_bytes: 64 * 1024,
                ..Limits::default()
            };
            let head = |fields: usize| {
                let mut head = b"GET / HTTP/1.1\r\n".to_vec();
                for i in 0..fields {
                    head.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
                }
                head.extend_from_slice(b"\r\n");
                head
            };
            let parsed = parse_request(&head(count), &limits).unwrap().unwrap();
            assert_eq!(parsed.request.headers().len(), count);
            assert_eq!(
                parse_request(&head(count + 1), &limits).err(),
                Some(HeadError::TooLarge)
            );
        }
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_answer_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = first_line(&bytes, &Limits::default());
            let _ = parse_request(&bytes, &Limits::default());
        }
    }
}
