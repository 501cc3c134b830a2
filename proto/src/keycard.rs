//! Keycards: what a request presents to be let in.
//!
//! The format is Akamai EdgeAuth 2.0 (`st=…~exp=…~acl=…~id=…~data=…~hmac=…`): the HMAC-SHA256 of
//! the fields before `hmac`, joined by `~`, under a shared hex key. Estuary adds one optional
//! field, `kid`, naming the key so that keys can be rotated; without it every known key is tried.
//! Signing and checking are pure: the caller passes the time and the client's address in.
//!
//! Two rules of checking: a keycard with an `ip=` field lets in that address alone, and its
//! start (`st=`) is honoured with [`CLOCK_SKEW`] of slack, for a checker whose clock is behind
//! the signer's (control signs with `st` = now; an edge a few seconds behind would otherwise
//! refuse every fresh keycard). The expiry is exact.

use std::fmt::Write as _;
use std::net::IpAddr;

use ring::hmac;

/// How far a checker's clock may be behind the signer's: a keycard is valid from `st` minus
/// this many seconds.
pub const CLOCK_SKEW: u64 = 30;

const FIELD_SEPARATOR: char = '~';
const ACL_SEPARATOR: char = '!';

/// The HTTP header an ingest puts its keycard in (`Authorization: Bearer <keycard>`).
pub const AUTHORIZATION_SCHEME: &str = "Bearer";

/// A shared secret, optionally named for rotation.
#[derive(Clone)]
pub struct KeycardKey {
    pub id: Option<String>,
    pub(crate) key: hmac::Key,
}

impl std::fmt::Debug for KeycardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("KeycardKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl KeycardKey {
    /// A key from its hex form, as EdgeAuth tools write it.
    pub fn from_hex(id: Option<&str>, hex: &str) -> Result<Self, KeycardError> {
        let secret = decode_hex(hex.trim()).ok_or_else(|| {
            KeycardError::BadKey("the key is not an even number of hex digits".into())
        })?;
        if secret.len() < 16 {
            return Err(KeycardError::BadKey(format!(
                "the key has {} bytes; use at least 16 (32 hex digits)",
                secret.len()
            )));
        }
        Ok(Self {
            id: id.map(str::to_owned),
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }
}

/// A key file: one key per line, `HEX` or `ID HEX` (the id names the key in keycards, for
/// rotation); blank lines and `#` comments are skipped. The first key signs; all verify.
pub fn parse_key_file(text: &str) -> Result<Vec<KeycardKey>, String> {
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (id, hex) = match fields.as_slice() {
            [hex] => (None, *hex),
            [id, hex] => (Some(*id), *hex),
            _ => {
                return Err(format!(
                    "line {}: expected HEX or ID HEX, found {} fields",
                    number + 1,
                    fields.len()
                ));
            }
        };
        keys.push(
            KeycardKey::from_hex(id, hex)
                .map_err(|error| format!("line {}: {error}", number + 1))?,
        );
    }
    if keys.is_empty() {
        return Err("no key in the file (expected lines of HEX or ID HEX)".into());
    }
    Ok(keys)
}

impl KeycardKey {
    /// A new random 32-byte key, and its hex form (for a key file).
    pub fn generate(id: Option<&str>) -> (KeycardKey, String) {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .expect("the system has randomness");
        let hex = encode_hex(&secret);
        let key = KeycardKey {
            id: id.map(str::to_owned),
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        };
        (key, hex)
    }
}

/// What a keycard should allow: paths matching `acl` (with `*` wildcards, several joined by
/// `!`) from `start` until `expires` (Unix seconds), to the client at `ip` alone if given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeycardRequest {
    pub ip: Option<IpAddr>,
    pub start: Option<u64>,
    pub expires: u64,
    pub acl: String,
    pub id: Option<String>,
    pub data: Option<String>,
}

/// A parsed keycard: its fields, in the order they were signed, and its HMAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keycard {
    /// The one client address the keycard lets in.
    pub ip: Option<IpAddr>,
    pub start: Option<u64>,
    pub expires: u64,
    pub acl: String,
    pub id: Option<String>,
    pub data: Option<String>,
    pub key_id: Option<String>,
    signed_part: String,
    mac: Vec<u8>,
}

/// What a valid keycard allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Unix second after which the keycard no longer lets anyone in.
    pub until: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeycardError {
    #[error("keycard is malformed: {0}")]
    Malformed(String),
    #[error("keycard key is unusable: {0}")]
    BadKey(String),
    #[error("keycard names key {0:?}, which this server does not have")]
    UnknownKey(String),
    #[error("keycard signature does not match any key: it was altered or signed with another key")]
    BadSignature,
    #[error("keycard is not valid before {start} (now is {now})")]
    NotYetValid { start: u64, now: u64 },
    #[error("keycard expired at {expires} (now is {now})")]
    Expired { expires: u64, now: u64 },
    #[error("keycard allows {acl:?}, which does not cover {path:?}")]
    PathNotAllowed { path: String, acl: String },
    #[error("keycard is for {allowed}, not for {client}")]
    WrongAddress { allowed: IpAddr, client: String },
}

/// Signs `request` with `key`, giving the keycard's text.
pub fn sign(request: &KeycardRequest, key: &KeycardKey) -> String {
    let mut text = String::new();
    let mut field = |name: &str, value: &dyn std::fmt::Display| {
        if !text.is_empty() {
            text.push(FIELD_SEPARATOR);
        }
        // Writing to a String cannot fail.
        let _ = write!(text, "{name}={value}");
    };
    // Akamai's order: ip first.
    if let Some(ip) = request.ip {
        field("ip", &ip);
    }
    if let Some(start) = request.start {
        field("st", &start);
    }
    field("exp", &request.expires);
    field("acl", &request.acl);
    if let Some(id) = &request.id {
        field("id", id);
    }
    if let Some(data) = &request.data {
        field("data", data);
    }
    if let Some(key_id) = &key.id {
        field("kid", key_id);
    }
    let tag = hmac::sign(&key.key, text.as_bytes());
    text.push_str("~hmac=");
    text.push_str(&encode_hex(tag.as_ref()));
    text
}

impl Keycard {
    /// Parses a keycard's text without checking it.
    pub fn parse(text: &str) -> Result<Self, KeycardError> {
        let malformed = |what: String| KeycardError::Malformed(what);
        let (signed_part, mac_hex) = text
            .rsplit_once("~hmac=")
            .ok_or_else(|| malformed("it has no ~hmac= field at the end".into()))?;
        let mac = decode_hex(mac_hex)
            .filter(|mac| mac.len() == 32)
            .ok_or_else(|| malformed("hmac is not 64 hex digits".into()))?;
        let mut card = Keycard {
            ip: None,
            start: None,
            expires: 0,
            acl: String::new(),
            id: None,
            data: None,
            key_id: None,
            signed_part: signed_part.to_owned(),
            mac,
        };
        let mut saw_expires = false;
        for field in signed_part.split(FIELD_SEPARATOR) {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| malformed(format!("field {field:?} has no '='")))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| malformed(format!("{name}={value:?} is not a Unix time")))
            };
            match name {
                "st" => card.start = Some(number()?),
                "exp" => {
                    card.expires = number()?;
                    saw_expires = true;
                }
                "acl" => card.acl = value.to_owned(),
                "id" => card.id = Some(value.to_owned()),
                "data" => card.data = Some(value.to_owned()),
                "kid" => card.key_id = Some(value.to_owned()),
                "ip" => {
                    card.ip = Some(
                        value
                            .parse()
                            .map_err(|_| malformed(format!("ip={value:?} is not an IP address")))?,
                    )
                }
                // An EdgeAuth field Estuary does not check; it is still covered by the HMAC.
                "url" => {}
                _ => return Err(malformed(format!("unknown field {name:?}"))),
            }
        }
        if !saw_expires {
            return Err(malformed("it has no exp= field".into()));
        }
        if card.acl.is_empty() {
            return Err(malformed("it has no acl= field".into()));
        }
        Ok(card)
    }

    /// Checks the keycard for `path`, presented by `client` (when known) at Unix time `now`,
    /// against the known `keys`. A keycard bound to an address refuses an unknown client.
    pub fn verify(
        &self,
        keys: &[KeycardKey],
        path: &str,
        client: Option<IpAddr>,
        now: u64,
    ) -> Result<Grant, KeycardError> {
        let candidates: Vec<&KeycardKey> = match &self.key_id {
            Some(wanted) => {
                let named: Vec<_> = keys
                    .iter()
                    .filter(|k| k.id.as_ref() == Some(wanted))
                    .collect();
                if named.is_empty() {
                    return Err(KeycardError::UnknownKey(wanted.clone()));
                }
                named
            }
            None => keys.iter().collect(),
        };
        let signed = candidates
            .iter()
            .any(|key| hmac::verify(&key.key, self.signed_part.as_bytes(), &self.mac).is_ok());
        if !signed {
            return Err(KeycardError::BadSignature);
        }
        if let Some(start) = self.start
            && now.saturating_add(CLOCK_SKEW) < start
        {
            return Err(KeycardError::NotYetValid { start, now });
        }
        if now >= self.expires {
            return Err(KeycardError::Expired {
                expires: self.expires,
                now,
            });
        }
        if !self
            .acl
            .split(ACL_SEPARATOR)
            .any(|pattern| glob_matches(pattern, path))
        {
            return Err(KeycardError::PathNotAllowed {
                path: path.to_owned(),
                acl: self.acl.clone(),
            });
        }
        if let Some(allowed) = self.ip
            && client.is_none_or(|client| !same_address(allowed, client))
        {
            return Err(KeycardError::WrongAddress {
                allowed,
                client: client.map_or("an unknown client".into(), |c| c.to_string()),
            });
        }
        Ok(Grant {
            until: self.expires,
        })
    }
}

/// Whether two addresses are the same host, an IPv4 address matching its IPv6-mapped form.
fn same_address(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// `*` matches any run of characters, `/` included, as in EdgeAuth ACLs.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    // `split` always yields at least one part.
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "52a152a152a152a152a152a152a152a1";

    fn key(id: Option<&str>) -> KeycardKey {
        KeycardKey::from_hex(id, KEY).unwrap()
    }

    fn request(acl: &str) -> KeycardRequest {
        KeycardRequest {
            start: Some(1_000),
            expires: 2_000,
            acl: acl.into(),
            ..KeycardRequest::default()
        }
    }

    #[test]
    fn matches_an_independently_computed_token() {
        // The HMAC was computed outside this code, by
        // `printf %s 'st=1000~exp=2000~acl=/live/demo/*' |
        //  openssl dgst -sha256 -mac HMAC -macopt hexkey:52a152a152a152a152a152a152a152a1`.
        assert_eq!(
            sign(&request("/live/demo/*"), &key(None)),
            "st=1000~exp=2000~acl=/live/demo/*~hmac=\
             18d400c5ced33029395ba7a2f89df376b513146f5281b32165d5f060f4a61978"
        );
    }

    #[test]
    fn says_why_a_keycard_is_refused() {
        let keys = [key(None)];
        let card = Keycard::parse(&sign(&request("/live/demo/*"), &keys[0])).unwrap();
        assert_eq!(
            card.verify(&keys, "/live/demo/v720/1.m4s", None, 1_500),
            Ok(Grant { until: 2_000 })
        );
        // A checker up to CLOCK_SKEW behind the signer takes it; further behind, not yet.
        assert!(card.verify(&keys, "/live/demo/x", None, 970).is_ok());
        assert_eq!(
            card.verify(&keys, "/live/demo/x", None, 969),
            Err(KeycardError::NotYetValid {
                start: 1_000,
                now: 969
            })
        );
        assert_eq!(
            card.verify(&keys, "/live/demo/x", None, 2_000),
            Err(KeycardError::Expired {
                expires: 2_000,
                now: 2_000
            })
        );
        assert!(matches!(
            card.verify(&keys, "/live/other/x", None, 1_500),
            Err(KeycardError::PathNotAllowed { .. })
        ));
        let other = [KeycardKey::from_hex(None, &"ab".repeat(16)).unwrap()];
        assert_eq!(
            card.verify(&other, "/live/demo/x", None, 1_500),
            Err(KeycardError::BadSignature)
        );
    }

    #[test]
    fn key_ids_select_the_key() {
        let old = key(Some("2025"));
        let new = KeycardKey::from_hex(Some("2026"), &"cd".repeat(16)).unwrap();
        let text = sign(&request("/ingest/demo/*"), &new);
        assert!(text.contains("~kid=2026~hmac="));
        let card = Keycard::parse(&text).unwrap();
        assert!(
            card.verify(&[old.clone(), new], "/ingest/demo/v720", None, 1_500)
                .is_ok()
        );
        assert_eq!(
            card.verify(&[old], "/ingest/demo/v720", None, 1_500),
            Err(KeycardError::UnknownKey("2026".into()))
        );
    }

    #[test]
    fn tampering_is_detected() {
        let keys = [key(None)];
        let text = sign(&request("/live/demo/*"), &keys[0]).replace("exp=2000", "exp=9000");
        let card = Keycard::parse(&text).unwrap();
        assert_eq!(
            card.verify(&keys, "/live/demo/x", None, 1_500),
            Err(KeycardError::BadSignature)
        );
    }

    #[test]
    fn a_keycard_bound_to_an_address_lets_in_that_address_alone() {
        let keys = [key(None)];
        let text = sign(
            &KeycardRequest {
                ip: Some("192.0.2.7".parse().unwrap()),
                ..request("/live/demo/*")
            },
            &keys[0],
        );
        assert!(text.starts_with("ip=192.0.2.7~st=1000~"), "{text}");
        let card = Keycard::parse(&text).unwrap();
        let at =
            |client: &str| card.verify(&keys, "/live/demo/x", Some(client.parse().unwrap()), 1_500);
        assert!(at("192.0.2.7").is_ok());
        assert!(at("::ffff:192.0.2.7").is_ok());
        assert!(matches!(
            at("192.0.2.8"),
            Err(KeycardError::WrongAddress { .. })
        ));
        assert!(matches!(
            card.verify(&keys, "/live/demo/x", None, 1_500),
            Err(KeycardError::WrongAddress { .. })
        ));
        // The address is signed: moving the keycard to another one breaks the signature.
        let moved = Keycard::parse(&text.replace("192.0.2.7", "192.0.2.8")).unwrap();
        assert_eq!(
            moved.verify(
                &keys,
                "/live/demo/x",
                Some("192.0.2.8".parse().unwrap()),
                1_500
            ),
            Err(KeycardError::BadSignature)
        );
        assert!(matches!(
            Keycard::parse("ip=nowhere~exp=2~acl=/*~hmac=00"),
            Err(KeycardError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_keycards_are_named() {
        for text in [
            "",
            "exp=1",
            "exp=x~acl=/a~hmac=00",
            "acl=/a~hmac=".to_owned().as_str(),
        ] {
            assert!(
                matches!(Keycard::parse(text), Err(KeycardError::Malformed(_))),
                "{text}"
            );
        }
        assert!(KeycardKey::from_hex(None, "abc").is_err());
        assert!(KeycardKey::from_hex(None, "abcd").is_err());
    }

    #[test]
    fn acl_globs() {
        assert!(glob_matches("/live/demo/*", "/live/demo/v720/1.m4s"));
        assert!(glob_matches("/live/*/master.m3u8", "/live/a/master.m3u8"));
        assert!(!glob_matches("/live/*/master.m3u8", "/live/a/media.m3u8"));
        assert!(glob_matches("/exact", "/exact"));
        assert!(!glob_matches("/exact", "/exact/more"));
        assert!(glob_matches("*", ""));
    }

    proptest! {
        #[test]
        fn parsing_any_text_answers_without_panicking(text in ".{0,200}", tail in "[0-9a-f]{0,70}") {
            let _ = Keycard::parse(&text);
            let _ = Keycard::parse(&format!("{text}~hmac={tail}"));
        }

        #[test]
        fn signed_keycards_verify_for_their_acl(
            start in 0u64..1 << 40,
            life in 1u64..1 << 20,
            channel in "[a-z0-9_-]{1,20}",
            id in proptest::option::of("[a-zA-Z0-9]{1,12}"),
            offset in 0u64..1 << 20,
        ) {
            let keys = [key(Some("k"))];
            let request = KeycardRequest {
                start: Some(start), expires: start + life,
                acl: format!("/live/{channel}/*"), id, ..KeycardRequest::default()
            };
            let card = Keycard::parse(&sign(&request, &keys[0])).unwrap();
            prop_assert_eq!(&card.acl, &request.acl);
            let now = start + offset;
            let verdict = card.verify(&keys, &format!("/live/{channel}/a128/7.m4s"), None, now);
            prop_assert_eq!(verdict.is_ok(), offset < life);
        }
    }

    #[test]
    fn key_files_hold_ids_and_keys() {
        let keys = parse_key_file(
            "# rotation: 2026-11\nk2 00112233445566778899aabbccddeeff\n\n  ffeeddccbbaa99887766554433221100  # old\n",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].id.as_deref(), Some("k2"));
        assert_eq!(keys[1].id, None);
        assert!(parse_key_file("a b c\n").unwrap_err().contains("line 1"));
        assert!(parse_key_file("k1 0011\n").unwrap_err().contains("line 1"));
        assert!(parse_key_file("# nothing\n").is_err());
        let (key, hex) = KeycardKey::generate(Some("demo"));
        assert_eq!(hex.len(), 64);
        let again = KeycardKey::from_hex(Some("demo"), &hex).unwrap();
        let request = KeycardRequest {
            expires: 100,
            acl: "/*".into(),
            ..KeycardRequest::default()
        };
        assert_eq!(sign(&request, &key), sign(&request, &again));
    }
}
