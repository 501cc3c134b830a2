//! Control's HTTP service: edge reports in, viewers redirected out, decisions explained.
//!
//! - `POST /api/v1/reports`: an edge's report (JSON); `400` with the reason, and nothing
//!   changed, for one that does not parse or names an unknown site.
//! - `GET /live/…`, `GET /vod/…` (the public URL layout): `302` to the chosen edge's URL for
//!   the same path, with a fresh keycard for the channel when keycards are configured; `503`
//!   with the reasons when no site can take the viewer.
//! - `GET /api/v1/route?ip=ADDRESS&path=PATH`: the decision for that viewer, as JSON.
//! - `GET /api/v1/edges`: every edge heard from, its last report and its mood now.
//! - `GET /healthz`: control's own mood.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use estuary_proto::Mood;
use estuary_proto::keycard::{self, KeycardKey, KeycardRequest};
use estuary_proto::net::{self, Cidr};
use estuary_proto::report::{EdgeReport, REPORTS_PATH};
use estuary_proto::url::ChannelName;

use crate::admin::Activity;
use crate::config::{Config, PolicyConfig};
use crate::coverage::{self, Coverage};
use crate::geo::GeoDatabase;
use crate::origins::{Origins, Presence};
use crate::registry::Registry;
use crate::routing::{Decision, Explained, Request, Router};

/// Everything control knows and decides with.
pub struct Control {
    router: Router,
    registry: Registry,
    /// The policies now (the admin API may change them).
    policies: RwLock<PolicyConfig>,
    /// The first key signs keycards.
    keys: Vec<KeycardKey>,
    lifetime: Duration,
    /// The keycard last signed for each ACL, and the second it was signed in.
    signed: Mutex<HashMap<String, (u64, Arc<str>)>>,
    trusted_proxies: Vec<Cidr>,
    origins: Origins,
    pub(crate) admin_token: Option<String>,
    pub(crate) activity: Activity,
}

impl Control {
    /// Opens what the configuration names (GeoIP database, coverage-zone file, key file);
    /// an unusable file is an error that names it.
    pub fn new(config: &Config) -> Result<Arc<Control>, String> {
        let (keys, lifetime) = match &config.keycards {
            Some(keycards) => {
                let text = std::fs::read_to_string(&keycards.key_file)
                    .map_err(|error| format!("{}: {error}", keycards.key_file.display()))?;
                let keys = keycard::parse_key_file(&text)
                    .map_err(|error| format!("{}: {error}", keycards.key_file.display()))?;
                (keys, keycards.lifetime)
            }
            None => (Vec::new(), Duration::ZERO),
        };
        Control::with_keys(config, keys, lifetime)
    }

    /// As [`Control::new`], with the keycard keys given rather than read from the key file
    /// (the first signs; none turns keycards off).
    pub fn with_keys(
        config: &Config,
        keys: Vec<KeycardKey>,
        lifetime: Duration,
    ) -> Result<Arc<Control>, String> {
        let geo = config.geoip.as_deref().map(GeoDatabase::open).transpose()?;
        let mut zones = config.zones.clone();
        if let Some(path) = &config.coverage_zones {
            zones.extend(coverage::read_traffic_control(path)?);
        }
        Ok(Arc::new(Control {
            router: Router::new(config, Coverage::new(zones), geo),
            registry: Registry::default(),
            policies: RwLock::new(config.policy.clone()),
            keys,
            lifetime,
            signed: Mutex::default(),
            trusted_proxies: config.trusted_proxies.clone(),
            origins: Origins::new(&config.origins)?,
            admin_token: config.admin_token.clone().filter(|token| !token.is_empty()),
            activity: Activity::default(),
        }))
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// Takes an edge's report, and tells the event stream.
    pub fn hear(&self, report: EdgeReport) -> Result<(), String> {
        let known = |site: &str| self.router.sites.iter().any(|s| s.name == site);
        let id = report.id.clone();
        self.registry.hear(report, known, Instant::now())?;
        if self.activity.watched() {
            let snapshot = self.registry.snapshot(Instant::now());
            if let Some(edge) = snapshot.edges.iter().find(|edge| edge.report.id == id) {
                self.activity.announce("edge", edge);
            }
        }
        Ok(())
    }

    /// Where `client` asking for `channel` would go now.
    pub fn decide(&self, client: IpAddr, channel: &str) -> Decision {
        let snapshot = self.registry.shared(Instant::now());
        let policy = self.policies().policy_for(channel);
        self.router
            .route(Request { client, channel }, &snapshot, policy)
    }

    pub fn policies(&self) -> PolicyConfig {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_policies(&self, policies: PolicyConfig) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = policies.clone();
        self.activity.announce("policy", &policies);
    }

    /// A keycard for the paths of `channel` under `root` (`live` or `vod`), if keycards are on.
    /// Keycards made in the same second for the same channel are the same text, so each is
    /// signed once and handed to everyone who asks within that second.
    fn keycard(&self, root: &str, channel: &str) -> Option<Arc<str>> {
        let key = self.keys.first()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let acl = format!("/{root}/{channel}/*");
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((second, keycard)) = signed.get(&acl)
            && *second == now
        {
            return Some(keycard.clone());
        }
        let request = KeycardRequest {
            expires: now + self.lifetime.as_secs().max(1),
            acl: acl.clone(),
            ..KeycardRequest::default()
        };
        let keycard: Arc<str> = keycard::sign(&request, key).into();
        if signed.len() > 10_000 {
            signed.retain(|_, (second, _)| *second == now);
        }
        signed.insert(acl, (now, keycard.clone()));
        Some(keycard)
    }
}

/// The HTTP routes.
pub fn app(control: Arc<Control>) -> axum::Router {
    axum::Router::new()
        .route(REPORTS_PATH, post(report))
        .route("/api/v1/route", get(route))
        .route("/api/v1/edges", get(edges))
        .route("/healthz", get(healthz))
        .route("/live/{*rest}", get(redirect))
        .route("/vod/{*rest}", get(redirect))
        .merge(crate::admin::routes())
        .with_state(control)
}

/// Serves control on `listener` until `shutdown` resolves: redirects at the front door, the
/// rest by axum (see [`crate::front`]); the origins are asked for their channels meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let watcher = tokio::spawn({
        let control = control.clone();
        async move { control.origins.watch().await }
    });
    crate::front::serve(listener, control.clone(), app(control), shutdown).await;
    watcher.abort();
    Ok(())
}

pub(crate) fn problem(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut text = reason.into();
    text.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

pub(crate) fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(error) => problem(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn report(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let report: EdgeReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("not an edge report: {error}"),
            );
        }
    };
    match control.hear(report) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(reason) => problem(StatusCode::BAD_REQUEST, reason),
    }
}

/// `live` or `vod`, and the channel, of a path of the public layout.
fn channel_of(path: &str) -> Result<(&str, &str), String> {
    let mut segments = path.trim_start_matches('/').split('/');
    let (Some(root @ ("live" | "vod")), Some(channel)) = (segments.next(), segments.next()) else {
        return Err(format!(
            "{path:?} is not a path of the public layout (/live/CHANNEL/…)"
        ));
    };
    ChannelName::new(channel).map_err(|error| error.to_string())?;
    Ok((root, channel))
}

async fn route(
    State(control): State<Arc<Control>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(ip) = query.get("ip") else {
        return problem(
            StatusCode::BAD_REQUEST,
            "give the viewer's address: ?ip=…&path=…",
        );
    };
    let Ok(client) = ip.trim().parse::<IpAddr>() else {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("{ip:?} is not an IP address"),
        );
    };
    let path = query
        .get("path")
        .map_or("/live/demo/master.m3u8", String::as_str);
    match channel_of(path) {
        Ok((_, channel)) => json(&Explained::from(&control.decide(client, channel))),
        Err(reason) => problem(StatusCode::BAD_REQUEST, reason),
    }
}

async fn edges(State(control): State<Arc<Control>>) -> Response {
    json(&control.registry.snapshot(Instant::now()))
}

impl Control {
    pub(crate) fn forget(&self, id: &str) -> bool {
        let forgotten = self.registry.forget(id);
        if forgotten {
            self.activity
                .announce("forgotten", &serde_json::json!({ "id": id }));
        }
        forgotten
    }
}

async fn healthz(State(control): State<Arc<Control>>) -> Response {
    let snapshot = control.registry.snapshot(Instant::now());
    let live = snapshot.edges.iter().filter(|edge| edge.is_live()).count();
    let (mood, reason) = if live > 0 {
        (Mood::Happy, None)
    } else if snapshot.edges.is_empty() {
        (Mood::Waking, Some("no edge has reported yet"))
    } else {
        (Mood::Hungry, Some("no edge is live"))
    };
    json(&serde_json::json!({
        "role": "control",
        "mood": mood,
        "reason": reason,
        "edges": snapshot.edges.len(),
        "live_edges": live,
    }))
}

/// What control answers a viewer asking for a path of the public layout: a redirect, or a
/// problem with its reason. Both HTTP engines (the front door and axum) write it.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// `302` to this Location.
    Redirect(String),
    /// This status, with the reason as the body.
    Problem(StatusCode, String),
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
        if root == "live" && self.origins.presence(channel, Instant::now()) == Presence::Absent {
            return Answer::Problem(
                StatusCode::NOT_FOUND,
                format!("no origin has a live channel {channel:?}"),
            );
        }
        let client = net::client_address(peer, forwarded_for, &self.trusted_proxies);
        let decision = Arc::new(self.decide(client, channel));
        self.activity.record(&decision);
        let Some(edge) = &decision.edge else {
            return Answer::Problem(StatusCode::SERVICE_UNAVAILABLE, decision.reason());
        };
        let mut location = String::with_capacity(edge.url.len() + path.len() + 160);
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
        if let Some(keycard) = self.keycard(root, channel) {
            location.push(separator);
            location.push_str("keycard=");
            location.push_str(&keycard);
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
        tracing::debug!(%client, channel, edge = %edge.id, site = ?decision.site, "redirect");
        Answer::Redirect(location)
    }
}

/// Redirects that reach axum: requests after another kind on the same connection.
async fn redirect(
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
}
