//! Answers every server gives the same way: a response with CORS open to every origin (players
//! in browsers fetch from other origins), a CORS preflight, and an error as an RFC 9457
//! problem: `application/problem+json` with the status's title and a `detail` that names the
//! input and what was wrong with it.

use std::fmt::Write as _;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::Body;

/// The media type of a problem (RFC 9457, 3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A response of `status` with `body` of `content_type`, which any origin may read.
pub fn respond(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    response
}

/// An error answer: the problem's JSON, never stored by caches (a server that wants a 404
/// remembered for a moment sets its own Cache-Control).
pub fn problem(status: StatusCode, detail: impl AsRef<str>) -> Response<Body> {
    let mut response = respond(
        status,
        PROBLEM_JSON,
        Body::text(problem_json(status, detail.as_ref())),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The problem document for `status` and `detail` (RFC 9457): `type` is `about:blank`, so the
/// `title` is the status's own.
pub fn problem_json(status: StatusCode, detail: &str) -> String {
    let mut text = String::with_capacity(detail.len() + 96);
    text.push_str("{\"type\":\"about:blank\",\"title\":");
    json_string(&mut text, status.canonical_reason().unwrap_or("Error"));
    let _ = write!(text, ",\"status\":{},\"detail\":", status.as_u16());
    json_string(&mut text, detail);
    text.push_str("}\n");
    text
}

/// A CORS preflight's answer: these methods, any header, remembered for a day.
pub fn preflight(methods: &'static str) -> Response<Body> {
    let mut response = respond(StatusCode::NO_CONTENT, "text/plain", Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// `text` as a JSON string, quotes and escapes included, for answers written by hand.
pub fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_rfc_9457_json_with_the_input_named() {
        assert_eq!(
            problem_json(StatusCode::FORBIDDEN, "keycard \"k1\" expired\n\u{1}"),
            "{\"type\":\"about:blank\",\"title\":\"Forbidden\",\"status\":403,\
             \"detail\":\"keycard \\\"k1\\\" expired\\n\\u0001\"}\n"
        );
        let response = problem(StatusCode::NOT_FOUND, "no track v9");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
}
