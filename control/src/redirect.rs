//! What control answers a viewer asking for a path of the public layout: a `302` to the chosen
//! edge with a fresh keycard of its own (its id recorded with the decision, for revocation), or
//! a problem with its reason. The front door and axum both write [`Answer`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use estuary_proto::net;
use estuary_proto::url::ChannelName;

use crate::origins::Presence;
use crate::server::{Control, problem};

/// A redirect or a problem.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// `302` to this Location.
    Redirect(String),
    /// This status, with the reason as the body.
    Problem(StatusCode, String),
}

/// `live` or `vod`, and the channel, of a path of the public layout.
pub(crate) fn channel_of(path: &str) -> Result<(&str, &str), String> {
    let mut segments = path.trim_start_matches('/').split('/');
    let (Some(root @ ("live" | "vod")), Some(channel)) = (segments.next(), segments.next()) else {
        return Err(format!(
            "{path:?} is not a path of the public layout (/live/CHANNEL/…)"
        ));
    };
    ChannelName::new(channel).map_err(|error| error.to_string())?;
    Ok((root, channel))
}

impl Control {
    /// Where the viewer at `peer` (or the client its `X-Forwarded-For` names, from a trusted
    /// proxy) asking for `path?query` goes, with a fresh keycard for the channel.
    pub fn answer(
        &self,
        peer: IpAddr,
        path: &str,
        query: Option<&str>,
        forwarded_for: Option<&str>,
    ) -> Answer {
        let (root, channel) = match channel_of(path) {
            Ok(found) => found,
            Err(reason) => return Answer::Problem(StatusCode::BAD_REQUEST, reason),
        };
        let presence = if root == "live" {
            self.origins().presence(channel, Instant::now())
        } else {
            Presence::Unknown
        };
        if presence == Presence::Absent {
            return Answer::Problem(
                StatusCode::NOT_FOUND,
                format!("no origin has a live channel {channel:?}"),
            );
        }
        let client = net::client_address(peer, forwarded_for, self.trusted_proxies());
        let decision = Arc::new(self.decide(client, channel));
        let keycard = match (&decision.edge, self.minter()) {
            (Some(_), Some(minter)) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                Some(minter.mint(root, channel, now))
            }
            _ => None,
        };
        let keycard_id = keycard.as_ref().map(|minted| minted.id.as_str());
        self.activity
            .record(&decision, keycard_id, presence == Presence::Live);
        let Some(edge) = &decision.edge else {
            return Answer::Problem(StatusCode::SERVICE_UNAVAILABLE, decision.reason());
        };
        let mut location = String::with_capacity(edge.url.len() + path.len() + 180);
        location.push_str(edge.url.trim_end_matches('/'));
        location.push_str(path);
        let mut separator = '?';
        let kept = query.unwrap_or("").split('&').filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && name != "keycard" && name != "__token__"
        });
        for pair in kept {
            location.push(separator);
            location.push_str(pair);
            separator = '&';
        }
        if let Some(keycard) = &keycard {
            location.push(separator);
            location.push_str("keycard=");
            location.push_str(&keycard.text);
        }
        // A Location is one header line: visible ASCII (and tabs) only.
        if !location
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Answer::Problem(
                StatusCode::BAD_GATEWAY,
                "the edge's URL is not a usable Location".into(),
            );
        }
        tracing::debug!(%client, channel, edge = %edge.id, site = ?decision.site, keycard = ?keycard_id, "redirect");
        Answer::Redirect(location)
    }
}

/// Redirects that reach axum: requests after another kind on the same connection.
pub(crate) async fn redirect(
    State(control): State<Arc<Control>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let (uri, headers) = (request.uri(), request.headers());
    let forwarded_for = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    match control.answer(peer.ip(), uri.path(), uri.query(), forwarded_for) {
        Answer::Redirect(location) => {
            let Ok(location) = HeaderValue::try_from(location) else {
                return problem(StatusCode::BAD_GATEWAY, "not a usable Location");
            };
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        header::ACCESS_CONTROL_ALLOW_ORIGIN,
                        HeaderValue::from_static("*"),
                    ),
                ],
            )
                .into_response()
        }
        Answer::Problem(status, reason) => {
            let mut response = problem(status, reason);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_come_from_the_public_layout() {
        assert_eq!(channel_of("/live/demo/master.m3u8"), Ok(("live", "demo")));
        assert_eq!(
            channel_of("/vod/demo/0-60/master.m3u8"),
            Ok(("vod", "demo"))
        );
        assert!(channel_of("/other/demo/x").is_err());
        assert!(channel_of("/live/../x").is_err());
        assert!(channel_of("/live").is_err());
    }

    #[test]
    fn each_redirect_carries_its_own_keycard_and_the_decision_keeps_its_id() {
        let config = crate::Config::parse(
            "[[sites]]\nname = \"lon\"\nlatitude = 51.5\nlongitude = -0.13\ncost_per_gb = 0.02\ncapacity_mbps = 1000\n",
        )
        .unwrap();
        let key = estuary_proto::KeycardKey::from_hex(Some("k1"), &"11".repeat(16)).unwrap();
        let keys = crate::Keys {
            keycards: vec![key],
            keycard_lifetime: std::time::Duration::from_secs(300),
            reports: Vec::new(),
        };
        let control = Control::with_keys(&config, keys).unwrap();
        control
            .hear(crate::registry::tests::report("lon-1", "lon"))
            .unwrap();
        let peer = IpAddr::from([192, 0, 2, 7]);
        let ids: Vec<String> = (0..2)
            .map(|_| {
                let Answer::Redirect(location) =
                    control.answer(peer, "/live/demo/master.m3u8", None, None)
                else {
                    panic!("a redirect");
                };
                let card = location.split_once("keycard=").unwrap().1;
                let card = estuary_proto::Keycard::parse(card).unwrap();
                assert_eq!(card.acl, "/live/demo/*");
                card.id.unwrap()
            })
            .collect();
        assert_ne!(ids[0], ids[1], "every redirect has a keycard of its own");
        let state = control.activity.lock();
        let recent = &state.recent["default"];
        let kept: Vec<&str> = recent
            .iter()
            .filter_map(|(_, _, id)| id.as_deref())
            .collect();
        assert_eq!(kept, [ids[1].as_str(), ids[0].as_str()], "newest first");
    }
}
