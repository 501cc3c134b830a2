//! Any bytes as the start of a connection: the porter's head reader and the HTTP/1 engine's
//! request parser say "more", "here is the head" or "refused", and the path check says yes or
//! no, without panicking, and never want more than their limit.
#![no_main]

use estuary_edge::porter::{self, HeadError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match porter::parse_head(data) {
        Ok(Some(head)) => {
            let _ = estuary_edge::server::is_safe_path(&head.target);
        }
        Ok(None) => assert!(
            data.len() < porter::MAX_HEAD + 64,
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
    match estuary_edge::http1::parse(data) {
        Ok(Some(parsed)) => {
            assert!(parsed.head_length <= data.len().min(porter::MAX_HEAD));
            let _ = estuary_edge::server::is_safe_path(parsed.request.uri().path());
        }
        Ok(None) => assert!(data.len() < porter::MAX_HEAD, "asked for more past the limit"),
        Err(_) => {}
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = estuary_edge::server::is_safe_path(text);
        let _ = estuary_edge::carry::find_keycard(Some(text), Some(text), Some(text));
    }
});
