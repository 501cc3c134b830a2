//! The edge's process: connections through the porter to hyper (HTTP/1.1 and HTTP/2), every
//! request through the bouncers to the cache, misses to the upstreams.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt as _;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use estuary_proto::url::{CacheClass, PublicPath};

use crate::admit::{Admitted, Credentials, Gate, Refusal};
use crate::body::{Body, OwnedLogLine, Tally};
use crate::bouncer::Bouncer;
use crate::cache::{self, Cache, Growing, Lookup, Object};
use crate::carry;
use crate::metrics::{AccessLog, Metrics};
use crate::net::{self, Cidr};
use crate::porter;
use crate::route::{Route, route};
use crate::upstream::{UpstreamError, Upstreams};

/// How long the answer to a blocking playlist request (`_HLS_msn`, `_HLS_part`) is shared.
const BLOCKING_ANSWER_FLOOR: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub listen: SocketAddr,
    /// Base URLs of the packager or parent edges, tried in turn.
    pub upstreams: Vec<String>,
    /// Bytes of bodies the cache may hold.
    pub cache_bytes: usize,
    /// Who may fetch `/live/…` and `/vod/…`; none lets everyone.
    pub bouncer: Option<Bouncer>,
    /// Where the combined-format access log goes (`-` for standard output).
    pub access_log: Option<PathBuf>,
    /// A file of revoked keycard ids, read again when it changes.
    pub revoked: Option<PathBuf>,
    /// Playlists (which the packager marks `max-age=0`) are shared for this long.
    pub playlist_floor: Duration,
    /// How old a playlist may be and still be served when the upstream fails.
    pub stale_limit: Duration,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Trusted proxies may start their connections with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Control's base URL and who this edge is: a report goes there every second.
    pub control: Option<(String, crate::report::Identity)>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) instead of plain HTTP.
    pub tls: Option<crate::tls::TlsSource>,
    /// With HTTPS, also serve HTTP/3 on the same port number over UDP, and say so in Alt-Svc.
    pub http3: bool,
    /// Continuous streams: slow viewers, bursts, limits.
    pub fanout: crate::fanout::FanoutConfig,
}

impl EdgeConfig {
    pub fn new(listen: SocketAddr, upstreams: Vec<String>) -> Self {
        EdgeConfig {
            listen,
            upstreams,
            cache_bytes: 256 << 20,
            bouncer: None,
            access_log: None,
            revoked: None,
            playlist_floor: Duration::from_millis(100),
            stale_limit: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            control: None,
            tls: None,
            http3: true,
            fanout: crate::fanout::FanoutConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("cannot open the access log {path}: {reason}")]
    AccessLog { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("revoked keycards: {0}")]
    Revoked(String),
    #[error("fan-out engine: {0}")]
    Fanout(String),
}

pub struct Edge {
    config: EdgeConfig,
    cache: Arc<Cache>,
    upstreams: Upstreams,
    fanout: crate::fanout::Fanout,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    /// The revocation list and the bouncers.
    gate: Gate,
    tls: Option<crate::tls::Tls>,
    /// The Alt-Svc header naming the HTTP/3 endpoint, once it is bound.
    alt_svc: OnceLock<HeaderValue>,
    upstream_requests: AtomicU64,
    /// When the upstream last answered, and the last failure since.
    upstream_health: Mutex<(Option<Instant>, Option<String>)>,
}

impl Edge {
    pub fn new(config: EdgeConfig) -> Result<Arc<Edge>, EdgeError> {
        // Sealed bodies hold a file each, beside the sockets.
        let files = crate::sealed::raise_file_limit();
        tracing::debug!(files, "open-file limit");
        let access_log = config
            .access_log
            .as_deref()
            .map(|path| {
                AccessLog::open(path).map_err(|error| EdgeError::AccessLog {
                    path: path.to_owned(),
                    reason: error.to_string(),
                })
            })
            .transpose()?;
        let revoked = config
            .revoked
            .as_deref()
            .map(crate::revoked::Revoked::open)
            .transpose()
            .map_err(EdgeError::Revoked)?;
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::Tls::new)
            .transpose()
            .map_err(EdgeError::Tls)?;
        Ok(Arc::new(Edge {
            cache: Arc::new(Cache::new(config.cache_bytes)),
            upstreams: Upstreams::new(&config.upstreams)?,
            fanout: crate::fanout::Fanout::new(config.fanout.clone()).map_err(EdgeError::Fanout)?,
            metrics: Arc::default(),
            access_log,
            gate: Gate::new(config.bouncer.clone(), revoked),
            tls,
            alt_svc: OnceLock::new(),
            upstream_requests: AtomicU64::new(0),
            upstream_health: Mutex::default(),
            config,
        }))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    pub(crate) fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    pub(crate) fn fanout(&self) -> &crate::fanout::Fanout {
        &self.fanout
    }

    pub fn tls(&self) -> Option<&crate::tls::Tls> {
        self.tls.as_ref()
    }

    /// From now on, every response carries this Alt-Svc value.
    pub(crate) fn advertise(&self, alt_svc: HeaderValue) {
        let _ = self.alt_svc.set(alt_svc);
    }

    /// The TLS certificate's SHA-256 fingerprint, when serving HTTPS.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.tls.as_ref().map(crate::tls::Tls::fingerprint)
    }

    pub fn cache_counts(&self) -> cache::CacheCounts {
        self.cache.counts()
    }

    /// `waking` before the first upstream answer, `happy`, or `sad` with the reason while the
    /// upstreams fail.
    pub fn mood(&self) -> (estuary_proto::Mood, Option<String>) {
        let (last_ok, failure) = self
            .upstream_health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (last_ok, failure) {
            (_, Some(reason)) => (estuary_proto::Mood::Sad, Some(reason)),
            (Some(_), None) => (estuary_proto::Mood::Happy, None),
            (None, None) => (estuary_proto::Mood::Waking, None),
        }
    }

    /// The object at `path`: from the cache, from a fetch under way, or fetched now; a stale
    /// playlist when the upstream fails. The cache key and the upstream request are the path's
    /// canonical target, so however a viewer decorates a URL, it asks for one object.
    async fn object(&self, path: &PublicPath) -> Result<(Arc<Object>, &'static str), String> {
        let key = path.to_string();
        let key = key.as_str();
        loop {
            match self.cache.lookup(key, Instant::now()) {
                Lookup::Hit(object) => return Ok((object, "HIT")),
                Lookup::Wait(mut answer) => loop {
                    if let Some(outcome) = answer.borrow_and_update().clone() {
                        return outcome.map(|object| (object, "COALESCED"));
                    }
                    if answer.changed().await.is_err() {
                        break; // the fetcher went away without an answer: look again
                    }
                },
                // Boxed: the fetch's future is large, and every request, hits too, would carry
                // (and move) its room.
                Lookup::Fetch { stale } => {
                    return Box::pin(self.fetch(key, path.cache_class(), stale)).await;
                }
            }
        }
    }

    async fn fetch(
        &self,
        key: &str,
        class: CacheClass,
        stale: Option<Arc<Object>>,
    ) -> Result<(Arc<Object>, &'static str), String> {
        // If this request goes away mid-fetch (its viewer left), the waiters look again.
        struct Unfinished<'a>(&'a Cache, &'a str, bool);
        impl Drop for Unfinished<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.abandon(self.1);
                }
            }
        }
        let mut guard = Unfinished(&self.cache, key, false);
        self.upstream_requests.fetch_add(1, Ordering::Relaxed);
        match self.upstreams.get(key).await {
            Ok((response, took)) => {
                self.metrics.upstream_latency(took);
                self.health(Ok(()));
                let status = response.status();
                let headers = response.headers();
                let cache_control = headers.get(header::CACHE_CONTROL).cloned();
                let fresh_for = cache::freshness(
                    status,
                    cache_control.as_ref().and_then(|v| v.to_str().ok()),
                    match class {
                        // The answer to a blocking request holds the part asked for: it stays
                        // a right answer to that request, for everyone who asks it.
                        CacheClass::BlockingPlaylist => BLOCKING_ANSWER_FLOOR,
                        CacheClass::Playlist => self.config.playlist_floor,
                        _ => Duration::ZERO,
                    },
                );
                let object = Arc::new(Object {
                    status,
                    content_type: headers.get(header::CONTENT_TYPE).cloned(),
                    cache_control,
                    body: Growing::new(),
                    fetched: Instant::now(),
                    fresh_for,
                });
                self.cache.fill(key, object.clone());
                guard.2 = true;
                self.pump(key.to_owned(), response.into_body(), object.clone());
                Ok((object, "MISS"))
            }
            Err(error) => {
                let reason = error.to_string();
                self.health(Err(reason.clone()));
                // A blocking request is never answered from a stale copy (DESIGN.md).
                let usable = stale.filter(|stale| {
                    class == CacheClass::Playlist
                        && stale.fetched.elapsed() < self.config.stale_limit
                        && stale.body.end() == Some(Ok(()))
                });
                guard.2 = true;
                self.cache.fail(key, reason.clone(), usable.clone());
                match usable {
                    Some(stale) => {
                        self.metrics.stale_served.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(path = key, age = ?stale.fetched.elapsed(), %reason, "upstream failed: serving a stale playlist");
                        Ok((stale, "STALE"))
                    }
                    None => Err(reason),
                }
            }
        }
    }

    /// Moves an upstream body into the object's growing body, for every viewer at once. A body
    /// that breaks off, stalls or grows past the limit is dropped from the cache; a whole one is
    /// sized again.
    fn pump(&self, key: String, mut body: hyper::body::Incoming, object: Arc<Object>) {
        use crate::upstream::{BODY_IDLE_TIMEOUT, MAX_BODY};
        let cache = self.cache.clone();
        tokio::spawn(async move {
            let idle = tokio::time::sleep(BODY_IDLE_TIMEOUT);
            tokio::pin!(idle);
            let mut received = 0;
            let outcome = loop {
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + BODY_IDLE_TIMEOUT);
                let frame = tokio::select! {
                    frame = body.frame() => frame,
                    () = idle.as_mut() => {
                        break Err(format!("the upstream sent nothing for {BODY_IDLE_TIMEOUT:?}"));
                    }
                };
                match frame {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            received += data.len();
                            if received > MAX_BODY {
                                break Err(format!("the upstream's body is over {MAX_BODY} bytes"));
                            }
                            object.body.push(data);
                        }
                    }
                    Some(Err(error)) => break Err(error.to_string()),
                    None => break Ok(()),
                }
            };
            match &outcome {
                Ok(()) => {
                    object.body.seal();
                    cache.resize(&key, &object);
                }
                Err(reason) => {
                    tracing::debug!(path = key, %reason, "upstream body broke off");
                    cache.forget(&key, &object);
                }
            }
            object.body.finish(outcome);
        });
    }

    fn health(&self, outcome: Result<(), String>) {
        let mut health = self
            .upstream_health
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => *health = (Some(Instant::now()), None),
            Err(reason) => health.1 = Some(reason),
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    response
}

fn problem(status: StatusCode, reason: impl Into<String>) -> Response<Body> {
    let mut reason = reason.into();
    reason.push('\n');
    let mut response = respond(status, "text/plain; charset=utf-8", Body::text(reason));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

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

pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
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
    let mut response = answer(edge, client, &request, routed).await;
    if let Some(alt_svc) = edge.alt_svc.get() {
        response
            .headers_mut()
            .insert(header::ALT_SVC, alt_svc.clone());
    }
    tallied(edge, log, response)
}

/// Who the client is: the socket's peer, or what a trusted proxy in front says.
fn client_of(edge: &Edge, peer: IpAddr, request: &Request<()>) -> IpAddr {
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    net::client_address(peer, forwarded_for, &edge.config.trusted_proxies)
}

/// Counts the response in the metrics, and has its body count its bytes and write the access
/// log's line when it is over.
fn tallied(
    edge: &Edge,
    log: Option<(crate::metrics::AccessLog, OwnedLogLine)>,
    mut response: Response<Body>,
) -> Response<Body> {
    let status = response.status().as_u16();
    edge.metrics.count_request(status);
    let body = std::mem::replace(response.body_mut(), Body::empty());
    let mut body = body.tallied(Tally {
        metrics: edge.metrics.clone(),
        log,
        bytes: 0,
    });
    body.set_status(status);
    *response.body_mut() = body;
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
        revocable: edge.gate.revoked().cloned().zip(admitted.keycard_id),
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
    let admitted = match edge.gate.admit(&path, client, credentials, now).await {
        Ok(admitted) => admitted,
        Err(refusal) => return Err(Box::new((socket, tallied(edge, log, refused(refusal))))),
    };
    let arrival = arrival(edge, &path, &request, admitted);
    let (status, bytes) = crate::fanout::serve_viewer(edge, socket, arrival).await;
    edge.metrics.count_request(status);
    drop(Tally {
        metrics: edge.metrics.clone(),
        log: log.map(|(log, mut line)| {
            line.status = status;
            (log, line)
        }),
        bytes,
    });
    Ok(())
}

/// The access log's line for `request`, as far as it is known before the answer.
fn log_start(
    edge: &Edge,
    client: IpAddr,
    request: &Request<()>,
) -> Option<(crate::metrics::AccessLog, OwnedLogLine)> {
    edge.access_log.clone().map(|log| {
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
        Route::Preflight => return preflight(),
        Route::Health => return healthz(edge),
        Route::Metrics => {
            let mut text = edge.metrics.render(
                edge.cache.counts(),
                edge.upstream_requests.load(Ordering::Relaxed),
            );
            text.push_str(&edge.fanout.render_metrics());
            return respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Body::text(text),
            );
        }
        Route::Stream(path) | Route::Object(path) => path,
    };
    let credentials = Credentials::of(request.uri(), request.headers());
    let now = unix_now().as_secs();
    let admitted = match edge.gate.admit(&path, client, credentials, now).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal),
    };
    if path.stream().is_some() {
        relay(edge, &path, request, admitted).await
    } else {
        serve_object(edge, &path, admitted).await
    }
}

fn preflight() -> Response<Body> {
    let mut response = respond(StatusCode::NO_CONTENT, "text/plain", Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    response
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
            "{{\"role\":\"edge\",\"mood\":\"{mood}\"{reason},\"fanout\":\"{}\"}}\n",
            edge.fanout.engine()
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
    match crate::fanout::stream_body(edge, arrival).await {
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
    let (object, state) = match edge.object(path).await {
        Ok(found) => found,
        Err(reason) => return problem(StatusCode::BAD_GATEWAY, reason),
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
    headers.insert("x-cache", HeaderValue::from_static(state));
    if state == "STALE" {
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

/// Binds the configured address.
pub async fn bind(config: &EdgeConfig) -> Result<TcpListener, EdgeError> {
    estuary_proto::io::listen(config.listen).map_err(|error| EdgeError::Listen {
        address: config.listen,
        reason: error.to_string(),
    })
}

/// Serves viewers on `listener` until the process ends.
pub async fn serve(listener: TcpListener, edge: Arc<Edge>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        tokio::spawn(async move {
            edge.metrics
                .open_connections
                .fetch_add(1, Ordering::Relaxed);
            serve_connection(&edge, stream, peer).await;
            edge.metrics
                .open_connections
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_connection(edge: &Arc<Edge>, mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    let refused = |error: porter::HeadError| {
        if error != porter::HeadError::Closed {
            edge.metrics.refused_heads.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %error, "connection refused by the porter");
        }
    };
    let proxy_protocol =
        edge.config.proxy_protocol && net::any_contains(&edge.config.trusted_proxies, peer.ip());
    let (proxied, already) = if proxy_protocol {
        match porter::read_proxy(&mut stream).await {
            Ok(found) => found,
            Err(error) => return refused(error),
        }
    } else {
        (None, bytes::Bytes::new())
    };
    // The client a PROXY header names stands where the socket's peer would.
    let client = proxied.unwrap_or(peer.ip());
    match &edge.tls {
        None => match porter::admit(stream, already).await {
            Ok((head, connection)) if !head.http2 => {
                let (read, stream) = connection.into_parts();
                crate::http1::serve(edge, stream, bytes::BytesMut::from(read), client).await;
            }
            Ok((_, connection)) => serve_http(edge, connection, client, peer).await,
            Err(error) => refused(error),
        },
        Some(tls) => {
            let handshake = tls.acceptor.accept(porter::Prefixed::new(already, stream));
            let tls = match tokio::time::timeout(porter::HEAD_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    edge.metrics.refused_heads.fetch_add(1, Ordering::Relaxed);
                    return tracing::debug!(%peer, %error, "TLS handshake failed");
                }
                Err(_) => return refused(porter::HeadError::TimedOut),
            };
            match porter::admit(tls, bytes::Bytes::new()).await {
                Ok((_head, connection)) => serve_http(edge, connection, client, peer).await,
                Err(error) => refused(error),
            }
        }
    }
}

/// An HTTP/2 connection is pinged this often when quiet...
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// ...and closed when a ping goes this long unanswered.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one HTTP/2 connection may have open at once.
pub const H2_MAX_STREAMS: u32 = 256;

/// HTTP/1.1 or HTTP/2 (by ALPN, or by the prior-knowledge preface) on an admitted connection.
/// HTTP/1.1 has hyper's header timeout; HTTP/2 is guarded ([`crate::h2_guard`]) so that a
/// request dribbled a byte at a time is cut off after the same head timeout, and a connection
/// with nothing open closes after the idle timeout; unanswered pings close it too.
async fn serve_http<S>(edge: &Arc<Edge>, connection: S, client: IpAddr, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use crate::h2_guard::{Guarded, OpenRequests};
    let requests = OpenRequests::new();
    let counted = requests.clone();
    let service_edge = edge.clone();
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let edge = service_edge.clone();
        let open = counted.open();
        // The edge answers GET and HEAD, so a request's body is never read.
        let request = request.map(|_| ());
        async move {
            let response = handle(edge, client, request).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| body.holding(open)))
        }
    });
    let connection = Guarded::new(
        connection,
        requests,
        porter::HEAD_TIMEOUT,
        crate::http1::IDLE_TIMEOUT,
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(porter::HEAD_TIMEOUT)
        .max_buf_size(porter::MAX_HEAD.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(porter::MAX_HEAD as u32);
    if let Err(error) = builder
        .serve_connection(TokioIo::new(connection), service)
        .await
    {
        tracing::debug!(%peer, %error, "connection ended");
    }
}

/// Runs the edge until `shutdown` resolves.
pub async fn run(
    config: EdgeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), EdgeError> {
    let edge = Edge::new(config.clone())?;
    let listener = bind(&config).await?;
    let address = listener.local_addr().unwrap_or(config.listen);
    match edge.tls_fingerprint() {
        Some(fingerprint) => {
            let spki = edge
                .tls()
                .and_then(crate::tls::Tls::spki_sha256)
                .unwrap_or_default();
            tracing::info!(%address, upstreams = ?config.upstreams, certificate = %fingerprint, %spki, "edge listening (HTTPS)")
        }
        None => tracing::info!(%address, upstreams = ?config.upstreams, "edge listening"),
    }
    if let Some(revoked) = edge.gate.revoked() {
        tokio::spawn(revoked.clone().watch());
    }
    if let Some((control, identity)) = config.control.clone() {
        tokio::spawn(crate::report::run(edge.clone(), control, identity));
    }
    if let Some(endpoint) = crate::http3::bind(&edge, address)? {
        tracing::info!(%address, "HTTP/3 on UDP");
        tokio::spawn(crate::http3::serve(endpoint, edge.clone()));
    }
    tokio::select! {
        () = serve(listener, edge) => {}
        () = shutdown => tracing::info!("stopping"),
    }
    Ok(())
}
