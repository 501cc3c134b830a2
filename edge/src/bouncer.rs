//! Bouncers decide who is let in. Each is sans-IO: what the request presents, and the time, in;
//! a verdict out. They compose with `all(…)` (every one must allow) and `any(…)` (one is
//! enough). The token bouncer checks keycards (EdgeAuth 2.0, DESIGN.md "Keycards").

use estuary_proto::keycard::{Keycard, KeycardKey};

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
    /// Unix seconds.
    pub now: u64,
}

#[derive(Clone, Debug)]
pub enum Bouncer {
    /// Keycards signed with one of these keys, whose ACL covers the path.
    Token(Vec<KeycardKey>),
    All(Vec<Bouncer>),
    Any(Vec<Bouncer>),
}

impl Bouncer {
    pub fn judge(&self, visitor: &Visitor) -> Verdict {
        match self {
            Bouncer::Token(keys) => token(keys, visitor),
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

fn token(keys: &[KeycardKey], visitor: &Visitor) -> Verdict {
    let Some(text) = visitor.keycard else {
        return Verdict::Deny {
            status: 403,
            reason:
                "a keycard is required (?keycard=…, a keycard cookie, or Authorization: Bearer …)"
                    .into(),
        };
    };
    match Keycard::parse(text).and_then(|card| card.verify(keys, visitor.path, visitor.now)) {
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
                start: None,
                expires,
                acl: acl.into(),
                id: None,
                data: None,
            },
            &key(),
        )
    }

    fn visit<'a>(path: &'a str, keycard: Option<&'a str>) -> Visitor<'a> {
        Visitor {
            path,
            keycard,
            now: 1000,
        }
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
