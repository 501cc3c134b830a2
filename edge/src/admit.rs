//! Who may come in. A request for media (`/live`, `/vod`) meets the revocation list, then the
//! bouncers, on its canonical path; everything else of the layout is open. The decision is
//! sans IO ([`judge`]: what the request presents, and the time, in; admitted or refused out);
//! [`Gate::admit`] runs it off the async workers when it may have to hash a password, a few at
//! a time, so that a flood of wrong passwords costs the edge a bounded share of its CPU and
//! never stalls the viewers being served.

use std::net::IpAddr;
use std::sync::Arc;

use estuary_proto::url::PublicPath;
use hyper::header::{self, HeaderMap};
use hyper::{StatusCode, Uri};
use tokio::sync::Semaphore;

use crate::bouncer::{Bouncer, Verdict, Visitor};
use crate::revoked::Revoked;
use crate::{carry, htpasswd};

/// Password checks that may run at once; more wait their turn.
const PASSWORD_CHECKS: usize = 4;

/// What a request presents to be let in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A keycard, from the query, a cookie or `Authorization: Bearer`.
    pub keycard: Option<String>,
    /// User and password of `Authorization: Basic`.
    pub basic: Option<(String, String)>,
}

impl Credentials {
    pub fn of(uri: &Uri, headers: &HeaderMap) -> Credentials {
        let text =
            |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
        Credentials {
            keycard: carry::find_keycard(
                uri.query(),
                text(header::COOKIE),
                text(header::AUTHORIZATION),
            ),
            basic: text(header::AUTHORIZATION).and_then(htpasswd::basic_credentials),
        }
    }
}

/// A viewer let in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    /// The keycard that let the viewer in, to carry into the URIs of a playlist.
    pub carried: Option<String>,
    /// When the viewer's credentials stop working (Unix seconds).
    pub until: Option<u64>,
    /// The id of the keycard presented, watched for revocation.
    pub keycard_id: Option<String>,
}

/// A request turned away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    /// Whether the answer asks for HTTP Basic credentials (`WWW-Authenticate`).
    pub fn asks_for_password(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }
}

/// The bouncers and the revocation list of an edge.
pub struct Gate {
    bouncer: Option<Arc<Bouncer>>,
    revoked: Option<Arc<Revoked>>,
    /// Whether a bouncer checks passwords, which may take tens of milliseconds of hashing.
    checks_passwords: bool,
    password_checks: Arc<Semaphore>,
}

impl Gate {
    pub fn new(bouncer: Option<Bouncer>, revoked: Option<Arc<Revoked>>) -> Gate {
        Gate {
            checks_passwords: bouncer.as_ref().is_some_and(Bouncer::checks_passwords),
            bouncer: bouncer.map(Arc::new),
            revoked,
            password_checks: Arc::new(Semaphore::new(PASSWORD_CHECKS)),
        }
    }

    pub fn revoked(&self) -> Option<&Arc<Revoked>> {
        self.revoked.as_ref()
    }

    /// Judges a request for `path` from `client` at Unix second `now`.
    pub async fn admit(
        &self,
        path: &PublicPath,
        client: IpAddr,
        credentials: Credentials,
        now: u64,
    ) -> Result<Admitted, Refusal> {
        if !path.is_media() {
            return Ok(Admitted::default());
        }
        let path = path.path();
        if !(self.checks_passwords && credentials.basic.is_some()) {
            return judge(
                self.bouncer.as_deref(),
                self.revoked.as_deref(),
                &path,
                client,
                &credentials,
                now,
            );
        }
        let permit = self.password_checks.clone().acquire_owned().await;
        let (bouncer, revoked) = (self.bouncer.clone(), self.revoked.clone());
        let judged = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            judge(
                bouncer.as_deref(),
                revoked.as_deref(),
                &path,
                client,
                &credentials,
                now,
            )
        })
        .await;
        judged.unwrap_or_else(|_| {
            Err(Refusal {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                reason: "the password check failed".into(),
            })
        })
    }
}

/// The revocation list, then the bouncers, on a request for media at `path` (canonical).
pub fn judge(
    bouncer: Option<&Bouncer>,
    revoked: Option<&Revoked>,
    path: &str,
    client: IpAddr,
    credentials: &Credentials,
    now: u64,
) -> Result<Admitted, Refusal> {
    // A revoked keycard is refused whatever the bouncers would say. (Its id is read only when
    // there is a revocation list.)
    let keycard_id = credentials
        .keycard
        .as_deref()
        .filter(|_| revoked.is_some())
        .and_then(|card| estuary_proto::Keycard::parse(card).ok())
        .and_then(|card| card.id);
    if let (Some(revoked), Some(id)) = (revoked, &keycard_id)
        && revoked.contains(id)
    {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            reason: format!("keycard {id} is revoked"),
        });
    }
    let Some(bouncer) = bouncer else {
        return Ok(Admitted::default());
    };
    let visitor = Visitor {
        path,
        keycard: credentials.keycard.as_deref(),
        client,
        basic: credentials
            .basic
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str())),
        now,
    };
    match bouncer.judge(&visitor) {
        Verdict::Allow { until } => Ok(Admitted {
            carried: credentials.keycard.clone(),
            until,
            keycard_id,
        }),
        Verdict::Deny { status, reason } => Err(Refusal {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bouncer::CountryRule;
    use crate::geo::{CountryDatabase, testing};
    use crate::htpasswd::Htpasswd;
    use estuary_proto::keycard::{self, KeycardKey, KeycardRequest};

    /// 2026-11-21 00:00:00 UTC.
    const NOW: u64 = 1_795_219_200;
    const PATH: &str = "/live/demo/master.m3u8";
    /// In the test database: GB.
    const LONDON: &str = "81.2.69.142";
    /// In the test database: SE.
    const LINKOPING: &str = "89.160.20.112";
    /// In no country of the test database.
    const NOWHERE: &str = "192.0.2.1";

    fn key() -> KeycardKey {
        KeycardKey::from_hex(Some("k"), "00112233445566778899aabbccddeeff").unwrap()
    }

    fn keycard(request: KeycardRequest) -> String {
        keycard::sign(&request, &key())
    }

    fn card(acl: &str, expires: u64) -> String {
        keycard(KeycardRequest {
            expires,
            acl: acl.into(),
            id: Some("viewer-1".into()),
            ..KeycardRequest::default()
        })
    }

    fn countries() -> Bouncer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("countries.mmdb");
        std::fs::write(&path, testing::database(true)).unwrap();
        Bouncer::Country(CountryRule {
            database: Arc::new(CountryDatabase::open(&path).unwrap()),
            allow: vec!["GB".into()],
            deny: Vec::new(),
            unknown_allowed: false,
        })
    }

    fn passwords() -> Bouncer {
        let hash = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
        Bouncer::Password(Arc::new(Htpasswd::parse(&format!("bob:{hash}\n")).unwrap()))
    }

    fn credentials(keycard: Option<String>, basic: Option<(&str, &str)>) -> Credentials {
        Credentials {
            keycard,
            basic: basic.map(|(user, password)| (user.into(), password.into())),
        }
    }

    /// A case: its name, the bouncer, the client, what it presents, when, and the outcome
    /// (admitted until, or the refusal's status).
    type Row = (
        &'static str,
        Option<Bouncer>,
        &'static str,
        Credentials,
        u64,
        Result<Option<u64>, u16>,
    );

    /// Every bouncer, each outcome: the admission (with what it carries) or the refusal's
    /// status, for one request judged with no socket.
    #[test]
    fn every_bouncer_outcome() {
        let good = card("/live/demo/*", NOW + 60);
        let network = Bouncer::Network {
            allow: vec!["81.2.69.0/24".parse().unwrap()],
            deny: vec!["81.2.69.142/32".parse().unwrap()],
        };
        let window = Bouncer::Window {
            from: Some(NOW - 10),
            until: Some(NOW + 10),
        };
        let bound = keycard(KeycardRequest {
            ip: Some(LINKOPING.parse().unwrap()),
            expires: NOW + 60,
            acl: "/live/demo/*".into(),
            ..KeycardRequest::default()
        });
        let rows: Vec<Row> = vec![
            (
                "no bouncer lets everyone in",
                None,
                NOWHERE,
                credentials(None, None),
                NOW,
                Ok(None),
            ),
            (
                "token: a good keycard",
                Some(Bouncer::Token(vec![key()])),
                NOWHERE,
                credentials(Some(good.clone()), None),
                NOW,
                Ok(Some(NOW + 60)),
            ),
            (
                "token: none",
                Some(Bouncer::Token(vec![key()])),
                NOWHERE,
                credentials(None, None),
                NOW,
                Err(403),
            ),
            (
                "token: expired",
                Some(Bouncer::Token(vec![key()])),
                NOWHERE,
                credentials(Some(good.clone()), None),
                NOW + 60,
                Err(403),
            ),
            (
                "token: another channel's",
                Some(Bouncer::Token(vec![key()])),
                NOWHERE,
                credentials(Some(card("/live/other/*", NOW + 60)), None),
                NOW,
                Err(403),
            ),
            (
                "token: tampered",
                Some(Bouncer::Token(vec![key()])),
                NOWHERE,
                credentials(Some(good.replace("exp=", "exp=1")), None),
                NOW,
                Err(403),
            ),
            (
                "token: bound to this address",
                Some(Bouncer::Token(vec![key()])),
                LINKOPING,
                credentials(Some(bound.clone()), None),
                NOW,
                Ok(Some(NOW + 60)),
            ),
            (
                "token: bound to another address",
                Some(Bouncer::Token(vec![key()])),
                LONDON,
                credentials(Some(bound), None),
                NOW,
                Err(403),
            ),
            (
                "country: allowed",
                Some(countries()),
                LONDON,
                credentials(None, None),
                NOW,
                Ok(None),
            ),
            (
                "country: not allowed",
                Some(countries()),
                LINKOPING,
                credentials(None, None),
                NOW,
                Err(403),
            ),
            (
                "country: unknown",
                Some(countries()),
                NOWHERE,
                credentials(None, None),
                NOW,
                Err(403),
            ),
            (
                "network: allowed",
                Some(network.clone()),
                "81.2.69.7",
                credentials(None, None),
                NOW,
                Ok(None),
            ),
            (
                "network: denied range",
                Some(network.clone()),
                LONDON,
                credentials(None, None),
                NOW,
                Err(403),
            ),
            (
                "network: outside the allowed",
                Some(network),
                NOWHERE,
                credentials(None, None),
                NOW,
                Err(403),
            ),
            (
                "window: open",
                Some(window.clone()),
                NOWHERE,
                credentials(None, None),
                NOW,
                Ok(Some(NOW + 10)),
            ),
            (
                "window: not yet",
                Some(window.clone()),
                NOWHERE,
                credentials(None, None),
                NOW - 11,
                Err(403),
            ),
            (
                "window: closed",
                Some(window),
                NOWHERE,
                credentials(None, None),
                NOW + 10,
                Err(403),
            ),
            (
                "password: right",
                Some(passwords()),
                NOWHERE,
                credentials(None, Some(("bob", "Hello world!"))),
                NOW,
                Ok(None),
            ),
            (
                "password: wrong",
                Some(passwords()),
                NOWHERE,
                credentials(None, Some(("bob", "nope"))),
                NOW,
                Err(401),
            ),
            (
                "password: unknown user",
                Some(passwords()),
                NOWHERE,
                credentials(None, Some(("eve", "Hello world!"))),
                NOW,
                Err(401),
            ),
            (
                "password: none",
                Some(passwords()),
                NOWHERE,
                credentials(None, None),
                NOW,
                Err(401),
            ),
            (
                "all: every one must allow",
                Some(Bouncer::All(vec![Bouncer::Token(vec![key()]), countries()])),
                LINKOPING,
                credentials(Some(good.clone()), None),
                NOW,
                Err(403),
            ),
            (
                "all: the earliest end",
                Some(Bouncer::All(vec![
                    Bouncer::Token(vec![key()]),
                    Bouncer::Window {
                        from: None,
                        until: Some(NOW + 5),
                    },
                ])),
                NOWHERE,
                credentials(Some(good.clone()), None),
                NOW,
                Ok(Some(NOW + 5)),
            ),
            (
                "any: one is enough",
                Some(Bouncer::Any(vec![Bouncer::Token(vec![key()]), countries()])),
                LONDON,
                credentials(None, None),
                NOW,
                Ok(None),
            ),
            (
                "any: none allows",
                Some(Bouncer::Any(vec![Bouncer::Token(vec![key()]), passwords()])),
                NOWHERE,
                credentials(None, None),
                NOW,
                Err(403),
            ),
        ];
        for (name, bouncer, client, credentials, now, expected) in rows {
            let judged = judge(
                bouncer.as_ref(),
                None,
                PATH,
                client.parse().unwrap(),
                &credentials,
                now,
            );
            let outcome = judged
                .as_ref()
                .map(|admitted| admitted.until)
                .map_err(|r| r.status.as_u16());
            assert_eq!(outcome, expected, "{name}: {judged:?}");
            if let Ok(admitted) = judged {
                assert_eq!(
                    admitted.carried, credentials.keycard,
                    "{name}: the keycard carried"
                );
            }
        }
    }

    #[test]
    fn a_revoked_keycard_is_refused_whatever_the_bouncers_say() {
        let revoked = Revoked::of(["viewer-1".to_owned()]);
        let card = card("/live/demo/*", NOW + 60);
        let client = NOWHERE.parse().unwrap();
        let with = credentials(Some(card.clone()), None);
        for bouncer in [None, Some(Bouncer::Token(vec![key()]))] {
            let refused =
                judge(bouncer.as_ref(), Some(&revoked), PATH, client, &with, NOW).unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN);
            assert!(refused.reason.contains("viewer-1"), "{}", refused.reason);
        }
        let other = Revoked::of(["someone-else".to_owned()]);
        let admitted = judge(
            Some(&Bouncer::Token(vec![key()])),
            Some(&other),
            PATH,
            client,
            &with,
            NOW,
        )
        .unwrap();
        assert_eq!(
            admitted.keycard_id.as_deref(),
            Some("viewer-1"),
            "watched for revocation"
        );
    }

    #[tokio::test]
    async fn only_media_meets_the_gate() {
        let gate = Gate::new(Some(Bouncer::Token(vec![key()])), None);
        let client = NOWHERE.parse().unwrap();
        for (target, admitted) in [
            ("/live/demo/master.m3u8", false),
            ("/vod/demo/1-2/master.m3u8", false),
            ("/play/demo", true),
            ("/web/hls.min.js", true),
            ("/healthz", true),
        ] {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let path = PublicPath::parse(path, Some(query)).unwrap();
            let outcome = gate.admit(&path, client, Credentials::default(), NOW).await;
            assert_eq!(outcome.is_ok(), admitted, "{target}");
        }
        // Passwords are checked off the async workers, with the same outcome.
        let gate = Gate::new(Some(passwords()), None);
        let path = PublicPath::parse("/live/demo/stream.mp3", None).unwrap();
        let right = credentials(None, Some(("bob", "Hello world!")));
        assert!(gate.admit(&path, client, right, NOW).await.is_ok());
        let wrong = credentials(None, Some(("bob", "x")));
        assert_eq!(
            gate.admit(&path, client, wrong, NOW)
                .await
                .unwrap_err()
                .status,
            401
        );
    }
}
