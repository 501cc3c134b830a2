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

use crate::body::{Body, OwnedLogLine, Tally};
use crate::bouncer::{Bouncer, Verdict, Visitor};
use crate::cache::{self, Cache, Growing, Lookup, Object};
use crate::carry;
use crate::htpasswd;
use crate::metrics::{AccessLog, Metrics};
use crate::net::{self, Cidr};
use crate::porter;
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
    revoked: Option<Arc<crate::revoked::Revoked>>,
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
            revoked,
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

    /// The object for `key` (path and query, keycard removed): from the cache, from a fetch
    /// under way, or fetched now; a stale playlist when the upstream fails.
    async fn object(&self, key: &str) -> Result<(Arc<Object>, &'static str), String> {
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
                Lookup::Fetch { stale } => return Box::pin(self.fetch(key, stale)).await,
            }
        }
    }

    async fn fetch(
        &self,
        key: &str,
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
                    if key.contains("_HLS_msn=") {
                        // The answer to a blocking request holds the part asked for: it stays
                        // a right answer to that request, for everyone who asks it.
                        BLOCKING_ANSWER_FLOOR
                    } else if is_playlist(key) {
                        self.config.playlist_floor
                    } else {
                        Duration::ZERO
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
                let usable = stale.filter(|stale| {
                    is_playlist(key)
                        && !key.contains("_HLS_msn")
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
    /// that breaks off is dropped from the cache; a whole one is sized again.
    fn pump(&self, key: String, mut body: hyper::body::Incoming, object: Arc<Object>) {
        let cache = self.cache.clone();
        tokio::spawn(async move {
            let outcome = loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
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

/// A continuous stream of the public layout (`/live/{channel}/stream.{ext}`): a response that
/// never ends, for the fan-out engine rather than the cache.
pub(crate) fn is_continuous_stream(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/');
    matches!(
        (segments.next(), segments.next(), segments.next(), segments.next()),
        (Some("live"), Some(_), Some(name), None) if name.starts_with("stream.")
    )
}

/// Playlists and manifests: short-lived, rewritten to carry keycards, served stale on failure.
fn is_playlist(key: &str) -> bool {
    let path = key.split('?').next().unwrap_or(key);
    path.ends_with(".m3u8") || path.ends_with(".mpd")
}

/// A path that stays inside the layout: no `.` or `..` segments (also percent-encoded), no
/// backslashes or NULs.
pub fn is_safe_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    let no_dot_segment = |path: &str| {
        path.split('/')
            .skip(1)
            .all(|segment| segment != "." && segment != "..")
    };
    if !path.contains(['%', '\\']) {
        return no_dot_segment(path);
    }
    let decoded = path
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "\\")
        .replace("%5C", "\\")
        .replace("%00", "\0");
    !decoded.contains(['\\', '\0']) && no_dot_segment(&decoded)
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

pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Answers one request.
pub async fn handle(edge: Arc<Edge>, peer: IpAddr, request: Request<()>) -> Response<Body> {
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    let client = net::client_address(peer, forwarded_for, &edge.config.trusted_proxies);
    let log = log_start(&edge, client, &request);
    let mut response = answer(&edge, client, &request).await;
    if let Some(alt_svc) = edge.alt_svc.get() {
        response
            .headers_mut()
            .insert(header::ALT_SVC, alt_svc.clone());
    }
    tallied(&edge, log, response)
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

/// Whether a request on a plain HTTP/1 connection is for the fan-out engine.
pub(crate) fn is_continuous_request(request: &Request<()>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && is_continuous_stream(request.uri().path())
        && is_safe_path(request.uri().path())
}

/// Hands a continuous-stream request and its socket to the fan-out engine once the bouncers
/// let the viewer in, and logs it when the viewer leaves; a refused viewer's socket comes back
/// with the refusal, to be answered as any other request.
pub(crate) async fn serve_continuous(
    edge: &Arc<Edge>,
    socket: tokio::net::TcpStream,
    peer: IpAddr,
    request: Request<()>,
) -> Result<(), Box<(tokio::net::TcpStream, Response<Body>)>> {
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    let client = net::client_address(peer, forwarded_for, &edge.config.trusted_proxies);
    let log = log_start(edge, client, &request);
    let admitted = match admit(edge, client, &request) {
        Ok(admitted) => admitted,
        Err(refusal) => return Err(Box::new((socket, tallied(edge, log, *refusal)))),
    };
    let arrival = crate::fanout::Arrival {
        key: crate::fanout::stream_key(request.uri().path(), request.uri().query()),
        framed: wants_frames(&request),
        head_only: request.method() == Method::HEAD,
        until: admitted.until,
        revocable: edge.revoked.clone().zip(admitted.keycard_id),
        icy: wants_icy(&request),
    };
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

async fn answer(edge: &Arc<Edge>, client: IpAddr, request: &Request<()>) -> Response<Body> {
    let path = request.uri().path();
    if !is_safe_path(path) {
        return problem(StatusCode::BAD_REQUEST, "the path leaves the URL layout");
    }
    match (request.method(), path) {
        (&Method::OPTIONS, _) => {
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
        (&Method::GET | &Method::HEAD, "/healthz") => healthz(edge),
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut text = edge.metrics.render(
                edge.cache.counts(),
                edge.upstream_requests.load(Ordering::Relaxed),
            );
            text.push_str(&edge.fanout.render_metrics());
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Body::text(text),
            )
        }
        (&Method::GET | &Method::HEAD, _) => proxy(edge, client, request).await,
        _ => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "the edge serves GET and HEAD",
        ),
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
            "{{\"role\":\"edge\",\"mood\":\"{mood}\"{reason},\"fanout\":\"{}\"}}\n",
            edge.fanout.engine()
        )),
    )
}

/// A viewer the bouncers let in.
pub(crate) struct Admitted {
    /// The keycard that let the viewer in, to carry into the URIs of a playlist.
    carried: Option<String>,
    /// When the viewer's credentials stop working (Unix seconds).
    until: Option<u64>,
    /// The id of the keycard presented, watched for revocation.
    keycard_id: Option<String>,
}

/// Who may come in: the viewer as admitted, else the refusal.
pub(crate) fn admit(
    edge: &Edge,
    client: IpAddr,
    request: &Request<()>,
) -> Result<Admitted, Box<Response<Body>>> {
    let path = request.uri().path();
    let header_text = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let keycard = carry::find_keycard(
        request.uri().query(),
        header_text(header::COOKIE),
        header_text(header::AUTHORIZATION),
    );
    let guarded = path.starts_with("/live/") || path.starts_with("/vod/");
    // A revoked keycard is refused whatever the bouncers would say. (Its id is read only
    // when there is a revocation list.)
    let keycard_id = keycard
        .as_deref()
        .filter(|_| edge.revoked.is_some())
        .and_then(|card| estuary_proto::Keycard::parse(card).ok())
        .and_then(|card| card.id);
    if guarded
        && let (Some(revoked), Some(id)) = (&edge.revoked, &keycard_id)
        && revoked.contains(id)
    {
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            format!("keycard {id} is revoked"),
        )));
    }
    if guarded && let Some(bouncer) = &edge.config.bouncer {
        let basic = header_text(header::AUTHORIZATION).and_then(htpasswd::basic_credentials);
        let visitor = Visitor {
            path,
            keycard: keycard.as_deref(),
            client,
            basic: basic
                .as_ref()
                .map(|(user, password)| (user.as_str(), password.as_str())),
            now: unix_now().as_secs(),
        };
        match bouncer.judge(&visitor) {
            Verdict::Allow { until } => {
                return Ok(Admitted {
                    carried: keycard,
                    until,
                    keycard_id,
                });
            }
            Verdict::Deny { status, reason } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                let mut response = problem(status, reason);
                if status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"estuary\", charset=\"UTF-8\""),
                    );
                }
                return Err(Box::new(response));
            }
        }
    }
    Ok(Admitted {
        carried: None,
        until: None,
        keycard_id: None,
    })
}

async fn proxy(edge: &Arc<Edge>, client: IpAddr, request: &Request<()>) -> Response<Body> {
    let path = request.uri().path();
    let query = request.uri().query();
    let admitted = match admit(edge, client, request) {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let carried = admitted.carried;
    if is_continuous_stream(path) {
        // Plain HTTP/1 connections are handed to the fan-out engine before they get here; on
        // the others (HTTP/2, TLS, HTTP/3) the engine relays the stream into the response's
        // body. Never through the cache, which would hold a never-ending body whole.
        let arrival = crate::fanout::Arrival {
            key: crate::fanout::stream_key(path, query),
            head_only: request.method() == Method::HEAD,
            framed: wants_frames(request),
            until: admitted.until,
            revocable: edge.revoked.clone().zip(admitted.keycard_id),
            icy: wants_icy(request),
        };
        let framed = arrival.framed;
        return match crate::fanout::stream_body(edge, arrival).await {
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
                let status =
                    StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut response = problem(status, refusal.reason);
                if let Some(location) = refusal
                    .location
                    .and_then(|l| HeaderValue::from_str(&l).ok())
                {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                response
            }
        };
    }
    let rest = query.map(carry::without_keycard).unwrap_or_default();
    let key = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{rest}")
    };
    let (object, state) = match edge.object(&key).await {
        Ok(found) => found,
        Err(reason) => return problem(StatusCode::BAD_GATEWAY, reason),
    };

    let body = match (&carried, object.status.is_success() && is_playlist(&key)) {
        (Some(keycard), true) => match whole_text(&object.body).await {
            Some(text) if path.ends_with(".mpd") => {
                Body::text(carry::into_manifest(&text, keycard))
            }
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
        (Some(_), _) if is_playlist(&key) => Some(HeaderValue::from_static("private, max-age=0")),
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

/// HTTP/1.1 or HTTP/2 (by ALPN, or by the prior-knowledge preface) on an admitted connection.
async fn serve_http<S>(edge: &Arc<Edge>, connection: S, client: IpAddr, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_edge = edge.clone();
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let edge = service_edge.clone();
        // The edge answers GET and HEAD, so a request's body is never read.
        let request = request.map(|_| ());
        async move { Ok::<_, std::convert::Infallible>(handle(edge, client, request).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(porter::HEAD_TIMEOUT)
        .max_buf_size(porter::MAX_HEAD.max(8192));
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
    if let Some(revoked) = &edge.revoked {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_layout_are_refused() {
        assert!(is_safe_path("/live/demo/master.m3u8"));
        assert!(!is_safe_path("/live/../etc/passwd"));
        assert!(!is_safe_path("/live/%2e%2e/etc/passwd"));
        assert!(!is_safe_path("/live/%2E%2e%2fetc"));
        assert!(!is_safe_path("/live/.%2E/x"));
        assert!(!is_safe_path("/live/a\\..\\b"));
        assert!(!is_safe_path("live/demo"));
        assert!(is_safe_path("/live/demo/v720/1795219200.3.m4s"));
    }

    #[test]
    fn continuous_streams_are_told_apart_from_segments() {
        assert!(is_continuous_stream("/live/demo/stream.ts"));
        assert!(is_continuous_stream("/live/demo/stream.mp4"));
        assert!(!is_continuous_stream("/live/demo/v720/stream.m4s"));
        assert!(!is_continuous_stream("/live/demo/master.m3u8"));
        assert!(!is_continuous_stream("/vod/demo/stream.ts"));
    }
}
