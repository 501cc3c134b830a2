//! Any bytes as the start of a connection to control's front door: the request is answered (a
//! redirect or a problem, as a whole HTTP/1.1 response), handed over to axum, left waiting for
//! more, or refused, without panicking, and never waiting for more past the head limit.
#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use estuary_control::front::{self, Step};
use estuary_control::{Config, Control, Keys};
use estuary_proto::KeycardKey;
use libfuzzer_sys::fuzz_target;

/// Control with one site, one edge that has reported, keycards on, and a trusted proxy (so
/// X-Forwarded-For is read).
fn control() -> &'static Arc<Control> {
    static CONTROL: OnceLock<Arc<Control>> = OnceLock::new();
    CONTROL.get_or_init(|| {
        let config = Config::parse(
            "trusted_proxies = [\"127.0.0.1/32\"]\n\n[[sites]]\nname = \"lon\"\nlatitude = 51.5\n\
             longitude = -0.13\ncost_per_gb = 0.02\ncapacity_mbps = 1000\n",
        )
        .expect("a valid configuration");
        let key = KeycardKey::from_hex(Some("k1"), "00112233445566778899aabbccddeeff")
            .expect("a valid test key");
        let keys = Keys {
            keycards: vec![key.clone()],
            keycard_lifetime: Duration::from_secs(300),
            reports: vec![key.clone()],
        };
        let control = Control::with_keys(&config, keys).expect("control starts");
        let body = br#"{"id":"lon-1","site":"lon","url":"http://lon-1.example:8090","clients":0,"egress_bps":0,"cache_hit_ratio":1,"cpu":0,"mood":"happy"}"#;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        let signature = estuary_proto::report::sign(&key, body, now);
        control
            .take_report(Some(signature.as_bytes()), body)
            .expect("the edge's report is taken");
        control
    })
}

fuzz_target!(|data: &[u8]| {
    let peer = IpAddr::from([127, 0, 0, 1]);
    let mut out = Vec::new();
    let head_limit = control().limits().head_bytes;
    match front::step(control(), peer, data, &mut out) {
        Ok(Some(Step::Answered { consumed, .. })) => {
            assert!(
                consumed <= data.len().min(head_limit),
                "consumed past the head"
            );
            assert!(out.starts_with(b"HTTP/1.1 "), "not a response");
            let head_end = out
                .windows(4)
                .position(|window| window == b"\r\n\r\n")
                .expect("a whole response head");
            // Nothing the client sent may split the response head.
            let head = &out[..head_end];
            assert!(
                head.iter()
                    .all(|&b| b == b'\r' || b == b'\n' || b == b'\t' || (b' '..=b'~').contains(&b)),
                "the head holds bytes no header may"
            );
        }
        Ok(Some(Step::HandOver)) => assert!(out.is_empty()),
        Ok(None) => assert!(data.len() < head_limit, "asked for more past the limit"),
        Err(refused) => assert!(out.is_empty(), "{refused}: nothing is answered before"),
    }
});
