//! The answer to a viewer, sans IO: who asks (the client's address) for what (a media path of
//! the public layout), what control knows (its routing tables, the registry's snapshot, what
//! the origins say of the channel), the channel's policy and the time in; a decision out: a
//! redirect to an edge with a fresh keycard, or why not. There is no HTTP here: the front door
//! and axum say the answer in HTTP (crate::redirect), and tests ask it directly.

use std::net::IpAddr;
use std::sync::Arc;

use estuary_proto::url::{ChannelName, PublicPath};

use crate::config::Policy;
use crate::keycards::Minter;
use crate::origins::Presence;
use crate::registry::Snapshot;
use crate::routing::{Decision, Request, Router};

/// Who asks for what.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The client: the socket's peer, or the address a trusted proxy names.
    pub client: IpAddr,
    pub path: &'a PublicPath,
}

/// What control knows when the viewer asks.
#[derive(Clone, Copy)]
pub struct Known<'a> {
    pub router: &'a Router,
    pub snapshot: &'a Snapshot,
    /// What the origins say of the channel as a live channel (`/vod/` paths do not ask them:
    /// an archive outlives its live channel).
    pub presence: Presence,
    /// Signs the redirect's keycard; none when keycards are off.
    pub minter: Option<&'a Minter>,
}

/// What control answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Go to the edge.
    Redirect(Redirect),
    /// The origins answered lately, and none has this live channel.
    ChannelAbsent(ChannelName),
    /// No site can take the viewer: the decision says why.
    NoSite(Arc<Decision>),
    /// Not a path viewers are sent to edges for (`/healthz`, the player page): only `/live/…`
    /// and `/vod/…` are.
    NotMedia,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    /// The edge's URL, the request's canonical target (its path and the query parameters the
    /// layout defines for it), and the fresh keycard.
    pub location: String,
    /// The `id=` of that keycard, for revocation.
    pub keycard_id: Option<String>,
    pub decision: Arc<Decision>,
}

impl Answer {
    /// The decision routing made, when it was asked.
    pub fn decision(&self) -> Option<&Arc<Decision>> {
        match self {
            Answer::Redirect(redirect) => Some(&redirect.decision),
            Answer::NoSite(decision) => Some(decision),
            Answer::ChannelAbsent(_) | Answer::NotMedia => None,
        }
    }
}

/// Where the viewer goes, by `policy`, at `unix_seconds` (when its keycard starts).
///
/// Of the request's query only the parameters of the layout stay (LL-HLS's `_HLS_msn`,
/// `_HLS_part`, `_HLS_skip`, a stream's `track`): the edge ignores any other, and a keycard
/// the viewer brought is replaced by the fresh one, whose ACL is the channel's.
pub fn answer(ask: Ask<'_>, known: Known<'_>, policy: Policy, unix_seconds: u64) -> Answer {
    let (root, channel) = match ask.path {
        PublicPath::Live { channel, .. } => ("live", channel),
        PublicPath::Vod { channel, .. } => ("vod", channel),
        _ => return Answer::NotMedia,
    };
    if root == "live" && known.presence == Presence::Absent {
        return Answer::ChannelAbsent(channel.clone());
    }
    let request = Request {
        client: ask.client,
        channel,
    };
    let decision = Arc::new(known.router.route(request, known.snapshot, policy));
    let Some(edge) = &decision.edge else {
        return Answer::NoSite(decision);
    };
    let keycard = known
        .minter
        .map(|minter| minter.mint(root, channel.as_str(), unix_seconds));
    let target = ask.path.to_string();
    let mut location = String::with_capacity(edge.url.len() + target.len() + 180);
    location.push_str(edge.url.trim_end_matches('/'));
    location.push_str(&target);
    if let Some(keycard) = &keycard {
        location.push(if target.contains('?') { '&' } else { '?' });
        location.push_str("keycard=");
        location.push_str(&keycard.text);
    }
    Answer::Redirect(Redirect {
        location,
        keycard_id: keycard.map(|keycard| keycard.id),
        decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Site;
    use crate::coverage::Coverage;
    use crate::registry::EdgeState;
    use estuary_proto::Mood;
    use estuary_proto::keycard::{Keycard, KeycardKey};
    use std::time::Duration;

    fn router() -> Router {
        Router {
            sites: vec![Site {
                name: "lon".into(),
                latitude: 51.5,
                longitude: -0.13,
                cost_per_gb: 0.02,
                capacity_mbps: 1000.0,
            }],
            coverage: Coverage::default(),
            geo: None,
            default_group: "default".into(),
        }
    }

    fn snapshot(url: &str) -> Snapshot {
        let mut report = crate::registry::tests::report("lon-1", "lon");
        report.url = url.into();
        Snapshot {
            edges: vec![EdgeState {
                report,
                age_seconds: 0.5,
                mood: Mood::Happy,
            }],
        }
    }

    fn path(target: &str) -> PublicPath {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        PublicPath::parse(path, query).unwrap()
    }

    fn ask(target: &str, known: Known<'_>) -> Answer {
        let path = path(target);
        let ask = Ask {
            client: IpAddr::from([192, 0, 2, 7]),
            path: &path,
        };
        answer(ask, known, Policy::Closest, 1_800_000_000)
    }

    fn location(answer: Answer) -> String {
        match answer {
            Answer::Redirect(redirect) => redirect.location,
            other => panic!("not a redirect: {other:?}"),
        }
    }

    #[test]
    fn the_redirect_carries_the_canonical_target_and_a_fresh_keycard() {
        let router = router();
        let snapshot = snapshot("http://lon-1.example:8090/");
        let key = KeycardKey::from_hex(Some("k1"), &"11".repeat(16)).unwrap();
        let minter = Minter::new(std::slice::from_ref(&key), Duration::from_secs(300)).unwrap();
        let known = Known {
            router: &router,
            snapshot: &snapshot,
            presence: Presence::Unknown,
            minter: None,
        };
        // Without keycards: the target as the layout writes it; other parameters dropped.
        assert_eq!(
            location(ask("/live/demo/master.m3u8?x=1&keycard=old", known)),
            "http://lon-1.example:8090/live/demo/master.m3u8"
        );
        assert_eq!(
            location(ask(
                "/live/demo/v720/media.m3u8?cb=7&_HLS_part=2&_HLS_msn=90",
                known
            )),
            "http://lon-1.example:8090/live/demo/v720/media.m3u8?_HLS_msn=90&_HLS_part=2"
        );
        // With keycards: a new one, for the channel under the path's root.
        let keyed = Known {
            minter: Some(&minter),
            ..known
        };
        let redirected = ask("/live/demo/stream.ts?track=v360&keycard=stolen", keyed);
        let Answer::Redirect(redirect) = redirected else {
            panic!("not a redirect: {redirected:?}");
        };
        let (target, card) = redirect.location.split_once("&keycard=").unwrap();
        assert_eq!(
            target,
            "http://lon-1.example:8090/live/demo/stream.ts?track=v360"
        );
        let card = Keycard::parse(card).unwrap();
        assert_eq!(card.acl, "/live/demo/*");
        assert_eq!(card.id, redirect.keycard_id);
        assert_eq!(redirect.decision.site.as_deref(), Some("lon"));
        let vod = location(ask("/vod/demo/100-160/master.m3u8", keyed));
        assert!(
            vod.starts_with("http://lon-1.example:8090/vod/demo/100-160/master.m3u8?keycard="),
            "{vod}"
        );
        assert!(vod.contains("acl=/vod/demo/*"), "{vod}");
    }

    #[test]
    fn absent_channels_empty_sites_and_other_paths_are_said_so() {
        let router = router();
        let snapshot = snapshot("http://lon-1.example:8090");
        let absent = Known {
            router: &router,
            snapshot: &snapshot,
            presence: Presence::Absent,
            minter: None,
        };
        assert_eq!(
            ask("/live/news/master.m3u8", absent),
            Answer::ChannelAbsent(ChannelName::new("news").unwrap())
        );
        // An archive does not depend on the live channel.
        assert!(matches!(
            ask("/vod/news/0-60/master.m3u8", absent),
            Answer::Redirect(_)
        ));
        let empty = Snapshot::default();
        let nobody = Known {
            snapshot: &empty,
            presence: Presence::Live,
            ..absent
        };
        let Answer::NoSite(decision) = ask("/live/news/master.m3u8", nobody) else {
            panic!("a site without edges took the viewer");
        };
        assert!(
            decision.reason().contains("no site"),
            "{}",
            decision.reason()
        );
        for other in ["/healthz", "/", "/play/news", "/metrics"] {
            assert_eq!(ask(other, nobody), Answer::NotMedia, "{other}");
        }
    }
}
