//! The admin token an operator configures for the edge's admin endpoints, kept only as an HMAC
//! tag so that comparing a presented token takes the same time whatever it is.

use hyper::header::{self, HeaderMap};
use ring::hmac;

/// The admin token, compared in constant time: both sides are signed with a key made at start
/// and ring compares the signatures.
#[derive(Clone)]
pub struct AdminToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.write_str("AdminToken")
    }
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, b"estuary admin token"));
        let tag = hmac::sign(&key, token.as_bytes());
        AdminToken { key, tag }
    }

    /// Whether `headers` carry the token (`Authorization: Bearer TOKEN`).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        presented.is_some_and(|presented| {
            hmac::verify(&self.key, presented.as_bytes(), self.tag.as_ref()).is_ok()
        })
    }
}
