//! Any bytes as the start of a connection: the porter's head reader says "more", "here is the
//! head" or "refused", and the path check says yes or no, without panicking, and never wants
//! more than its limit.
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
            HeadError::TooLarge | HeadError::Malformed | HeadError::TimedOut | HeadError::Closed,
        ) => {}
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = estuary_edge::server::is_safe_path(text);
        let _ = estuary_edge::carry::find_keycard(Some(text), Some(text), Some(text));
    }
});
