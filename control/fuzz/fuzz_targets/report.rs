//! Any bytes as an edge report: the signature header, the JSON body and its bounds, the site
//! and the pins give a verdict with a status, never a panic. The first byte chooses how the
//! rest is sent: as an unsigned body, as a body signed with control's key (so that the
//! fuzzer gets past the signature to the JSON, the bounds and the pins), or as a header line
//! and a body. A report that is taken keeps every bound.
#![no_main]

use std::sync::OnceLock;

use estuary_control::Config;
use estuary_control::reports::Intake;
use estuary_proto::KeycardKey;
use estuary_proto::report::{self, EdgeReport, MAX_REPORT_BYTES};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000_000;

fn key() -> &'static KeycardKey {
    static KEY: OnceLock<KeycardKey> = OnceLock::new();
    KEY.get_or_init(|| {
        KeycardKey::from_hex(Some("k1"), "00112233445566778899aabbccddeeff")
            .expect("a valid test key")
    })
}

/// Two sites, one edge pinned to lon with a URL prefix and a key, the rest unpinned.
fn intake() -> &'static Intake {
    static INTAKE: OnceLock<Intake> = OnceLock::new();
    INTAKE.get_or_init(|| {
        let config = Config::parse(
            "[[sites]]\nname = \"lon\"\nlatitude = 51.5\nlongitude = -0.13\ncost_per_gb = 0.02\ncapacity_mbps = 1000\n\n\
             [[sites]]\nname = \"fra\"\nlatitude = 50.1\nlongitude = 8.7\ncost_per_gb = 0.01\ncapacity_mbps = 1000\n\n\
             [[edges]]\nid = \"lon-1\"\nsite = \"lon\"\nurl = \"https://lon-1.cdn.example:*\"\nkey_id = \"k1\"\n",
        )
        .expect("a valid configuration");
        Intake::new(&config, vec![key().clone()])
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let signed;
    let (header, body): (Option<&[u8]>, &[u8]) = match mode % 3 {
        0 => (None, rest),
        1 => {
            signed = report::sign(key(), rest, NOW);
            (Some(signed.as_bytes()), rest)
        }
        _ => match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (Some(rest), &[][..]),
        },
    };
    let known = |site: &str| site == "lon" || site == "fra";
    match intake().check(header, body, NOW, known) {
        Ok(admitted) => {
            assert!(body.len() <= MAX_REPORT_BYTES);
            assert_eq!(admitted.report.check(), Ok(()));
            assert!(known(&admitted.report.site));
            let _ = intake().commit(admitted, |taken: EdgeReport| {
                assert_eq!(taken.check(), Ok(()));
                Ok(())
            });
        }
        Err(refusal) => {
            assert!(
                [400, 401, 403, 413].contains(&refusal.status.as_u16()),
                "{refusal:?}"
            );
            assert!(!refusal.reason.is_empty());
        }
    }
});
