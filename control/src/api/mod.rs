//! Control's HTTP API, served by axum: edge reports in, decisions explained, health, and the
//! admin API and dashboard ([`admin`]). Every error is an RFC 9457 problem.
//!
//! - `POST /api/v1/reports`: an edge's signed report (JSON); `204`, or `413`, `401`, `400` or
//!   `403` with the reason, and nothing changed (see crate::reports).
//! - `GET /api/v1/route?ip=ADDRESS&path=PATH`: the decision for that viewer, as JSON.
//! - `GET /api/v1/edges`: every edge heard from, its last report and its mood now.
//! - `GET /healthz`: control's own mood.
//! - any other path: a viewer's request, answered as the front door answers it
//!   (crate::redirect), or a problem.
//!
//! With an admin address, the admin API, the route and edge views listen there (with reports
//! and health), and the public address serves only redirects, reports and health.

pub mod admin;
pub mod openapi;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use estuary_proto::Mood;
use estuary_proto::report::{MAX_REPORT_BYTES, REPORTS_PATH, SIGNATURE_HEADER};
use estuary_proto::url::PublicPath;
use http_body_util::{BodyExt as _, Limited};

use crate::redirect;
use crate::routing::Explained;
use crate::state::Control;

/// Every route on one address: reports, health, the admin API, and viewers.
pub fn app(control: Arc<Control>) -> axum::Router {
    public_routes()
        .merge(admin_routes())
        .fallback(redirect::viewer)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(control)
}

/// The public address's routes when the admin API has its own address: reports, health, and
/// viewers; an admin path is not found here.
pub fn public_app(control: Arc<Control>) -> axum::Router {
    public_routes()
        .fallback(redirect::viewer)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(control)
}

/// The admin address's routes: the admin API, reports and health; no redirects.
pub fn admin_app(control: Arc<Control>) -> axum::Router {
    admin_routes()
        .merge(public_routes())
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not here: viewers ask control's public address",
            )
        })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(control)
}

fn public_routes() -> axum::Router<Arc<Control>> {
    axum::Router::new()
        .route(REPORTS_PATH, post(report))
        .route("/healthz", get(healthz))
}

fn admin_routes() -> axum::Router<Arc<Control>> {
    axum::Router::new()
        .route("/api/v1/route", get(route))
        .route("/api/v1/edges", get(edges))
        .merge(admin::routes())
}

/// A known path asked for with a method it does not take.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

/// An RFC 9457 problem, as axum sends it.
pub(crate) fn problem(status: StatusCode, detail: impl AsRef<str>) -> Response {
    estuary_http::problem(status, detail).map(Body::new)
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
        control.limits().head_timeout,
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
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
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
    let target = query
        .get("path")
        .map_or("/live/demo/master.m3u8", String::as_str);
    let (path, layout_query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    match PublicPath::parse(path, layout_query) {
        Ok(public) => match public.channel().filter(|_| public.is_media()) {
            Some(channel) => json(&Explained::from(&control.decide(client, channel))),
            None => problem(
                StatusCode::BAD_REQUEST,
                format!("path {target:?} is not a /live/… or /vod/… path of the public layout"),
            ),
        },
        Err(error) => problem(StatusCode::BAD_REQUEST, format!("path {target:?}: {error}")),
    }
}

async fn edges(State(control): State<Arc<Control>>) -> Response {
    json(&control.registry().snapshot(Instant::now()))
}

async fn healthz(State(control): State<Arc<Control>>) -> Response {
    let snapshot = control.registry().snapshot(Instant::now());
    let live = snapshot.edges.iter().filter(|edge| edge.is_live()).count();
    let (mood, reason) = if live > 0 {
        (Mood::Happy, None)
    } else if snapshot.edges.is_empty() {
        (Mood::Waking, Some("no edge has reported yet"))
    } else {
        (Mood::Hungry, Some("no edge is live"))
    };
    let (applied, refused, failure) = control.reload_counts();
    // A refused reload leaves control working on the configuration it had: its mood stands,
    // and the reason is told beside it until a reload succeeds.
    json(&serde_json::json!({
        "role": "control",
        "mood": mood,
        "reason": reason,
        "edges": snapshot.edges.len(),
        "live_edges": live,
        "reloads": { "applied": applied, "refused": refused },
        "reload_refused": failure,
    }))
}
