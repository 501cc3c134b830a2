//! Any bytes as an HTTP/1 request head, routed: the router says where a request goes without
//! panicking, what it lets through is the canonical form of a path of the layout (writing it
//! back gives the path as it came), and the keycard is looked for anywhere without panicking.
#![no_main]

use estuary_edge::route::{Route, route};
use estuary_http::{Limits, head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(parsed)) = head::parse_request(data, &Limits::default()) {
        let request = &parsed.request;
        if let Route::Object(path) | Route::Stream(path) = route(request.method(), request.uri()) {
            assert_eq!(path.path(), request.uri().path(), "a non-canonical path got through");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = estuary_edge::carry::find_keycard(Some(text), Some(text), Some(text));
    }
});
