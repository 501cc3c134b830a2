//! Any bytes as the start of a connection: the first-line reader, the HTTP/1 request parser and
//! the PROXY protocol reader say "more", "here it is" or "refused", without panicking, and
//! never ask for more than the limit.
#![no_main]

use estuary_http::head::{self, HeadError};
use estuary_http::{Limits, proxy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    match head::first_line(data, &limits) {
        Ok(Some(_)) => {}
        Ok(None) => assert!(
            data.len() < limits.head_bytes + 64,
            "asked for more past the limit"
        ),
        Err(
            HeadError::TooLarge
            | HeadError::Malformed
            | HeadError::TimedOut
            | HeadError::Closed
            | HeadError::BodyTooLarge,
        ) => {}
    }
    match head::parse_request(data, &limits) {
        Ok(Some(parsed)) => {
            assert!(parsed.head_length <= data.len().min(limits.head_bytes));
            assert!(parsed.body_length <= limits.request_body);
        }
        Ok(None) => assert!(data.len() < limits.head_bytes, "asked for more past the limit"),
        Err(_) => {}
    }
    if let Ok(Some((_, length))) = proxy::parse(data) {
        assert!(length <= data.len());
    }
});
