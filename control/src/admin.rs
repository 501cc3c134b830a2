//! The admin API and the dashboard: what control knows (sites with their load, edges with
//! their last reports and moods, channels seen, recent decisions per client group), a
//! server-sent-events stream of changes, and the few changes an operator may make (the
//! policies; forgetting an edge). The changes, and every view that shows viewers (their
//! addresses in decisions and events, the channels they asked for), need the admin token.
//! `/api/v1/openapi.json` describes it all; `/dashboard` shows it live.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::activity::Recent;
use crate::config::PolicyConfig;
use crate::server::{Control, json, problem, read_body};

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
    let (_, arrivals) = control.activity.arrivals();
    let views: Vec<SiteView> = control
        .router()
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
    let state = control.activity.lock();
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
    let (arrivals, _) = control.activity.arrivals();
    let state = control.activity.lock();
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
    let receiver = control.activity.events.subscribe();
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
    let Some(token) = &control.admin_token else {
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
        control.timeouts().header,
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

async fn forget_edge(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refusal) = refused(&control, &headers) {
        return refusal;
    }
    if control.forget(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        problem(
            StatusCode::NOT_FOUND,
            format!("no edge {id:?} has reported"),
        )
    }
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../web/dashboard.html"),
    )
        .into_response()
}

async fn openapi() -> Response {
    json(&openapi_document())
}

/// The OpenAPI 3.1 description of control's HTTP interface.
pub fn openapi_document() -> serde_json::Value {
    use serde_json::json;
    let text =
        |description: &str| json!({ "description": description, "content": { "text/plain": {} } });
    let object = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": { "type": "object" } } } });
    let admin = json!([{ "bearer": [] }]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Estuary control",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sends each viewer to the best edge by location, cost and load, and explains why."
        },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "the admin_token of control's configuration" } } },
        "paths": {
            "/live/{path}": { "get": {
                "summary": "Redirect a viewer to an edge, with a fresh keycard",
                "parameters": [{ "name": "path", "in": "path", "required": true, "schema": { "type": "string" }, "description": "CHANNEL/… of the public URL layout" }],
                "responses": { "302": { "description": "to the chosen edge; Location carries keycard=" }, "400": text("not a path of the public layout"), "503": text("no site can take the viewer, and why") }
            }},
            "/vod/{path}": { "get": {
                "summary": "Redirect a viewer of an archive to an edge",
                "parameters": [{ "name": "path", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "302": { "description": "to the chosen edge" }, "503": text("no site can take the viewer") }
            }},
            "/api/v1/route": { "get": {
                "summary": "The decision for a viewer, with its reasons",
                "parameters": [
                    { "name": "ip", "in": "query", "required": true, "schema": { "type": "string" } },
                    { "name": "path", "in": "query", "required": false, "schema": { "type": "string", "default": "/live/demo/master.m3u8" } }
                ],
                "responses": { "200": object("group, candidate sites (distance, cost, load, why skipped), site, edge, reason"), "400": text("not an IP address, or not a path of the layout") }
            }},
            "/api/v1/reports": { "post": {
                "summary": "An edge's report (every second), signed with a report key",
                "parameters": [{ "name": "X-Estuary-Signature", "in": "header", "required": true, "schema": { "type": "string" }, "description": "t=UNIX_MS,kid=KEY_ID,sig=HEX: HMAC-SHA256 of \"estuary-report-v1\\n\" + t + \"\\n\" + body" }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["id", "site", "url", "clients", "egress_bps", "cache_hit_ratio", "cpu", "mood"] } } } },
                "responses": { "204": { "description": "taken" }, "400": text("does not parse, out of bounds or unknown site; nothing changed"), "401": text("unsigned, bad signature, unknown key, outside the clock window or replayed; nothing changed"), "403": text("contradicts the edge's pin, or the edge is not pinned and only pinned edges are taken"), "408": text("the body came too slowly"), "413": text("the body is larger than 4096 bytes") }
            }},
            "/api/v1/edges": { "get": { "summary": "Every edge heard from: last report, age, mood now", "responses": { "200": object("edges") } } },
            "/api/v1/edges/{id}": { "delete": {
                "summary": "Forget an edge until it reports again",
                "security": admin,
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "204": { "description": "forgotten" }, "401": text("no or wrong admin token"), "403": text("no admin token configured"), "404": text("unknown edge") }
            }},
            "/api/v1/sites": { "get": { "summary": "Sites with their load, viewers, redirects in the last minute and edges", "responses": { "200": object("sites") } } },
            "/api/v1/channels": { "get": { "summary": "Channels viewers asked for (the first 1000 by name, the rest together), and the live channels the origins have", "security": admin, "responses": { "200": object("channels, other, live"), "401": text("no or wrong admin token"), "403": text("no admin token configured") } } },
            "/api/v1/decisions": { "get": { "summary": "Recent decisions per client group, with viewers' addresses and keycard ids", "security": admin, "responses": { "200": object("groups"), "401": text("no or wrong admin token"), "403": text("no admin token configured") } } },
            "/api/v1/events": { "get": { "summary": "Server-sent events: edge, decision, policy, forgotten", "security": admin, "responses": { "200": { "description": "an event stream", "content": { "text/event-stream": {} } }, "401": text("no or wrong admin token"), "403": text("no admin token configured") } } },
            "/api/v1/policy": {
                "get": { "summary": "The routing policies now", "responses": { "200": object("default and per-channel policies") } },
                "put": {
                    "summary": "Change the routing policies",
                    "security": admin,
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "default": { "enum": ["closest", "least_cost", "least_loaded"] }, "channels": { "type": "object" } } } } } },
                    "responses": { "200": object("the policies now"), "400": text("not a policy"), "401": text("no or wrong admin token"), "403": text("no admin token configured"), "413": text("the body is larger than 64 KiB") }
                }
            },
            "/api/v1/openapi.json": { "get": { "summary": "This document", "responses": { "200": object("OpenAPI 3.1") } } },
            "/dashboard": { "get": { "summary": "The live dashboard", "responses": { "200": { "description": "an HTML page", "content": { "text/html": {} } } } } },
            "/healthz": { "get": { "summary": "Control's mood", "responses": { "200": object("role, mood, reason, edges, live_edges") } } }
        }
    })
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

    #[test]
    fn the_openapi_document_names_every_route() {
        let document = openapi_document();
        for path in [
            "/live/{path}",
            "/api/v1/route",
            "/api/v1/reports",
            "/api/v1/edges",
            "/api/v1/sites",
            "/api/v1/events",
            "/api/v1/policy",
            "/dashboard",
        ] {
            assert!(document["paths"][path].is_object(), "{path}");
        }
        assert_eq!(document["openapi"], "3.1.0");
        for path in ["/api/v1/decisions", "/api/v1/events", "/api/v1/channels"] {
            assert!(
                document["paths"][path]["get"]["security"].is_array(),
                "{path} shows viewers: it needs the token"
            );
        }
    }
}
