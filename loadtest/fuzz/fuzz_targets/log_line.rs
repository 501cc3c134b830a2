//! Any bytes as a line of a request log, in every format the reader knows: a record or the
//! reason it is not one, never a panic.
#![no_main]

use estuary_loadtest::log::{Format, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Common, Format::Combined, Format::NginxJson] {
        if let Ok(record) = parse(format, data) {
            // Whatever was found lies inside the line.
            assert!(record.target.len() + record.method.len() <= data.len());
        }
    }
});
