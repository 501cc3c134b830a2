//! Any text as a keycard: parsing and checking it against a key give a verdict, never a panic.
#![no_main]

use estuary_proto::keycard::{Keycard, KeycardKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = KeycardKey::from_hex(Some("k1"), "00112233445566778899aabbccddeeff")
        .expect("a valid test key");
    if let Ok(card) = Keycard::parse(text) {
        let client = Some(std::net::IpAddr::from([192, 0, 2, 1]));
        for who in [None, client] {
            let _ = card.verify(
                std::slice::from_ref(&key),
                "/live/demo/master.m3u8",
                who,
                1_800_000_000,
            );
        }
    }
    let _ = estuary_proto::keycard::parse_key_file(text);
});
