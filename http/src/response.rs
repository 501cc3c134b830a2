//! HTTP/1 response heads, written by hand for the servers that write their own (the edge's
//! HTTP/1 engine, control's front door): status line, `date` (worked out once a second per
//! thread), the response's headers, then how the body is framed and whether the connection
//! stays open.

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

use hyper::StatusCode;
use hyper::header::HeaderMap;

/// How a response's body goes on an HTTP/1 connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// `content-length`, when the body's length is known.
    pub length: Option<u64>,
    /// `transfer-encoding: chunked`: an HTTP/1.1 body of unknown length.
    pub chunked: bool,
    /// The status has no body (1xx, 204, 304).
    pub bodiless: bool,
    /// The connection carries another request after this one.
    pub keep_alive: bool,
    pub http10: bool,
}

impl Framing {
    /// The framing of a `status` response whose body is `length` long (`None`: unknown), to a
    /// request of HTTP/1.0 or 1.1 that asked to keep the connection or not. A body of unknown
    /// length is chunked for HTTP/1.1 and ends with the connection for 1.0.
    pub fn of(status: StatusCode, length: Option<u64>, http10: bool, keep_alive: bool) -> Framing {
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let chunked = length.is_none() && !bodiless && !http10;
        Framing {
            length,
            chunked,
            bodiless,
            keep_alive: keep_alive && (length.is_some() || chunked || bodiless),
            http10,
        }
    }
}

/// Writes a response head into `out` (cleared first).
pub fn write_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap, framing: &Framing) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !framing.bodiless {
        match framing.length {
            Some(length) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa(length, &mut [0; 20]));
                out.extend_from_slice(b"\r\n");
            }
            None if framing.chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            None => {}
        }
    }
    match (framing.keep_alive, framing.http10) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, false) => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// The decimal digits of `value`, written at the end of `digits`.
pub fn itoa(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
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
pub fn with_date(use_it: impl FnOnce(&[u8])) {
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
    use hyper::header::HeaderValue;

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

    #[test]
    fn heads_say_how_the_body_is_framed() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let mut out = Vec::new();
        let known = Framing::of(StatusCode::OK, Some(5), false, true);
        write_head(&mut out, StatusCode::OK, &headers, &known);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{text}");
        assert!(
            text.ends_with("content-type: text/plain\r\ncontent-length: 5\r\n\r\n"),
            "{text}"
        );
        let unknown = Framing::of(StatusCode::OK, None, false, true);
        assert!(unknown.chunked && unknown.keep_alive);
        let old = Framing::of(StatusCode::OK, None, true, true);
        assert!(
            !old.chunked && !old.keep_alive,
            "HTTP/1.0 ends the body with the connection"
        );
        write_head(&mut out, StatusCode::OK, &HeaderMap::new(), &old);
        assert!(
            String::from_utf8(out.clone())
                .unwrap()
                .ends_with("connection: close\r\n\r\n")
        );
        let empty = Framing::of(StatusCode::NO_CONTENT, None, false, true);
        assert!(empty.bodiless && empty.keep_alive);
    }
}
