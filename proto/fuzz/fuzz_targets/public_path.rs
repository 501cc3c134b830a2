//! Any bytes as a request's path and query: `PublicPath::parse` answers without panicking,
//! and what it accepts is canonical: written back, it is the path it came from, and it parses
//! again to the same value.
#![no_main]

use estuary_proto::url::PublicPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    let Ok(parsed) = PublicPath::parse(path, query) else {
        return;
    };
    assert_eq!(parsed.path(), path, "an accepted path is written back as it came");
    let written = parsed.to_string();
    let (again_path, again_query) = match written.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (written.as_str(), None),
    };
    assert_eq!(
        PublicPath::parse(again_path, again_query).as_ref(),
        Ok(&parsed),
        "{written} does not parse back"
    );
});
