//! Control's HTTP service: edge reports in, viewers redirected out, decisions explained.
//!
//! - `POST /api/v1/reports`: an edge's signed report (JSON); `204`, or `413`, `401`, `400` or
//!   `403` with the reason, and nothing changed (see crate::reports).
//! - `GET /live/…`, `GET /vod/…` (the public URL layout): `302` to the chosen edge's URL for
//!   the same path, with a fresh keycard for the channel when keycards are configured; `503`
//!   with the reasons when no site can take the viewer (crate::redirect).
//! - `GET /api/v1/route?ip=ADDRESS&path=PATH`: the decision for that viewer, as JSON.
//! - `GET /api/v1/edges`: every edge heard from, its last report and its mood now.
//! - `GET /healthz`: control's own mood.
//! - the admin API and the dashboard (crate::admin).
//!
//! With an admin address, the admin API, the route and edge views listen there (with reports
//! and health), and the public address serves only redirects, reports and health.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use estuary_proto::Mood;
use estuary_proto::keycard::{self, KeycardKey};
use estuary_proto::net::Cidr;
use estuary_proto::report::{MAX_REPORT_BYTES, REPORTS_PATH, SIGNATURE_HEADER};
use http_body_util::{BodyExt as _, Limited};

use crate::activity::Activity;
use crate::config::{Config, PolicyConfig, Timeouts};
use crate::coverage::{self, Coverage};
use crate::geo::GeoDatabase;
use crate::keycards::Minter;
use crate::origins::Origins;
use crate::redirect::{channel_of, redirect};
use crate::registry::Registry;
use crate::reports::{Intake, Refusal};
use crate::routing::{Decision, Explained, Request, Router};

/// Everything control knows and decides with.
pub struct Control {
    router: Router,
    registry: Registry,
    /// The policies now (the admin API may change them).
    policies: RwLock<PolicyConfig>,
    /// Signs the keycards of redirects; none when keycards are off.
    minter: Option<Minter>,
    intake: Intake,
    trusted_proxies: Vec<Cidr>,
    origins: Origins,
    timeouts: Timeouts,
    pub(crate) admin_token: Option<String>,
    pub(crate) activity: Activity,
}

/// The secrets control works with: read from the files the configuration names
/// ([`Control::new`]), or made up by the caller (the demo).
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// Keycard keys; the first signs. None turns keycards off.
    pub keycards: Vec<KeycardKey>,
    /// How long a redirect's keycard lets its viewer in.
    pub keycard_lifetime: Duration,
    /// The keys edge reports may be signed with. None: every report is refused.
    pub reports: Vec<KeycardKey>,
}

/// The keys of the key file at `path`; an error names it.
fn read_keys(path: &Path) -> Result<Vec<KeycardKey>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    keycard::parse_key_file(&text).map_err(|error| format!("{}: {error}", path.display()))
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl Control {
    /// Opens what the configuration names (GeoIP database, coverage-zone file, key files);
    /// an unusable file is an error that names it.
    pub fn new(config: &Config) -> Result<Arc<Control>, String> {
        let mut keys = Keys::default();
        if let Some(keycards) = &config.keycards {
            keys.keycards = read_keys(&keycards.key_file)?;
            keys.keycard_lifetime = keycards.lifetime;
        }
        if let Some(path) = &config.reports.key_file {
            keys.reports = read_keys(path)?;
        }
        Control::with_keys(config, keys)
    }

    /// As [`Control::new`], with the keys given rather than read from the key files.
    pub fn with_keys(config: &Config, keys: Keys) -> Result<Arc<Control>, String> {
        let geo = config.geoip.as_deref().map(GeoDatabase::open).transpose()?;
        let mut zones = config.zones.clone();
        if let Some(path) = &config.coverage_zones {
            zones.extend(coverage::read_traffic_control(path)?);
        }
        if keys.reports.is_empty() {
            tracing::warn!(
                "no report key ([reports] key_file): every edge report will be refused (401)"
            );
        }
        Ok(Arc::new(Control {
            router: Router::new(config, Coverage::new(zones), geo),
            registry: Registry::new(config.reports.forget_after),
            policies: RwLock::new(config.policy.clone()),
            minter: Minter::new(&keys.keycards, keys.keycard_lifetime),
            intake: Intake::new(config, keys.reports),
            trusted_proxies: config.trusted_proxies.clone(),
            origins: Origins::new(&config.origins)?,
            timeouts: config.timeouts,
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

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub(crate) fn trusted_proxies(&self) -> &[Cidr] {
        &self.trusted_proxies
    }

    pub(crate) fn minter(&self) -> Option<&Minter> {
        self.minter.as_ref()
    }

    /// Takes an edge's report: `signature` is its signature header, `body` the bytes as sent.
    /// A refused report changes nothing.
    pub fn take_report(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<(), Refusal> {
        let known = |site: &str| self.router.sites.iter().any(|s| s.name == site);
        let admitted = self.intake.check(signature, body, unix_ms(), known)?;
        let id = admitted.report.id.clone();
        self.intake.commit(admitted, |report| {
            self.registry
                .hear(report, Instant::now())
                .map_err(|reason| Refusal {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    reason,
                })
        })?;
        self.announce_edge(&id);
        Ok(())
    }

    /// Takes a report that crossed no network (tests): only its bounds are checked.
    #[cfg(test)]
    pub(crate) fn hear(&self, report: estuary_proto::report::EdgeReport) -> Result<(), String> {
        report.check().map_err(|error| error.to_string())?;
        let id = report.id.clone();
        self.registry.hear(report, Instant::now())?;
        self.announce_edge(&id);
        Ok(())
    }

    /// Tells the event stream what control knows of edge `id` now.
    fn announce_edge(&self, id: &str) {
        if self.activity.watched() {
            let snapshot = self.registry.snapshot(Instant::now());
            if let Some(edge) = snapshot.edges.iter().find(|edge| edge.report.id == id) {
                self.activity.announce("edge", edge);
            }
        }
    }

    /// Forgets the edges silent for the configured `forget_after`, and the signature times
    /// that the clock window now refuses anyway. Called every second.
    pub fn sweep(&self) {
        for id in self.registry.forget_silent(Instant::now()) {
            tracing::info!(edge = %id, "edge forgotten: silent for reports.forget_after");
            self.activity
                .announce("forgotten", &serde_json::json!({ "id": id }));
        }
        self.intake.prune(unix_ms());
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

    pub(crate) fn forget(&self, id: &str) -> bool {
        let forgotten = self.registry.forget(id);
        if forgotten {
            self.activity
                .announce("forgotten", &serde_json::json!({ "id": id }));
        }
        forgotten
    }
}

/// Every route on one address: redirects (those that reach axum), reports, health, and the
/// admin API.
pub fn app(control: Arc<Control>) -> axum::Router {
    public_routes().merge(admin_routes()).with_state(control)
}

/// The public address's routes when the admin API has its own address.
pub fn public_app(control: Arc<Control>) -> axum::Router {
    public_routes()
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not here: control's admin API listens on its admin address",
            )
        })
        .with_state(control)
}

/// The admin address's routes: the admin API, reports and health; no redirects.
pub fn admin_app(control: Arc<Control>) -> axum::Router {
    admin_routes()
        .route(REPORTS_PATH, post(report))
        .route("/healthz", get(healthz))
        .with_state(control)
}

fn public_routes() -> axum::Router<Arc<Control>> {
    axum::Router::new()
        .route(REPORTS_PATH, post(report))
        .route("/healthz", get(healthz))
        .route("/live/{*rest}", get(redirect))
        .route("/vod/{*rest}", get(redirect))
}

fn admin_routes() -> axum::Router<Arc<Control>> {
    axum::Router::new()
        .route("/api/v1/route", get(route))
        .route("/api/v1/edges", get(edges))
        .merge(crate::admin::routes())
}

/// Serves control on `listener` (and the admin API on `admin`, if given) until `shutdown`
/// resolves: redirects at the front door, the rest by axum (see [`crate::front`]); the
/// origins are asked for their channels, and silent edges forgotten, meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let watcher = tokio::spawn({
        let control = control.clone();
        async move { control.origins.watch().await }
    });
    let sweeper = tokio::spawn({
        let control = control.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                control.sweep();
            }
        }
    });
    let admin = admin.map(|admin| {
        tokio::spawn(crate::connection::serve_admin(
            admin,
            admin_app(control.clone()),
            control.timeouts,
            std::future::pending(),
        ))
    });
    let app = match admin {
        Some(_) => public_app(control.clone()),
        None => app(control.clone()),
    };
    crate::front::serve(listener, control, app, shutdown).await;
    for task in admin.into_iter().chain([watcher, sweeper]) {
        task.abort();
    }
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

/// Reads a request body of at most `limit` bytes within `time`: `413` past the limit (at
/// once when `Content-Length` says so, before anything is read), `408` when it comes too
/// slowly.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    time: Duration,
) -> Result<Bytes, Response> {
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(time, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => Err(problem(
            StatusCode::BAD_REQUEST,
            format!("the body could not be read: {error}"),
        )),
        Err(_) => Err(problem(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {time:?}"),
        )),
    }
}

async fn report(State(control): State<Arc<Control>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(
        &parts.headers,
        body,
        MAX_REPORT_BYTES,
        control.timeouts.header,
    )
    .await
    {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let signature = parts
        .headers
        .get(SIGNATURE_HEADER)
        .map(|value| value.as_bytes());
    match control.take_report(signature, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refusal) => {
            tracing::info!(status = refusal.status.as_u16(), reason = %refusal.reason, "report refused");
            let mut response = problem(refusal.status, refusal.reason);
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("X-Estuary-Signature"),
                );
            }
            response
        }
    }
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
