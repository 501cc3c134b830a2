//! The keycards control puts in its redirects: one per redirect, for the channel's paths, with
//! a random id (`id=`) so that an operator can revoke that one keycard on the edges
//! (`estuary edge --revoked FILE`) without touching anyone else's.

use std::cell::RefCell;
use std::time::Duration;

use estuary_proto::keycard::{self, KeycardKey, KeycardRequest};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Bytes of randomness in a keycard id (16 hex digits): ids drawn for years do not collide.
const ID_BYTES: usize = 8;
/// Randomness fetched from the system at a time, per thread, so that a redirect does not pay
/// a system call for its id.
const RANDOM_BATCH: usize = 4096;

/// Signs keycards with the first key.
pub struct Minter {
    key: KeycardKey,
    lifetime: Duration,
}

/// A keycard and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    pub text: String,
    pub id: String,
}

impl Minter {
    /// None when there is no key: keycards are off.
    pub fn new(keys: &[KeycardKey], lifetime: Duration) -> Option<Minter> {
        Some(Minter {
            key: keys.first()?.clone(),
            lifetime,
        })
    }

    /// A keycard for the paths of `channel` under `root` (`live` or `vod`), valid from `now`
    /// (Unix seconds) for the lifetime.
    pub fn mint(&self, root: &str, channel: &str, now: u64) -> Minted {
        let id = random_id();
        let request = KeycardRequest {
            expires: now + self.lifetime.as_secs().max(1),
            acl: format!("/{root}/{channel}/*"),
            id: Some(id.clone()),
            ..KeycardRequest::default()
        };
        Minted {
            text: keycard::sign(&request, &self.key),
            id,
        }
    }
}

/// 16 random hex digits.
fn random_id() -> String {
    thread_local! {
        static RANDOM: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }
    RANDOM.with_borrow_mut(|(batch, used)| {
        if *used + ID_BYTES > batch.len() {
            batch.resize(RANDOM_BATCH, 0);
            // The system's randomness does not fail on Linux once the kernel has booted.
            SystemRandom::new()
                .fill(batch)
                .expect("the system has randomness");
            *used = 0;
        }
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(2 * ID_BYTES);
        for byte in &batch[*used..*used + ID_BYTES] {
            id.push(char::from(DIGITS[usize::from(byte >> 4)]));
            id.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        *used += ID_BYTES;
        id
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use estuary_proto::keycard::Keycard;

    #[test]
    fn every_keycard_has_its_own_id_and_verifies() {
        let key = KeycardKey::from_hex(Some("k1"), &"00".repeat(16)).unwrap();
        let minter = Minter::new(std::slice::from_ref(&key), Duration::from_secs(300)).unwrap();
        let mut ids = std::collections::HashSet::new();
        // More than one batch of randomness.
        for _ in 0..(RANDOM_BATCH / ID_BYTES) * 2 + 3 {
            let minted = minter.mint("live", "demo", 1_000);
            assert_eq!(minted.id.len(), 16);
            assert!(minted.id.bytes().all(|b| b.is_ascii_hexdigit()));
            let card = Keycard::parse(&minted.text).unwrap();
            assert_eq!(card.id.as_deref(), Some(minted.id.as_str()));
            assert!(
                card.verify(
                    std::slice::from_ref(&key),
                    "/live/demo/v720/1.m4s",
                    None,
                    1_100
                )
                .is_ok()
            );
            assert!(ids.insert(minted.id), "ids repeat");
        }
        assert!(Minter::new(&[], Duration::from_secs(1)).is_none());
    }
}
