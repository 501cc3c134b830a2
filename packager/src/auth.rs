//! Who may do what on the packager's own routes: an ingest needs a keycard for its path (when
//! the packager has keycard keys), and `/admin/*` needs the admin token or a keycard that lets
//! its holder ingest the channel. Both come as `Authorization: Bearer …`. The answers say why
//! a credential does not do, with the status that goes with it.

use std::fmt;
use std::net::IpAddr;

use estuary_proto::keycard::{self, Keycard, KeycardError, KeycardKey};
use estuary_proto::url::{ChannelName, ingest_acl};
use hyper::{HeaderMap, Request, StatusCode};
use ring::hmac;

/// Why a request's keycard does not let it at a path.
#[derive(Debug, thiserror::Error)]
pub enum KeycardRefusal {
    #[error("a keycard is required for {path} (Authorization: Bearer …)")]
    Missing { path: String },
    #[error("the keycard for {path} cannot be read: {error}")]
    Unreadable { path: String, error: KeycardError },
    #[error("the keycard does not let its holder at {path}: {error}")]
    NotAllowed { path: String, error: KeycardError },
}

impl KeycardRefusal {
    /// 401 without a keycard one can read, 403 with one that does not do.
    pub fn status(&self) -> StatusCode {
        match self {
            KeycardRefusal::Missing { .. } | KeycardRefusal::Unreadable { .. } => {
                StatusCode::UNAUTHORIZED
            }
            KeycardRefusal::NotAllowed { .. } => StatusCode::FORBIDDEN,
        }
    }
}

/// Checks that `headers` carry a keycard, signed with one of `keys`, that lets its holder
/// (from the address `client`, when known) at `path` at `now` (Unix seconds).
pub fn check_keycard(
    keys: &[KeycardKey],
    headers: &HeaderMap,
    client: Option<IpAddr>,
    path: &str,
    now: u64,
) -> Result<(), KeycardRefusal> {
    let path = || path.to_owned();
    let text = bearer(headers).ok_or_else(|| KeycardRefusal::Missing { path: path() })?;
    let card = Keycard::parse(text).map_err(|error| KeycardRefusal::Unreadable {
        path: path(),
        error,
    })?;
    card.verify(keys, &path(), client, now)
        .map(|_| ())
        .map_err(|error| KeycardRefusal::NotAllowed {
            path: path(),
            error,
        })
}

/// The address a request came from (the connection puts it among the request's extensions).
pub fn client<B>(request: &Request<B>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<std::net::SocketAddr>()
        .map(|peer| peer.ip())
}

/// The credential of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix(keycard::AUTHORIZATION_SCHEME))
        .map(str::trim)
}

/// The admin token, kept so that a presented one is compared with it in constant time: both
/// are signed with a key made at start-up and ring compares the signatures.
#[derive(Clone)]
pub struct AdminToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    #[error(
        "the admin token is {length} characters; use at least {} (e.g. `openssl rand -hex 16`)",
        AdminToken::MIN_LENGTH
    )]
    TooShort { length: usize },
    #[error("the system's random number generator failed, so the admin token cannot be kept")]
    NoRandomness,
}

impl AdminToken {
    /// Tokens shorter than this are refused: they could be guessed.
    pub const MIN_LENGTH: usize = 16;

    pub fn new(token: &str) -> Result<AdminToken, AdminTokenError> {
        if token.len() < Self::MIN_LENGTH {
            return Err(AdminTokenError::TooShort {
                length: token.len(),
            });
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| AdminTokenError::NoRandomness)?;
        let tag = hmac::sign(&key, token.as_bytes());
        Ok(AdminToken { key, tag })
    }

    /// Whether `presented` is the token (in time that does not depend on where they differ).
    pub fn matches(&self, presented: &str) -> bool {
        hmac::verify(&self.key, presented.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

/// Never shows the token.
impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

/// Why a request may not administer a channel.
#[derive(Debug, thiserror::Error)]
pub enum AdminRefusal {
    #[error(
        "this packager has no admin credential configured: start it with --admin-token TOKEN \
         (ESTUARY_PACKAGER_ADMIN_TOKEN, admin_token in its config file), or --keycard-secret to \
         accept ingest keycards"
    )]
    NotConfigured,
    #[error("a credential is required: Authorization: Bearer <admin token or ingest keycard>")]
    Missing,
    #[error("the credential is not the admin token")]
    WrongToken,
    #[error(
        "the credential is neither the admin token nor a good keycard for channel {channel}: {refusal}"
    )]
    BadKeycard {
        channel: ChannelName,
        refusal: KeycardRefusal,
    },
}

impl AdminRefusal {
    /// 403 when no credential is configured at all or the one presented is not good, 401
    /// when none is presented.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminRefusal::Missing => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// Says whether `headers` carry the admin token itself, for what concerns the whole packager
/// (a reload): no keycard will do.
pub fn authorize_operator(
    token: Option<&AdminToken>,
    headers: &HeaderMap,
) -> Result<(), AdminRefusal> {
    let token = token.ok_or(AdminRefusal::NotConfigured)?;
    let presented = bearer(headers).ok_or(AdminRefusal::Missing)?;
    if token.matches(presented) {
        Ok(())
    } else {
        Err(AdminRefusal::WrongToken)
    }
}

/// Says whether `headers` carry a credential for administering `channel`: the admin token, or
/// a keycard signed with one of `keys` whose ACL covers the channel's ingest.
pub fn authorize(
    token: Option<&AdminToken>,
    keys: &[KeycardKey],
    headers: &HeaderMap,
    client: Option<IpAddr>,
    channel: &ChannelName,
    now: u64,
) -> Result<(), AdminRefusal> {
    if token.is_none() && keys.is_empty() {
        return Err(AdminRefusal::NotConfigured);
    }
    let presented = bearer(headers).ok_or(AdminRefusal::Missing)?;
    if token.is_some_and(|token| token.matches(presented)) {
        return Ok(());
    }
    if keys.is_empty() {
        return Err(AdminRefusal::WrongToken);
    }
    // An ingest keycard of the channel (ACL /ingest/{channel}/*) covers this path.
    let path = format!("{}metadata", ingest_acl(channel).trim_end_matches('*'));
    check_keycard(keys, headers, client, &path, now).map_err(|refusal| AdminRefusal::BadKeycard {
        channel: channel.clone(),
        refusal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use estuary_proto::KeycardRequest;
    use estuary_proto::keycard::sign;

    const TOKEN: &str = "0123456789abcdef0123";

    fn with_bearer(credential: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::AUTHORIZATION,
            format!("Bearer {credential}").parse().unwrap(),
        );
        headers
    }

    fn keycard(key: &KeycardKey, acl: &str) -> String {
        let request = KeycardRequest {
            expires: 2_000_000_000,
            acl: acl.into(),
            ..Default::default()
        };
        sign(&request, key)
    }

    #[test]
    fn short_tokens_are_refused_and_tokens_never_show() {
        let error = AdminToken::new("short").unwrap_err();
        assert_eq!(error, AdminTokenError::TooShort { length: 5 });
        assert!(error.to_string().contains("at least 16"), "{error}");
        let token = AdminToken::new(TOKEN).unwrap();
        assert!(token.matches(TOKEN));
        assert!(!token.matches("0123456789abcdef0124"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "AdminToken(…)");
    }

    #[test]
    fn admin_needs_a_credential_whatever_is_configured() {
        let demo = ChannelName::new("demo").unwrap();
        let now = 1_800_000_000;
        // Nothing configured: refused, saying how to configure one.
        let refusal = authorize(None, &[], &with_bearer(TOKEN), None, &demo, now).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        assert!(refusal.to_string().contains("--admin-token"), "{refusal}");

        let token = AdminToken::new(TOKEN).unwrap();
        let (key, _) = KeycardKey::generate(None);
        let (other_key, _) = KeycardKey::generate(None);
        let keys = std::slice::from_ref(&key);
        assert!(authorize(Some(&token), &[], &with_bearer(TOKEN), None, &demo, now).is_ok());
        let refusal =
            authorize(Some(&token), &[], &HeaderMap::new(), None, &demo, now).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED);
        let refusal = authorize(
            Some(&token),
            &[],
            &with_bearer("wrong-token-wrong-token"),
            None,
            &demo,
            now,
        )
        .unwrap_err();
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);

        // An ingest keycard of the channel does; one of another channel, or signed with
        // another key, does not.
        let good = keycard(&key, "/ingest/demo/*");
        assert!(authorize(None, keys, &with_bearer(&good), None, &demo, now).is_ok());
        assert!(authorize(Some(&token), keys, &with_bearer(&good), None, &demo, now).is_ok());
        for bad in [
            keycard(&key, "/ingest/other/*"),
            keycard(&key, "/live/demo/*"),
            keycard(&other_key, "/ingest/demo/*"),
            "not-a-keycard".to_owned(),
        ] {
            let refusal =
                authorize(Some(&token), keys, &with_bearer(&bad), None, &demo, now).unwrap_err();
            assert_eq!(refusal.status(), StatusCode::FORBIDDEN, "{bad}: {refusal}");
            assert!(refusal.to_string().contains("channel demo"), "{refusal}");
        }
    }

    #[test]
    fn ingest_keycards_are_missing_unreadable_or_not_allowed() {
        let (key, _) = KeycardKey::generate(None);
        let keys = std::slice::from_ref(&key);
        let path = "/ingest/demo/v720";
        let check = |headers: &HeaderMap| check_keycard(keys, headers, None, path, 1_800_000_000);
        let missing = check(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert!(missing.to_string().contains(path), "{missing}");
        let unreadable = check(&with_bearer("st=x")).unwrap_err();
        assert_eq!(unreadable.status(), StatusCode::UNAUTHORIZED);
        let elsewhere = check(&with_bearer(&keycard(&key, "/ingest/other/*"))).unwrap_err();
        assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
        assert!(check(&with_bearer(&keycard(&key, "/ingest/demo/*"))).is_ok());
    }
}
