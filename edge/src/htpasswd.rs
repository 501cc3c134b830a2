//! htpasswd files: `user:hash` lines, with bcrypt (`$2y$`, `$2b$`, `$2a$`, as `htpasswd -B`
//! writes) or SHA-256 crypt (`$5$`, as `openssl passwd -5` or `mkpasswd -m sha-256` write)
//! hashes, checked against HTTP Basic credentials. A bcrypt check takes tens of milliseconds by
//! design, so credentials once found good are remembered (as a SHA-256 of user, password and
//! hash, never the password) and a viewer's next requests cost a lookup.
//!
//! A check tells an attacker nothing by its time: an unknown user's password is checked
//! against a hash of the same kind and cost as the file's (so it takes as long as a known
//! user's), SHA-256 crypt results are compared in constant time (bcrypt's own comparison is),
//! and passwords longer than any real one are refused before hashing, since SHA-256 crypt's
//! cost grows with the password's length. Checks block: callers run them off the async
//! workers (see `admit`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ring::digest::{Context, SHA256};
use ring::hmac;

/// How many good credentials are remembered.
const REMEMBERED: usize = 10_000;
/// Longer passwords are refused unhashed (bcrypt reads 72 bytes of one anyway).
pub const MAX_PASSWORD: usize = 256;

#[derive(Debug)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    good: Mutex<HashSet<[u8; 32]>>,
    /// What an unknown user's password is checked against: a hash of the file's first kind
    /// and cost, of a password nobody knows.
    decoy: String,
    /// A key of this process's, to compare SHA-256 crypt results in constant time.
    comparison: hmac::Key,
}

impl Htpasswd {
    /// Reads `user:hash` lines (blank lines and `#` comments skipped); a hash of another kind
    /// (MD5 `$apr1$`, SHA-1 `{SHA}`, DES) is refused with its line number.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        let mut first_hash = None;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", number + 1))?;
            if !(hash.starts_with("$5$") || is_bcrypt(hash)) {
                return Err(format!(
                    "line {}: {user}'s hash is neither bcrypt ($2y$) nor SHA-256 crypt ($5$)",
                    number + 1
                ));
            }
            first_hash.get_or_insert_with(|| hash.to_owned());
            users.insert(user.to_owned(), hash.to_owned());
        }
        let rng = ring::rand::SystemRandom::new();
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut secret)
            .map_err(|_| "the system has no randomness".to_owned())?;
        let unknowable = encode_crypt64(&secret);
        let decoy = decoy_like(first_hash.as_deref(), &unknowable)?;
        Ok(Htpasswd {
            users,
            good: Mutex::default(),
            decoy,
            comparison: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// Whether `user` with `password` is in the file. Takes as long for an unknown user as
    /// for a known one with a wrong password.
    pub fn check(&self, user: &str, password: &str) -> bool {
        if password.len() > MAX_PASSWORD {
            return false;
        }
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash, true),
            None => (&self.decoy, false),
        };
        let mut key = Context::new(&SHA256);
        for part in [user, "\0", password, "\0", hash] {
            key.update(part.as_bytes());
        }
        let key: [u8; 32] = key.finish().as_ref().try_into().unwrap_or([0; 32]);
        let mut good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        if known && good.contains(&key) {
            return true;
        }
        drop(good);
        let matches = if hash.starts_with("$5$") {
            sha256_crypt(password.as_bytes(), hash).is_some_and(|made| {
                let expected = hmac::sign(&self.comparison, hash.as_bytes());
                hmac::verify(&self.comparison, made.as_bytes(), expected.as_ref()).is_ok()
            })
        } else {
            bcrypt::verify(password, hash).unwrap_or(false)
        };
        let matches = matches && known;
        if matches {
            good = self.good.lock().unwrap_or_else(|e| e.into_inner());
            if good.len() >= REMEMBERED {
                good.clear();
            }
            good.insert(key);
        }
        matches
    }
}

/// A hash of `password` of the same kind and cost as `model` (bcrypt at its cost, SHA-256
/// crypt with its rounds), or a SHA-256 crypt one with the default rounds.
fn decoy_like(model: Option<&str>, password: &str) -> Result<String, String> {
    let salt = &password[..16];
    match model {
        Some(model) if model.starts_with("$2") => {
            let cost = model
                .split('$')
                .nth(2)
                .and_then(|cost| cost.parse().ok())
                .unwrap_or(bcrypt::DEFAULT_COST);
            bcrypt::hash(password, cost).map_err(|error| error.to_string())
        }
        Some(model) => {
            let rounds = model
                .strip_prefix("$5$rounds=")
                .and_then(|rest| rest.split('$').next())
                .map(|rounds| format!("rounds={rounds}$"))
                .unwrap_or_default();
            sha256_crypt(password.as_bytes(), &format!("$5${rounds}{salt}$"))
                .ok_or_else(|| "cannot make a decoy hash".to_owned())
        }
        None => sha256_crypt(password.as_bytes(), &format!("$5${salt}$"))
            .ok_or_else(|| "cannot make a decoy hash".to_owned()),
    }
}

/// Whether `hash` has bcrypt's shape: `$2a$`, `$2b$`, `$2x$` or `$2y$`, a cost of 4 to 31,
/// then 53 characters of salt and hash.
fn is_bcrypt(hash: &str) -> bool {
    let mut fields = hash.split('$');
    let (Some(""), Some(version), Some(cost), Some(rest), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return false;
    };
    matches!(version, "2a" | "2b" | "2x" | "2y")
        && cost.len() == 2
        && cost
            .parse::<u32>()
            .is_ok_and(|cost| (4..=31).contains(&cost))
        && rest.len() == 53
        && rest.bytes().all(|b| CRYPT_ALPHABET.contains(&b))
}

/// `bytes` in crypt's base-64 alphabet.
fn encode_crypt64(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| char::from(CRYPT_ALPHABET[usize::from(byte & 0x3f)]))
        .collect()
}

/// User and password of an `Authorization: Basic …` header.
pub fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let encoded = authorization.strip_prefix("Basic ")?.trim();
    let decoded = String::from_utf8(base64_decode(encoded)?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits = 0u32;
    let mut count = 0;
    for c in text.bytes() {
        bits = (bits << 6) | u32::from(value(c)?);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// The alphabet of crypt's base-64 encoding.
const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 crypt (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", 2007): the full
/// `$5$[rounds=N$]salt$hash` string for `password` with the salt and rounds of `setting`.
pub fn sha256_crypt(password: &[u8], setting: &str) -> Option<String> {
    let rest = setting.strip_prefix("$5$")?;
    let (rounds, rest, explicit_rounds) = match rest.strip_prefix("rounds=") {
        Some(after) => {
            let (number, rest) = after.split_once('$')?;
            let rounds: u32 = number.parse().ok()?;
            (rounds.clamp(1000, 999_999_999), rest, true)
        }
        None => (5000, rest, false),
    };
    let salt = rest.split('$').next()?;
    let salt = &salt.as_bytes()[..salt.len().min(16)];
    let sha = |parts: &[&[u8]]| {
        let mut context = Context::new(&SHA256);
        for part in parts {
            context.update(part);
        }
        context.finish()
    };

    let b = sha(&[password, salt, password]);
    let mut a = Context::new(&SHA256);
    a.update(password);
    a.update(salt);
    let mut left = password.len();
    while left > 32 {
        a.update(b.as_ref());
        left -= 32;
    }
    a.update(&b.as_ref()[..left]);
    let mut length = password.len();
    while length > 0 {
        if length & 1 == 1 {
            a.update(b.as_ref());
        } else {
            a.update(password);
        }
        length >>= 1;
    }
    let a = a.finish();

    let repeated = |input: &[u8], times: usize, length: usize| {
        let mut context = Context::new(&SHA256);
        for _ in 0..times {
            context.update(input);
        }
        let block = context.finish();
        block
            .as_ref()
            .iter()
            .copied()
            .cycle()
            .take(length)
            .collect::<Vec<u8>>()
    };
    let p = repeated(password, password.len(), password.len());
    let s = repeated(salt, 16 + usize::from(a.as_ref()[0]), salt.len());

    let mut c = a.as_ref().to_vec();
    for round in 0..rounds {
        let mut context = Context::new(&SHA256);
        if round & 1 == 1 {
            context.update(&p);
        } else {
            context.update(&c);
        }
        if round % 3 != 0 {
            context.update(&s);
        }
        if round % 7 != 0 {
            context.update(&p);
        }
        if round & 1 == 1 {
            context.update(&c);
        } else {
            context.update(&p);
        }
        c = context.finish().as_ref().to_vec();
    }

    let mut out = String::from("$5$");
    if explicit_rounds {
        out.push_str(&format!("rounds={rounds}$"));
    }
    out.push_str(std::str::from_utf8(salt).ok()?);
    out.push('$');
    let mut encode = |b2: u8, b1: u8, b0: u8, characters: usize| {
        let mut word = (u32::from(b2) << 16) | (u32::from(b1) << 8) | u32::from(b0);
        for _ in 0..characters {
            out.push(char::from(CRYPT_ALPHABET[(word & 0x3f) as usize]));
            word >>= 6;
        }
    };
    for (i, j, k) in [
        (0, 10, 20),
        (21, 1, 11),
        (12, 22, 2),
        (3, 13, 23),
        (24, 4, 14),
        (15, 25, 5),
        (6, 16, 26),
        (27, 7, 17),
        (18, 28, 8),
        (9, 19, 29),
    ] {
        encode(c[i], c[j], c[k], 4);
    }
    encode(0, c[31], c[30], 3);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_crypt_matches_the_published_vectors() {
        // As `openssl passwd -5 -salt saltstring 'Hello world!'` and glibc's crypt(3) (with
        // rounds=10000) compute them.
        assert_eq!(
            sha256_crypt(b"Hello world!", "$5$saltstring").unwrap(),
            "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
        );
        assert_eq!(
            sha256_crypt(b"Hello world!", "$5$rounds=10000$saltstringsaltstring").unwrap(),
            "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"
        );
    }

    #[test]
    fn htpasswd_files_check_basic_credentials() {
        let bcrypt_hash = bcrypt::hash("s3cret", 4).unwrap();
        let file = format!(
            "# viewers\nann:{bcrypt_hash}\nbob:$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5\n"
        );
        let users = Htpasswd::parse(&file).unwrap();
        assert!(users.check("ann", "s3cret"));
        assert!(users.check("ann", "s3cret"), "remembered");
        assert!(!users.check("ann", "wrong"));
        assert!(users.check("bob", "Hello world!"));
        assert!(!users.check("carol", "Hello world!"));
        assert!(
            !users.check("ann", &"s3cret".repeat(100)),
            "too long to hash"
        );
        assert!(
            Htpasswd::parse("dave:$apr1$abc$def\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert_eq!(
            basic_credentials("Basic Ym9iOkhlbGxvIHdvcmxkIQ=="),
            Some(("bob".into(), "Hello world!".into()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
    }

    /// An unknown user costs what a known one with a wrong password does: the same kind of
    /// hash at the same cost, as callgrind would count it.
    #[test]
    fn unknown_users_are_checked_against_a_decoy_of_the_same_cost() {
        let sha = Htpasswd::parse(
            "bob:$5$rounds=10000$saltstringsaltstring$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA\n",
        )
        .unwrap();
        assert!(sha.decoy.starts_with("$5$rounds=10000$"), "{}", sha.decoy);
        let bcrypt_hash = bcrypt::hash("x", 5).unwrap();
        let bcrypt_users = Htpasswd::parse(&format!("ann:{bcrypt_hash}\n")).unwrap();
        assert!(
            bcrypt_users.decoy.starts_with("$2b$05$"),
            "{}",
            bcrypt_users.decoy
        );
        // Nobody gets in with the decoy: not even whoever guessed its password.
        assert!(!bcrypt_users.check("nobody", ""));
        assert!(Htpasswd::parse("carol:$5$x\n").is_ok());
        assert!(Htpasswd::parse("dave:$2y$broken\n").is_err());
    }
}
