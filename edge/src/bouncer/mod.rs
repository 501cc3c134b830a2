//! Bouncers decide who is let in. Each is sans-IO: what the request presents, and the time, in;
//! a verdict out. They compose with `all(…)` (every one must allow) and `any(…)` (one is
//! enough). The token bouncer checks keycards (EdgeAuth 2.0, DESIGN.md "Keycards"); the
//! country bouncer looks the client up in a GeoIP database; the network bouncer checks CIDR
//! ranges; the window bouncer lets in only during a span of UTC time (an event's hours); the
//! password bouncer checks HTTP Basic credentials against an htpasswd file. How configured
//! bouncers combine is written as a rule (`rule`).

mod rule;

pub use rule::compose;

use std::net::IpAddr;
use std::sync::Arc;

use estuary_proto::keycard::{Keycard, KeycardKey};

use crate::geo::CountryDatabase;
use crate::htpasswd::Htpasswd;
use crate::net::{Cidr, any_contains};

/// What a bouncer says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let in; `until` is the Unix second after which the same credentials stop working.
    Allow { until: Option<u64> },
    /// Turned away with this HTTP status and why.
    Deny { status: u16, reason: String },
}

/// What a request presents to the bouncers.
#[derive(Clone, Copy, Debug)]
pub struct Visitor<'a> {
    pub path: &'a str,
    pub keycard: Option<&'a str>,
    /// The client's address (the socket's peer, or what a trusted proxy says).
    pub client: IpAddr,
    /// User and password of an `Authorization: Basic` header.
    pub basic: Option<(&'a str, &'a str)>,
    /// Unix seconds.
    pub now: u64,
}

#[derive(Clone, Debug)]
pub enum Bouncer {
    /// Keycards signed with one of these keys, whose ACL covers the path.
    Token(Vec<KeycardKey>),
    /// Clients by country (ISO 3166-1 codes).
    Country(CountryRule),
    /// Clients by address: denied ranges first, then (when there are any) only allowed ones.
    Network {
        allow: Vec<Cidr>,
        deny: Vec<Cidr>,
    },
    /// HTTP Basic credentials found in an htpasswd file.
    Password(Arc<Htpasswd>),
    /// Only from `from` until `until` (Unix seconds, either end open).
    Window {
        from: Option<u64>,
        until: Option<u64>,
    },
    All(Vec<Bouncer>),
    Any(Vec<Bouncer>),
}

#[derive(Clone, Debug)]
pub struct CountryRule {
    pub database: Arc<CountryDatabase>,
    /// When not empty, only these countries.
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// What addresses the database does not place get.
    pub unknown_allowed: bool,
}

impl Bouncer {
    /// Whether judging may hash a password: an htpasswd bouncer anywhere in it.
    pub fn checks_passwords(&self) -> bool {
        match self {
            Bouncer::Password(_) => true,
            Bouncer::All(bouncers) | Bouncer::Any(bouncers) => {
                bouncers.iter().any(Bouncer::checks_passwords)
            }
            _ => false,
        }
    }

    pub fn judge(&self, visitor: &Visitor) -> Verdict {
        match self {
            Bouncer::Token(keys) => token(keys, visitor),
            Bouncer::Country(rule) => country(rule, visitor),
            Bouncer::Password(users) => match visitor.basic {
                Some((user, password)) if users.check(user, password) => {
                    Verdict::Allow { until: None }
                }
                Some((user, _)) => Verdict::Deny {
                    status: 401,
                    reason: format!("wrong user name or password for {user:?}"),
                },
                None => Verdict::Deny {
                    status: 401,
                    reason: "a user name and password are required (HTTP Basic)".into(),
                },
            },
            Bouncer::Network { allow, deny } => {
                if any_contains(deny, visitor.client) {
                    deny_403(format!("{} is in a denied range", visitor.client))
                } else if !allow.is_empty() && !any_contains(allow, visitor.client) {
                    deny_403(format!("{} is not in an allowed range", visitor.client))
                } else {
                    Verdict::Allow { until: None }
                }
            }
            Bouncer::Window { from, until } => match (from, until) {
                (Some(from), _) if visitor.now < *from => deny_403(format!(
                    "this opens at {from} (Unix time; now {})",
                    visitor.now
                )),
                (_, Some(until)) if visitor.now >= *until => deny_403(format!(
                    "this closed at {until} (Unix time; now {})",
                    visitor.now
                )),
                (_, until) => Verdict::Allow { until: *until },
            },
            Bouncer::All(bouncers) => {
                let mut until = None;
                for bouncer in bouncers {
                    match bouncer.judge(visitor) {
                        Verdict::Allow { until: Some(t) } => {
                            until = Some(until.map_or(t, |u: u64| u.min(t)))
                        }
                        Verdict::Allow { until: None } => {}
                        deny => return deny,
                    }
                }
                Verdict::Allow { until }
            }
            Bouncer::Any(bouncers) => {
                let mut first_denial = None;
                for bouncer in bouncers {
                    match bouncer.judge(visitor) {
                        allow @ Verdict::Allow { .. } => return allow,
                        deny => {
                            first_denial.get_or_insert(deny);
                        }
                    }
                }
                first_denial.unwrap_or(Verdict::Deny {
                    status: 403,
                    reason: "no bouncer let this request in".into(),
                })
            }
        }
    }
}

fn deny_403(reason: String) -> Verdict {
    Verdict::Deny {
        status: 403,
        reason,
    }
}

fn country(rule: &CountryRule, visitor: &Visitor) -> Verdict {
    let Some(code) = rule.database.country(visitor.client) else {
        return if rule.unknown_allowed {
            Verdict::Allow { until: None }
        } else {
            deny_403(format!(
                "{} is in no country of {}",
                visitor.client,
                rule.database.description()
            ))
        };
    };
    let listed = |list: &[String]| list.iter().any(|c| c.eq_ignore_ascii_case(&code));
    if listed(&rule.deny) || (!rule.allow.is_empty() && !listed(&rule.allow)) {
        deny_403(format!(
            "viewers in {code} ({}) are not let in",
            visitor.client
        ))
    } else {
        Verdict::Allow { until: None }
    }
}

fn token(keys: &[KeycardKey], visitor: &Visitor) -> Verdict {
    let Some(text) = visitor.keycard else {
        return Verdict::Deny {
            status: 403,
            reason:
                "a keycard is required (?keycard=…, a keycard cookie, or Authorization: Bearer …)"
                    .into(),
        };
    };
    let checked = Keycard::parse(text)
        .and_then(|card| card.verify(keys, visitor.path, Some(visitor.client), visitor.now));
    match checked {
        Ok(grant) => Verdict::Allow {
            until: Some(grant.until),
        },
        Err(error) => Verdict::Deny {
            status: 403,
            reason: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estuary_proto::keycard::{KeycardRequest, sign};

    const KEY: &str = "00112233445566778899aabbccddeeff";

    fn key() -> KeycardKey {
        KeycardKey::from_hex(None, KEY).unwrap()
    }

    fn card(acl: &str, expires: u64) -> String {
        sign(
            &KeycardRequest {
                expires,
                acl: acl.into(),
                ..KeycardRequest::default()
            },
            &key(),
        )
    }

    fn visit<'a>(path: &'a str, keycard: Option<&'a str>) -> Visitor<'a> {
        Visitor {
            path,
            keycard,
            client: "192.0.2.1".parse().unwrap(),
            basic: None,
            now: 1000,
        }
    }

    #[test]
    fn networks_and_windows() {
        let network = Bouncer::Network {
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            deny: vec!["192.0.2.128/25".parse().unwrap()],
        };
        let at = |client: &str| Visitor {
            client: client.parse().unwrap(),
            ..visit("/live/a", None)
        };
        assert!(matches!(
            network.judge(&at("192.0.2.1")),
            Verdict::Allow { .. }
        ));
        assert!(matches!(
            network.judge(&at("192.0.2.200")),
            Verdict::Deny { .. }
        ));
        assert!(matches!(
            network.judge(&at("198.51.100.1")),
            Verdict::Deny { .. }
        ));
        let window = Bouncer::Window {
            from: Some(900),
            until: Some(1100),
        };
        assert_eq!(
            window.judge(&visit("/live/a", None)),
            Verdict::Allow { until: Some(1100) }
        );
        let later = Visitor {
            now: 1100,
            ..visit("/live/a", None)
        };
        assert!(matches!(
            window.judge(&later),
            Verdict::Deny { status: 403, .. }
        ));
    }

    #[test]
    fn token_verdicts_name_the_reason() {
        let bouncer = Bouncer::Token(vec![key()]);
        let good = card("/live/demo/*", 2000);
        assert_eq!(
            bouncer.judge(&visit("/live/demo/v720/1.m4s", Some(&good))),
            Verdict::Allow { until: Some(2000) }
        );
        let deny_reason = |verdict| match verdict {
            Verdict::Deny {
                status: 403,
                reason,
            } => reason,
            other => panic!("{other:?}"),
        };
        assert!(
            deny_reason(bouncer.judge(&visit("/live/demo/master.m3u8", None))).contains("required")
        );
        assert!(
            deny_reason(bouncer.judge(&visit("/live/other/master.m3u8", Some(&good))))
                .contains("does not cover")
        );
        let expired = card("/live/demo/*", 999);
        assert!(
            deny_reason(bouncer.judge(&visit("/live/demo/master.m3u8", Some(&expired))))
                .contains("expired")
        );
        let tampered = good.replace("exp=2000", "exp=9000");
        assert!(
            deny_reason(bouncer.judge(&visit("/live/demo/master.m3u8", Some(&tampered))))
                .contains("signature")
        );
        assert!(
            deny_reason(bouncer.judge(&visit("/live/demo/master.m3u8", Some("garbage~~="))))
                .contains("malformed")
        );
    }

    #[test]
    fn all_takes_the_earliest_end_and_any_the_first_yes() {
        let short = Bouncer::Token(vec![key()]);
        let card = card("/live/*", 1500);
        let all = Bouncer::All(vec![short.clone(), short.clone()]);
        assert_eq!(
            all.judge(&visit("/live/a", Some(&card))),
            Verdict::Allow { until: Some(1500) }
        );
        let other_key = Bouncer::Token(vec![
            KeycardKey::from_hex(None, "ffeeddccbbaa99887766554433221100").unwrap(),
        ]);
        let any = Bouncer::Any(vec![other_key.clone(), short]);
        assert!(matches!(
            any.judge(&visit("/live/a", Some(&card))),
            Verdict::Allow { .. }
        ));
        let none = Bouncer::Any(vec![other_key]);
        assert!(matches!(
            none.judge(&visit("/live/a", Some(&card))),
            Verdict::Deny { status: 403, .. }
        ));
    }
}
