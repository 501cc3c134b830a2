//! Any bytes as the start of a connection: the porter's head reader and the HTTP/1 engine's
//! request parser say "more", "here is the head" or "refused", and the router says where the
//! request goes, without panicking, and never want more than their limit. What the router
//! accepts is the canonical form of a path of the layout: writing it back gives the path.
#![no_main]

use estuary_edge::listen::porter::{self, HeadError};
use estuary_edge::route::{Route, route};
use libfuzzer_sys::fuzz_target;

/// Routes a request and checks that a path let through is canonical.
fn routed(request: &hyper::Request<()>) {
    if let Route::Object(path) | Route::Stream(path) = route(request.method(), request.uri()) {
        assert_eq!(path.path(), request.uri().path(), "a non-canonical path got through");
    }
}

fuzz_target!(|data: &[u8]| {
    match porter::parse_head(data) {
        Ok(Some(head)) => {
            if let Some((path, query)) = head.target.split_once('?').or(Some((&head.target, "")))
            {
                let _ = estuary_proto::url::PublicPath::parse(path, Some(query));
            }
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
    match estuary_edge::listen::http1::parse(data) {
        Ok(Some(parsed)) => {
            assert!(parsed.head_length <= data.len().min(porter::MAX_HEAD));
            routed(&parsed.request);
        }
        Ok(None) => assert!(data.len() < porter::MAX_HEAD, "asked for more past the limit"),
        Err(_) => {}
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = estuary_proto::url::PublicPath::parse(text, Some(text));
        let _ = estuary_edge::carry::find_keycard(Some(text), Some(text), Some(text));
    }
});
