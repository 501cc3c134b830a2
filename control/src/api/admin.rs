//! The admin API and the dashboard: what control knows (sites with their load, edges with
//! their last reports and moods, channels seen, recent decisions per client group), a
//! server-sent-events stream of changes, and the few changes an operator may make (the
//! policies; forgetting an edge). The changes, and every view that shows viewers (their
//! addresses in decisions and events, the channels they asked for), need the admin token.
//! `/api/v1/openapi.json` describes it all; `/dashboard` shows it live.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;
use tokio::sync::broadcast;

use super::{json, problem, read_body};
use crate::activity::Recent;
use crate::config::PolicyConfig;
use crate::state::Control;

/// The largest policy body read.
const MAX_POLICY_BYTES: usize = 64 * 1024;

/// The admin API's routes and the dashboard.
pub fn routes() -> axum::Router<Arc<Control>> {
    axum::Router::new()
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/channels", get(channels))
        .route("/api/v1/decisions", get(decisions))
        .route("/api/v1/events", get(events))
        .route("/api/v1/policy", get(policy).put(set_policy))
        .route("/api/v1/edges/{id}", delete(forget_edge))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/dashboard", get(dashboard))
}

#[derive(Serialize)]
struct SiteView {
    name: String,
    latitude: f64,
    longitude: f64,
    cost_per_gb: f64,
    capacity_mbps: f64,
    /// Reported egress of its live edges, bits per second.
    egress_bps: u64,
    /// That egress over capacity.
    load: f64,
    /// Viewers its live edges report.
    clients: u64,
    /// Redirects to it in the last minute.
    arrivals: u64,
    edges: Vec<EdgeView>,
}

#[derive(Serialize)]
struct EdgeView {
    id: String,
    mood: estuary_proto::Mood,
    clients: u64,
    egress_bps: u64,
}

async fn sites(State(control): State<Arc<Control>>) -> Response {
    let snapshot = control.registry().snapshot(Instant::now());
    let (_, arrivals) = control.activity().arrivals();
    let views: Vec<SiteView> = control
        .tables()
        .router
        .sites
        .iter()
        .map(|site| {
            let edges: Vec<_> = snapshot
                .edges
                .iter()
                .filter(|edge| edge.report.site == site.name)
                .collect();
            let live = edges.iter().filter(|edge| edge.is_live());
            let egress_bps: u64 = live.clone().map(|edge| edge.report.egress_bps).sum();
            SiteView {
                name: site.name.clone(),
                latitude: site.latitude,
                longitude: site.longitude,
                cost_per_gb: site.cost_per_gb,
                capacity_mbps: site.capacity_mbps,
                egress_bps,
                load: egress_bps as f64 / (site.capacity_mbps * 1e6),
                clients: live.map(|edge| edge.report.clients).sum(),
                arrivals: arrivals.get(&site.name).copied().unwrap_or(0),
                edges: edges
                    .iter()
                    .map(|edge| EdgeView {
                        id: edge.report.id.clone(),
                        mood: edge.mood,
                        clients: edge.report.clients,
                        egress_bps: edge.report.egress_bps,
                    })
                    .collect(),
            }
        })
        .collect();
    json(&serde_json::json!({ "sites": views }))
}

async fn channels(State(control): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refused(&control, &headers) {
        return refusal;
    }
    let live = control.origins().channels();
    let state = control.activity().lock();
    json(&serde_json::json!({
        "channels": state.channels.named,
        "other": state.channels.other,
        "live": live,
    }))
}

async fn decisions(State(control): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refused(&control, &headers) {
        return refusal;
    }
    let (arrivals, _) = control.activity().arrivals();
    let state = control.activity().lock();
    let groups: BTreeMap<&String, serde_json::Value> = state
        .recent
        .iter()
        .map(|(group, recent)| {
            let recent: Vec<Recent> = recent.iter().map(Recent::of).collect();
            (
                group,
                serde_json::json!({
                    "arrivals_last_minute": arrivals.get(group).copied().unwrap_or(0),
                    "recent": recent,
                }),
            )
        })
        .collect();
    json(&serde_json::json!({ "groups": groups }))
}

/// Server-sent events: `edge` (a report, with the edge's mood now), `decision` (a redirect),
/// `policy` (new policies), `forgotten` (an edge removed), each `{"kind", "data"}` in JSON.
async fn events(State(control): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refused(&control, &headers) {
        return refusal;
    }
    let receiver = control.activity().events.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(text) => {
                    return Some((
                        Ok::<_, std::convert::Infallible>(Event::default().data(text)),
                        receiver,
                    ));
                }
                // A slow follower misses some events; the dashboard also polls.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn policy(State(control): State<Arc<Control>>) -> Response {
    json(&control.policies())
}

/// Whether the request carries the admin token; the answer to give if not.
fn refused(control: &Control, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = control.admin_token() else {
        return Some(problem(
            StatusCode::FORBIDDEN,
            "this needs the admin token, and control's configuration has no admin_token",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let matches =
        given.is_some_and(|given| constant_time_equal(given.as_bytes(), token.as_bytes()));
    if matches {
        None
    } else {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "this needs the admin token: Authorization: Bearer TOKEN",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        Some(response)
    }
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn set_policy(
    State(control): State<Arc<Control>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    // The token first: nobody without it makes control read a body.
    if let Some(refusal) = refused(&control, &parts.headers) {
        return refusal;
    }
    let body = match read_body(
        &parts.headers,
        body,
        MAX_POLICY_BYTES,
        control.limits().head_timeout,
    )
    .await
    {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    match serde_json::from_slice::<PolicyConfig>(&body) {
        Ok(policies) => {
            control.set_policies(policies.clone());
            tracing::info!(?policies, "policies changed");
            json(&policies)
        }
        Err(error) => problem(
            StatusCode::BAD_REQUEST,
            format!(
                "not a policy: {error} (expected {{\"default\": \"closest\", \"channels\": {{\"news\": \"least_cost\"}}}})"
            ),
        ),
    }
}

/// Reads the configuration file again (as `SIGHUP` does): `200` with the keys that changed but
/// need a restart, `422` with the reason when the file does not validate (nothing changes).
async fn reload(State(control): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refused(&control, &headers) {
        return refusal;
    }
    // Opening a GeoIP database and key files reads the disk: not on the async workers.
    let reloaded = tokio::task::spawn_blocking(move || control.reload()).await;
    match reloaded {
        Ok(Ok(reloaded)) => json(&reloaded),
        Ok(Err(crate::state::ReloadError::NoFile)) => problem(
            StatusCode::CONFLICT,
            crate::state::ReloadError::NoFile.to_string(),
        ),
        Ok(Err(error)) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload refused, nothing changed: {error}"),
        ),
        Err(error) => problem(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn forget_edge(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(refusal) = refused(&control, &headers) {
        return refusal;
    }
    let id = match id {
        Ok(Path(id)) => id,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if control.forget(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        problem(
            StatusCode::NOT_FOUND,
            format!("no edge {id:?} has reported"),
        )
    }
}

async fn openapi() -> Response {
    json(&super::openapi::document())
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../web/dashboard.html"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_equal(b"secret", b"secret"));
        assert!(!constant_time_equal(b"secret", b"secreT"));
        assert!(!constant_time_equal(b"secret", b"secret2"));
    }
}
