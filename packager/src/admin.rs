//! `/admin/*`: what a channel's operator may do and its viewers may not. For now that is
//! setting the title (`GET /admin/metadata`, the Icecast convention radio playout software
//! speaks). Every request needs a credential: the admin token (`--admin-token`), or a keycard
//! that lets its holder ingest the channel. With neither configured, nothing is allowed, and
//! the answer says how to configure one. Edges never forward `/admin/*`.

use std::fmt;
use std::net::IpAddr;

use estuary_http::{Body, problem, respond};
use estuary_proto::KeycardKey;
use estuary_proto::url::{ChannelName, ingest_acl};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use ring::hmac;

use crate::receiver::{bearer, check_keycard, client};
use crate::server::{Shared, utc_now};

/// The longest title accepted (ICY blocks carry at most 4080 bytes of it).
pub const MAX_TITLE: usize = 1024;

/// The answer when no credential is configured.
const NOT_CONFIGURED: &str = "this packager has no admin credential configured: start it with \
    --admin-token TOKEN (ESTUARY_PACKAGER_ADMIN_TOKEN), or --keycard-secret to accept ingest keycards";

/// The admin token, kept so that a presented one is compared with it in constant time: both
/// are signed with a key made at start-up and ring compares the signatures.
#[derive(Clone)]
pub struct AdminToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl AdminToken {
    /// Tokens shorter than this are refused: they could be guessed.
    pub const MIN_LENGTH: usize = 16;

    pub fn new(token: &str) -> Result<AdminToken, String> {
        if token.len() < Self::MIN_LENGTH {
            return Err(format!(
                "the admin token is {} characters; use at least {} (e.g. `openssl rand -hex 16`)",
                token.len(),
                Self::MIN_LENGTH
            ));
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| "the system's random number generator failed".to_owned())?;
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

/// Says whether `headers` carry a credential for administering `channel`: the admin token, or
/// a keycard signed with one of `keys` whose ACL covers the channel's ingest. 403 when no
/// credential is configured at all, 401 when none is presented, 403 when the one presented
/// is not good.
pub fn authorize(
    token: Option<&AdminToken>,
    keys: &[KeycardKey],
    headers: &HeaderMap,
    client: Option<IpAddr>,
    channel: &ChannelName,
    now: u64,
) -> Result<(), (StatusCode, String)> {
    if token.is_none() && keys.is_empty() {
        return Err((StatusCode::FORBIDDEN, NOT_CONFIGURED.into()));
    }
    let Some(presented) = bearer(headers) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "a credential is required: Authorization: Bearer <admin token or ingest keycard>"
                .into(),
        ));
    };
    if token.is_some_and(|token| token.matches(presented)) {
        return Ok(());
    }
    if keys.is_empty() {
        return Err((
            StatusCode::FORBIDDEN,
            "the credential is not the admin token".into(),
        ));
    }
    // An ingest keycard of the channel (ACL /ingest/{channel}/*) covers this path.
    let path = format!("{}metadata", ingest_acl(channel).trim_end_matches('*'));
    check_keycard(keys, headers, client, &path, now).map_err(|(_, reason)| {
        (
            StatusCode::FORBIDDEN,
            format!("the credential is neither the admin token nor a good keycard: {reason}"),
        )
    })
}

/// `GET /admin/metadata?mount=/live/{channel}/stream.mp3&mode=updinfo&song=TITLE`: a radio's
/// playout sets the channel's "now playing", the way it does on Icecast (the mount names the
/// channel; any of its streams will do).
pub fn set_title(shared: &Shared, request: &Request<Incoming>) -> Response<Body> {
    // Said before anything else is looked at: no request can succeed.
    if shared.admin_token.is_none() && shared.keys.is_empty() {
        return problem(StatusCode::FORBIDDEN, NOT_CONFIGURED);
    }
    let query = request.uri().query().unwrap_or("");
    let value = |name: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            // Form encoding: a `+` is a space.
            (key == name).then(|| estuary_proto::url::percent_decode(&value.replace('+', " ")))
        })
    };
    if value("mode").as_deref() != Some("updinfo") {
        return problem(StatusCode::BAD_REQUEST, "mode must be updinfo");
    }
    let Some(song) = value("song") else {
        return problem(StatusCode::BAD_REQUEST, "song=TITLE is missing");
    };
    if song.len() > MAX_TITLE {
        return problem(
            StatusCode::BAD_REQUEST,
            format!(
                "the title is {} bytes; the longest accepted is {MAX_TITLE}",
                song.len()
            ),
        );
    }
    let mount = value("mount").unwrap_or_default();
    let channel = match mount.strip_prefix("/live/").map(|rest| rest.split('/')) {
        Some(mut names) => ChannelName::new(names.next().unwrap_or("")).map_err(|e| e.to_string()),
        None => Err(format!(
            "mount {mount:?} is not /live/{{channel}}/stream.{{ext}}"
        )),
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(reason) => return problem(StatusCode::BAD_REQUEST, reason),
    };
    let now = utc_now().as_secs();
    let allowed = authorize(
        shared.admin_token.as_ref(),
        &shared.keys,
        request.headers(),
        client(request),
        &channel,
        now,
    );
    if let Err((status, reason)) = allowed {
        tracing::warn!(%channel, %reason, "title refused");
        let mut response = problem(status, reason);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
        }
        return response;
    }
    // Titles are kept per channel while it lives: one the packager does not have is refused.
    if shared.read(|window| window.tracks(&channel).next().is_none()) {
        return problem(
            StatusCode::NOT_FOUND,
            format!("channel {channel} is not live on this packager"),
        );
    }
    tracing::info!(%channel, title = %song, "now playing");
    shared.continuous.set_title(&channel, &song);
    let mut response = respond(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        Body::text("Metadata update successful\n"),
    );
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
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
        assert!(
            AdminToken::new("short")
                .unwrap_err()
                .contains("at least 16")
        );
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
        let (status, reason) =
            authorize(None, &[], &with_bearer(TOKEN), None, &demo, now).unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(reason.contains("--admin-token"), "{reason}");

        let token = AdminToken::new(TOKEN).unwrap();
        let (key, _) = KeycardKey::generate(None);
        let (other_key, _) = KeycardKey::generate(None);
        let keys = std::slice::from_ref(&key);
        assert!(authorize(Some(&token), &[], &with_bearer(TOKEN), None, &demo, now).is_ok());
        let (status, _) =
            authorize(Some(&token), &[], &HeaderMap::new(), None, &demo, now).unwrap_err();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = authorize(
            Some(&token),
            &[],
            &with_bearer("wrong-token-wrong-token"),
            None,
            &demo,
            now,
        )
        .unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);

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
            let (status, reason) =
                authorize(Some(&token), keys, &with_bearer(&bad), None, &demo, now).unwrap_err();
            assert_eq!(status, StatusCode::FORBIDDEN, "{bad}: {reason}");
        }
    }
}
