//! A continuous-stream viewer as one edge process hands it to the next during an upgrade
//! (sans IO): which stream, how its bytes are dressed, where it stands ([`Position`]), and
//! what it was let in with (its keycard's expiry and id, checked again against the new
//! process's revocation list). The socket travels beside it (SCM_RIGHTS); the record is a
//! length-prefixed JSON head and the pending bytes, each bounded: the peer is the same user's
//! process, but a record is still read as anything else from outside.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::place::{Next, Position};

/// The longest JSON head read.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most pending bytes read: the rest of one chunk (a third of a second at 100 Mbit/s
/// is 4 MB).
pub const MAX_PENDING: usize = 16 << 20;
/// The longest title carried (the most an ICY block holds: 255 × 16 bytes).
const MAX_TITLE: usize = 255 * 16;
/// The longest stream key or keycard id carried.
const MAX_NAME: usize = 1024;

/// One viewer handed over.
#[derive(Clone, Debug, PartialEq)]
pub struct Baton {
    /// The stream's canonical target.
    pub key: String,
    /// Another edge, taking the stream framed.
    pub framed: bool,
    /// A radio player getting ICY metadata.
    pub icy: bool,
    pub position: Position,
    /// When its credentials stop working (Unix seconds).
    pub until: Option<u64>,
    /// Its keycard's id, to disconnect it once revoked.
    pub keycard: Option<String>,
    /// The header it was given ([`digest`]): a new process whose stream has another header
    /// cannot go on for it.
    pub header: u64,
}

#[derive(Serialize, Deserialize)]
struct Head {
    key: String,
    framed: bool,
    icy: bool,
    next: Next,
    icy_until_block: Option<usize>,
    icy_title: Option<String>,
    title_sent: String,
    until: Option<u64>,
    keycard: Option<String>,
    header: u64,
    pending: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatonError {
    #[error("the record is cut short")]
    Short,
    #[error("the record's head is {0} bytes (at most {MAX_HEAD})")]
    HeadTooLong(usize),
    #[error("the record's head does not parse: {0}")]
    Head(String),
    #[error("the record carries {0} pending bytes (at most {MAX_PENDING})")]
    PendingTooLong(usize),
    #[error("the record names no continuous stream: {0:?}")]
    Key(String),
    #[error("a title or id in the record is too long")]
    TooLong,
}

impl Baton {
    /// The record: the head's length (4 bytes, big-endian), the JSON head, the pending bytes.
    pub fn encode(&self) -> Vec<u8> {
        let head = Head {
            key: self.key.clone(),
            framed: self.framed,
            icy: self.icy,
            next: self.position.next,
            icy_until_block: self.position.icy.as_ref().map(|(until, _)| *until),
            icy_title: self
                .position
                .icy
                .as_ref()
                .and_then(|(_, title)| title.as_deref().map(str::to_owned)),
            title_sent: self.position.title_sent.to_string(),
            until: self.until,
            keycard: self.keycard.clone(),
            header: self.header,
            pending: self.position.pending.len(),
        };
        let head = serde_json::to_vec(&head).expect("a head of plain fields serializes");
        let mut out = Vec::with_capacity(4 + head.len() + self.position.pending.len());
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.position.pending);
        out
    }

    /// One record from the front of `bytes`, and the bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Baton, usize), BatonError> {
        let length: [u8; 4] = bytes
            .get(..4)
            .ok_or(BatonError::Short)?
            .try_into()
            .expect("four bytes");
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_HEAD {
            return Err(BatonError::HeadTooLong(length));
        }
        let head = bytes.get(4..4 + length).ok_or(BatonError::Short)?;
        let head: Head =
            serde_json::from_slice(head).map_err(|error| BatonError::Head(error.to_string()))?;
        if head.pending > MAX_PENDING {
            return Err(BatonError::PendingTooLong(head.pending));
        }
        let start = 4 + length;
        let pending = bytes
            .get(start..start + head.pending)
            .ok_or(BatonError::Short)?;
        if head.key.len() > MAX_NAME || !is_stream_key(&head.key) {
            return Err(BatonError::Key(head.key.chars().take(100).collect()));
        }
        let long =
            |text: &Option<String>, limit: usize| text.as_ref().is_some_and(|t| t.len() > limit);
        if head.title_sent.len() > MAX_TITLE
            || long(&head.icy_title, MAX_TITLE)
            || long(&head.keycard, MAX_NAME)
        {
            return Err(BatonError::TooLong);
        }
        let icy = head.icy_until_block.map(|until| {
            (
                until,
                head.icy_title.map(|title| Arc::<str>::from(title.as_str())),
            )
        });
        let baton = Baton {
            key: head.key,
            framed: head.framed,
            icy: head.icy,
            position: Position {
                next: head.next,
                pending: Bytes::copy_from_slice(pending),
                icy,
                title_sent: head.title_sent.into(),
            },
            until: head.until,
            keycard: head.keycard,
            header: head.header,
        };
        Ok((baton, start + pending.len()))
    }
}

/// Whether `key` is a continuous stream's canonical target, as this edge would have written it.
pub(super) fn is_stream_key(key: &str) -> bool {
    use estuary_proto::url::{CacheClass, PublicPath};
    let (path, query) = match key.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (key, None),
    };
    PublicPath::parse(path, query)
        .is_ok_and(|parsed| parsed.cache_class() == CacheClass::Stream && parsed.to_string() == key)
}

/// A stream header's fingerprint (64-bit FNV-1a): the same in every process and build.
pub fn digest(header: &[u8]) -> u64 {
    header.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baton() -> Baton {
        Baton {
            key: "/live/radio/stream.mp3".into(),
            framed: false,
            icy: true,
            position: Position {
                next: Next::After(1_764_000_000_123_456),
                pending: Bytes::from_static(b"the rest of a chunk"),
                icy: Some((1234, Some("StreamTitle".into()))),
                title_sent: "".into(),
            },
            until: Some(1_800_000_000),
            keycard: Some("k-42".into()),
            header: digest(b""),
        }
    }

    #[test]
    fn a_baton_reads_back_as_it_was_written() {
        let mut wire = baton().encode();
        let second = Baton {
            icy: false,
            position: Position {
                next: Next::Fresh,
                pending: Bytes::new(),
                icy: None,
                title_sent: "".into(),
            },
            ..baton()
        };
        wire.extend(second.encode());
        let (first, used) = Baton::decode(&wire).unwrap();
        assert_eq!(first, baton());
        let (again, rest) = Baton::decode(&wire[used..]).unwrap();
        assert_eq!(again, second);
        assert_eq!(used + rest, wire.len());
    }

    #[test]
    fn a_hostile_record_is_refused_without_reading_past_its_bounds() {
        let wire = baton().encode();
        for cut in 0..wire.len() {
            assert_eq!(Baton::decode(&wire[..cut]).unwrap_err(), BatonError::Short);
        }
        let mut huge_head = wire.clone();
        huge_head[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Baton::decode(&huge_head),
            Err(BatonError::HeadTooLong(_))
        ));
        let lying = String::from_utf8(wire[4..wire.len() - 19].to_vec())
            .unwrap()
            .replace("\"pending\":19", "\"pending\":99999999999");
        let mut record = (lying.len() as u32).to_be_bytes().to_vec();
        record.extend(lying.as_bytes());
        assert!(matches!(
            Baton::decode(&record),
            Err(BatonError::PendingTooLong(_))
        ));
        for key in [
            "/live/demo/master.m3u8",
            "/etc/passwd",
            "//live/demo/stream.mp3",
        ] {
            let wire = Baton {
                key: key.into(),
                ..baton()
            }
            .encode();
            assert!(
                matches!(Baton::decode(&wire), Err(BatonError::Key(_))),
                "{key}"
            );
        }
        let wire = Baton {
            keycard: Some("k".repeat(5000)),
            ..baton()
        }
        .encode();
        assert_eq!(Baton::decode(&wire).unwrap_err(), BatonError::TooLong);
        let mut garbage = 7u32.to_be_bytes().to_vec();
        garbage.extend(b"{nope}}");
        assert!(matches!(Baton::decode(&garbage), Err(BatonError::Head(_))));
    }

    #[test]
    fn the_digest_is_fnv_1a() {
        // The published FNV-1a 64 test values (Fowler, Noll, Vo: "FNV hash", test vectors).
        assert_eq!(digest(b""), 0xcbf29ce484222325);
        assert_eq!(digest(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(digest(b"foobar"), 0x85944171f73967e8);
    }
}
