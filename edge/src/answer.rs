//! The answer to one request, whatever the protocol it came by: routed (`route`), let in
//! (`admit`), then served: an object through the fetch driver with the viewer's keycard carried
//! into playlists, a continuous stream by the fan-out engine, or the node's own health and
//! metrics. Every response is counted and logged when it ends.

use std::net::IpAddr;
use std::sync::Arc;

use estuary_proto::url::PublicPath;
use estuary_proto::utc::unix_now;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::admit::{Admitted, Credentials, Refusal};
use estuary_http::{Body, Growing, preflight, problem, respond};

use crate::carry;
use crate::fetch::CacheState;
use crate::metrics::{OwnedLogLine, Tally};
use crate::net;
use crate::node::Edge;
use crate::route::{Route, route};

/// The answer to a request the gate turned away; a 401 asks for HTTP Basic credentials.
fn refused(refusal: Refusal) -> Response<Body> {
    let asks_for_password = refusal.asks_for_password();
    let mut response = problem(refusal.status, refusal.reason);
    if asks_for_password {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"estuary\", charset=\"UTF-8\""),
        );
    }
    response
}

/// Answers one request.
pub async fn handle(edge: Arc<Edge>, peer: IpAddr, request: Request<()>) -> Response<Body> {
    let routed = route(request.method(), request.uri());
    handle_routed(&edge, peer, request, routed).await
}

/// Answers one request whose route is known.
pub(crate) async fn handle_routed(
    edge: &Arc<Edge>,
    peer: IpAddr,
    request: Request<()>,
    routed: Route,
) -> Response<Body> {
    let client = client_of(edge, peer, &request);
    let log = log_start(edge, client, &request);
    let in_flight = InFlight::new(edge.metrics_handle());
    let mut response = answer(edge, client, &request, routed).await;
    if let Some(alt_svc) = edge.alt_svc() {
        response
            .headers_mut()
            .insert(header::ALT_SVC, alt_svc.clone());
    }
    tallied(edge, log, response, Some(in_flight))
}

/// A request counted in flight until its response's body is over (or the request is dropped
/// unanswered): a draining edge waits for these.
struct InFlight(Arc<crate::metrics::Metrics>);

impl InFlight {
    fn new(metrics: &Arc<crate::metrics::Metrics>) -> InFlight {
        metrics
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Who the client is: the socket's peer, or what a trusted proxy in front says.
fn client_of(edge: &Edge, peer: IpAddr, request: &Request<()>) -> IpAddr {
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    net::client_address(peer, forwarded_for, &edge.config().trusted_proxies)
}

/// Counts the response in the metrics, and has its body count its bytes, write the access
/// log's line and end the request's time in flight when it is over (one closure for all three:
/// this runs for every response).
fn tallied(
    edge: &Edge,
    log: Option<(crate::metrics::AccessLog, OwnedLogLine)>,
    mut response: Response<Body>,
    in_flight: Option<InFlight>,
) -> Response<Body> {
    let status = response.status().as_u16();
    edge.metrics().count_request(status);
    let tally = Tally {
        metrics: edge.metrics_handle().clone(),
        log: log.map(|(log, mut line)| {
            line.status = status;
            (log, line)
        }),
    };
    let body = std::mem::replace(response.body_mut(), Body::empty());
    *response.body_mut() = body.on_end(move |bytes| {
        tally.finish(bytes);
        drop(in_flight);
    });
    response
}

/// Whether a continuous-stream request is another edge's, asking for the stream framed.
fn wants_frames(request: &Request<()>) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .is_some_and(|accept| accept == estuary_proto::chunks::CONTENT_TYPE)
}

/// Whether a radio player asks for ICY metadata in the stream (`Icy-MetaData: 1`).
fn wants_icy(request: &Request<()>) -> bool {
    request
        .headers()
        .get(estuary_proto::icy::REQUEST_HEADER)
        .is_some_and(|value| estuary_proto::icy::wanted(value.as_bytes()))
}

/// The viewer of the continuous stream at `path`, as the fan-out engine takes it.
fn arrival(
    edge: &Edge,
    path: &PublicPath,
    request: &Request<()>,
    admitted: Admitted,
) -> crate::fanout::Arrival {
    crate::fanout::Arrival {
        key: path.to_string(),
        head_only: request.method() == Method::HEAD,
        framed: wants_frames(request),
        until: admitted.until,
        revocable: edge.gate().revoked().cloned().zip(admitted.keycard_id),
        icy: wants_icy(request),
    }
}

/// Hands a continuous-stream request and its socket to the fan-out engine once the bouncers
/// let the viewer in, and logs it when the viewer leaves; a refused viewer's socket comes back
/// with the refusal, to be answered as any other request.
pub(crate) async fn serve_continuous(
    edge: &Arc<Edge>,
    socket: tokio::net::TcpStream,
    peer: IpAddr,
    request: Request<()>,
    path: PublicPath,
) -> Result<(), Box<(tokio::net::TcpStream, Response<Body>)>> {
    let client = client_of(edge, peer, &request);
    let log = log_start(edge, client, &request);
    let credentials = Credentials::of(request.uri(), request.headers());
    let now = unix_now().as_secs();
    let admitted = match edge.gate().admit(&path, client, credentials, now).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            return Err(Box::new((
                socket,
                tallied(edge, log, refused(refusal), None),
            )));
        }
    };
    let arrival = arrival(edge, &path, &request, admitted);
    let (status, bytes) = crate::fanout::serve_viewer(edge.fanout(), socket, arrival).await;
    edge.metrics().count_request(status);
    Tally {
        metrics: edge.metrics_handle().clone(),
        log: log.map(|(log, mut line)| {
            line.status = status;
            (log, line)
        }),
    }
    .finish(bytes);
    Ok(())
}

/// The access log's line for `request`, as far as it is known before the answer.
fn log_start(
    edge: &Edge,
    client: IpAddr,
    request: &Request<()>,
) -> Option<(crate::metrics::AccessLog, OwnedLogLine)> {
    edge.access_log().cloned().map(|log| {
        let text = |name: header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (
            log,
            OwnedLogLine {
                client,
                unix_nanos: unix_now().as_nanos() as u64,
                // HTTP/2 requests carry an absolute URI; the log wants the path, as for HTTP/1.1.
                request_line: format!(
                    "{} {} {:?}",
                    request.method(),
                    request
                        .uri()
                        .path_and_query()
                        .map_or("/", |target| target.as_str()),
                    request.version()
                ),
                status: 0,
                referer: text(header::REFERER),
                user_agent: text(header::USER_AGENT),
            },
        )
    })
}

async fn answer(
    edge: &Arc<Edge>,
    client: IpAddr,
    request: &Request<()>,
    routed: Route,
) -> Response<Body> {
    let path = match routed {
        Route::Refuse { status, reason } => return problem(status, reason),
        Route::Preflight => return preflight("GET, HEAD, OPTIONS"),
        Route::Health => return healthz(edge),
        Route::Metrics => {
            let mut text = edge
                .metrics()
                .render(edge.cache_counts(), edge.fetcher().upstream_requests());
            text.push_str(&edge.fanout().render_metrics());
            let (reloads, refused) = edge.reload_counts();
            let in_flight = edge
                .metrics()
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed);
            text.push_str(&format!(
                "# HELP estuary_edge_reloads_total Reloads of the configuration, by outcome.\n\
                 # TYPE estuary_edge_reloads_total counter\n\
                 estuary_edge_reloads_total{{outcome=\"applied\"}} {reloads}\n\
                 estuary_edge_reloads_total{{outcome=\"refused\"}} {refused}\n\
                 # HELP estuary_edge_draining 1 while the edge drains.\n\
                 # TYPE estuary_edge_draining gauge\n\
                 estuary_edge_draining {}\n\
                 # HELP estuary_edge_requests_in_flight Requests being answered now.\n\
                 # TYPE estuary_edge_requests_in_flight gauge\n\
                 estuary_edge_requests_in_flight {in_flight}\n",
                u8::from(edge.is_draining())
            ));
            return respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Body::text(text),
            );
        }
        Route::Admin(action) => {
            return crate::admin::answer(edge, action, request.headers()).await;
        }
        Route::Stream(path) | Route::Object(path) => path,
    };
    let credentials = Credentials::of(request.uri(), request.headers());
    let now = unix_now().as_secs();
    let admitted = match edge.gate().admit(&path, client, credentials, now).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal),
    };
    if path.stream().is_some() {
        relay(edge, &path, request, admitted).await
    } else {
        serve_object(edge, &path, admitted).await
    }
}

fn healthz(edge: &Edge) -> Response<Body> {
    let (mood, reason) = edge.mood();
    let reason = reason
        .map(|r| {
            format!(
                ",\"reason\":\"{}\"",
                r.replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .unwrap_or_default();
    respond(
        StatusCode::OK,
        "application/json",
        Body::text(format!(
            "{{\"role\":\"edge\",\"mood\":\"{mood}\"{reason},\"draining\":{},\"fanout\":\"{}\"}}\n",
            edge.is_draining(),
            edge.fanout().engine()
        )),
    )
}

/// A continuous stream on a connection hyper keeps (HTTP/2, TLS, HTTP/3): the fan-out engine
/// relays it into the response's body. (Plain HTTP/1 connections are handed to the engine
/// before they get here.) Never through the cache, which would hold a never-ending body whole.
async fn relay(
    edge: &Arc<Edge>,
    path: &PublicPath,
    request: &Request<()>,
    admitted: Admitted,
) -> Response<Body> {
    let arrival = arrival(edge, path, request, admitted);
    let framed = arrival.framed;
    match crate::fanout::stream_body(edge.fanout(), arrival).await {
        Ok((media_type, icy, body)) => {
            let mut response = respond(StatusCode::OK, "application/octet-stream", body);
            let headers = response.headers_mut();
            if let Ok(media_type) = HeaderValue::from_str(&media_type) {
                if framed {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(estuary_proto::chunks::CONTENT_TYPE),
                    );
                    headers.insert(estuary_proto::chunks::STREAM_TYPE, media_type);
                } else {
                    headers.insert(header::CONTENT_TYPE, media_type);
                }
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if icy {
                let interval = HeaderValue::from(estuary_proto::icy::INTERVAL);
                headers.insert(estuary_proto::icy::INTERVAL_HEADER, interval);
            }
            response
        }
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = problem(status, refusal.reason);
            if let Some(location) = refusal
                .location
                .and_then(|l| HeaderValue::from_str(&l).ok())
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
    }
}

/// An object of the layout through the cache, with the viewer's keycard carried into the URIs
/// of a playlist.
async fn serve_object(edge: &Arc<Edge>, path: &PublicPath, admitted: Admitted) -> Response<Body> {
    let (object, state) = match edge.fetcher().object(path).await {
        Ok(found) => found,
        Err(failure) => return problem(failure.status(), failure.to_string()),
    };
    let carried = admitted.carried;
    let playlist = path.is_playlist();
    let body = match (&carried, object.status.is_success() && playlist) {
        (Some(keycard), true) => match whole_text(&object.body).await {
            Some(text) if path.is_manifest() => Body::text(carry::into_manifest(&text, keycard)),
            Some(text) => Body::text(carry::into_playlist(&text, keycard)),
            None => return problem(StatusCode::BAD_GATEWAY, "the upstream's playlist broke off"),
        },
        _ => Body::of(&object.body),
    };
    let mut response = Response::new(body);
    *response.status_mut() = object.status;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        object
            .content_type
            .clone()
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let cache_control = match (&carried, &object.cache_control) {
        // A copy with a viewer's keycard in it is that viewer's.
        (Some(_), _) if playlist => Some(HeaderValue::from_static("private, max-age=0")),
        (_, cache_control) => cache_control.clone(),
    };
    if let Some(value) = cache_control {
        headers.insert(header::CACHE_CONTROL, value);
    }
    headers.insert("x-cache", HeaderValue::from_static(state.as_str()));
    if state == CacheState::Stale {
        headers.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
    }
    response
}

/// A playlist's text, once its body is whole.
async fn whole_text(body: &Arc<Growing>) -> Option<String> {
    let mut changes = body.subscribe();
    loop {
        changes.borrow_and_update();
        match body.end() {
            Some(Ok(())) => {
                let (pieces, _) = body.read(0);
                let bytes: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
                return String::from_utf8(bytes).ok();
            }
            Some(Err(_)) => return None,
            None => changes.changed().await.ok()?,
        }
    }
}
