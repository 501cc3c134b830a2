//! The edge as a node: what every connection shares (the fetch driver and its cache, the
//! fan-out engine, the gate, metrics, the access log, TLS), built from its configuration. A
//! reload swaps what can change while viewers are served (keys, revocation list, bouncers,
//! GeoIP databases, stream policies, the TLS certificate, the admin token) and names what
//! needs a restart; a drain makes the edge say so in its reports, so that control sends it no
//! one new, while it serves who it has.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use hyper::header::HeaderValue;

use crate::admit::Gate;
use crate::cache::{self, Cache};
use crate::config::EdgeConfig;
use crate::fanout::Fanout;
use crate::fetch::Fetcher;
use crate::metrics::{AccessLog, Metrics};
use crate::upstream::{UpstreamError, Upstreams};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("cannot open the access log {path}: {reason}")]
    AccessLog { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(#[from] crate::listen::tls::TlsError),
    #[error("revoked keycards: {0}")]
    Revoked(String),
    #[error("fan-out engine: {0}")]
    Fanout(String),
}

pub struct Edge {
    /// The configuration as started; what a reload cannot change is read from here.
    config: EdgeConfig,
    fetcher: Fetcher,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    /// The revocation list and the bouncers, swapped whole by a reload.
    gate: RwLock<Arc<Gate>>,
    /// What `/admin/…` needs (`Authorization: Bearer`); none: the endpoints are not there.
    admin_token: RwLock<Option<crate::admin_token::AdminToken>>,
    tls: Option<crate::listen::tls::Tls>,
    /// The Alt-Svc header naming the HTTP/3 endpoint, once it is bound.
    alt_svc: OnceLock<HeaderValue>,
    /// Draining: reports say so, control sends no one new, and the edge stops when empty.
    draining: AtomicBool,
    /// Wakes the reporter when the mood changes, so control hears of a drain at once rather
    /// than at the next tick.
    mood_changed: tokio::sync::Notify,
    /// Why the last reload changed nothing, until one succeeds.
    reload_failure: Mutex<Option<String>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    /// Reads the configuration again (the file, with the flags over it), for a reload asked
    /// over HTTP; set by whoever runs the edge.
    source: OnceLock<ConfigSource>,
    /// Where the admin endpoint sends what it is asked (a drain), to whoever runs the edge.
    requests: OnceLock<estuary_http::lifecycle::Requester>,
}

/// Reads the edge's configuration again, as it was first read.
pub type ConfigSource = Arc<dyn Fn() -> Result<EdgeConfig, String> + Send + Sync>;

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// What was read again and is in force now.
    pub applied: Vec<&'static str>,
    /// What differs in the file but needs a restart (or an upgrade) to change.
    pub needs_restart: Vec<&'static str>,
}

impl Edge {
    pub fn new(config: EdgeConfig) -> Result<Arc<Edge>, EdgeError> {
        // Sealed bodies hold a file each, beside the sockets.
        let files = estuary_http::sealed::raise_file_limit();
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
            .map(crate::listen::tls::Tls::new)
            .transpose()?;
        let upstreams = Arc::new(Upstreams::new(&config.upstreams)?);
        let metrics = Arc::<Metrics>::default();
        Ok(Arc::new(Edge {
            fetcher: Fetcher::new(
                Arc::new(Cache::new(config.cache_bytes)),
                upstreams.clone(),
                metrics.clone(),
                config.playlist_floor,
                config.stale_limit,
            ),
            fanout: Fanout::new(config.fanout.clone(), upstreams).map_err(EdgeError::Fanout)?,
            metrics,
            access_log,
            gate: RwLock::new(Arc::new(Gate::new(config.bouncer.clone(), revoked))),
            admin_token: RwLock::new(
                config
                    .admin_token
                    .as_deref()
                    .map(crate::admin_token::AdminToken::new),
            ),
            tls,
            alt_svc: OnceLock::new(),
            draining: AtomicBool::new(false),
            mood_changed: tokio::sync::Notify::new(),
            reload_failure: Mutex::default(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            source: OnceLock::new(),
            requests: OnceLock::new(),
            config,
        }))
    }

    /// Where a reload reads the configuration again, and where the admin endpoint's requests
    /// go; set once, by whoever runs the edge.
    pub fn attach(&self, source: ConfigSource, requests: estuary_http::lifecycle::Requester) {
        let _ = self.source.set(source);
        let _ = self.requests.set(requests);
    }

    /// Reads the configuration again and puts it in force (see [`Edge::reload`]); what cannot
    /// be read or used changes nothing, and says why.
    pub fn reload_now(&self) -> Result<Reloaded, String> {
        let Some(source) = self.source.get() else {
            return Err("this edge was started without a configuration to read again".into());
        };
        let outcome = source().and_then(|fresh| self.reload(&fresh).map_err(|e| e.to_string()));
        match &outcome {
            Ok(reloaded) => tracing::info!(
                applied = ?reloaded.applied,
                needs_restart = ?reloaded.needs_restart,
                "configuration reloaded"
            ),
            Err(reason) => self.reload_failed(reason.clone()),
        }
        outcome
    }

    /// Asks whoever runs the edge to do `request` (drain, stop).
    pub async fn request(&self, request: estuary_http::lifecycle::Request) {
        match self.requests.get() {
            Some(requests) => {
                let _ = requests.send(request).await;
            }
            None => {
                if request == estuary_http::lifecycle::Request::Drain {
                    self.drain();
                }
            }
        }
    }

    /// Puts `fresh` (the configuration read again) in force as far as it can be while the
    /// edge serves, and names what needs a restart. The revocation list is read again at
    /// once either way.
    pub fn reload(&self, fresh: &EdgeConfig) -> Result<Reloaded, EdgeError> {
        let old = &self.config;
        let mut reloaded = Reloaded::default();
        if let (Some(tls), Some(source)) = (&self.tls, &fresh.tls) {
            tls.reload(source)?;
            reloaded.applied.push("tls.certificate");
        }
        let revoked = match (&fresh.revoked, self.gate().revoked()) {
            (Some(path), Some(current)) if Some(path) == old.revoked.as_ref() => {
                current.reload().map_err(EdgeError::Revoked)?;
                Some(current.clone())
            }
            (Some(path), _) => {
                let opened = crate::revoked::Revoked::open(path).map_err(EdgeError::Revoked)?;
                tokio::spawn(opened.clone().watch());
                Some(opened)
            }
            (None, _) => None,
        };
        *self.gate.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Gate::new(fresh.bouncer.clone(), revoked));
        reloaded.applied.push("bouncers");
        self.fanout
            .set_policies(fresh.fanout.policy.clone(), fresh.fanout.mounts.clone());
        reloaded.applied.push("streams");
        *self.admin_token.write().unwrap_or_else(|e| e.into_inner()) = fresh
            .admin_token
            .as_deref()
            .map(crate::admin_token::AdminToken::new);
        reloaded.applied.push("admin_token");
        let mut differs = |key, changed: bool| {
            if changed {
                reloaded.needs_restart.push(key);
            }
        };
        differs("listen", fresh.listen != old.listen);
        differs(
            "takeover_socket",
            fresh.takeover_socket != old.takeover_socket,
        );
        differs("upstreams", fresh.upstreams != old.upstreams);
        differs("cache_size", fresh.cache_bytes != old.cache_bytes);
        differs("playlist_ttl", fresh.playlist_floor != old.playlist_floor);
        differs("stale_limit", fresh.stale_limit != old.stale_limit);
        differs("access_log", fresh.access_log != old.access_log);
        differs(
            "trusted_proxies",
            fresh.trusted_proxies != old.trusted_proxies,
        );
        differs("proxy_protocol", fresh.proxy_protocol != old.proxy_protocol);
        differs("tls", fresh.tls.is_some() != old.tls.is_some());
        differs("tls.http3", fresh.http3 != old.http3);
        differs("limits", fresh.limits != old.limits);
        differs(
            "streams.fanout",
            (fresh.fanout.engine, fresh.fanout.engine_threads)
                != (old.fanout.engine, old.fanout.engine_threads),
        );
        differs(
            "control",
            fresh
                .control
                .as_ref()
                .map(|(url, who)| (url, &who.id, &who.site, &who.url))
                != old
                    .control
                    .as_ref()
                    .map(|(url, who)| (url, &who.id, &who.site, &who.url)),
        );
        self.reloads.fetch_add(1, Ordering::Relaxed);
        *self
            .reload_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        Ok(reloaded)
    }

    /// A reload that could not be put in force: nothing changed, and `/healthz` and the
    /// metrics say why until one succeeds.
    pub fn reload_failed(&self, reason: String) {
        tracing::warn!(%reason, "reload refused: the edge runs on as it was");
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
        *self
            .reload_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// Reloads done and refused since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed),
        )
    }

    /// From now on the edge is draining.
    pub fn drain(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            tracing::info!("draining: control sends no one new; viewers here are served on");
            self.mood_changed.notify_one();
        }
    }

    /// Resolves when the edge's mood changed in a way control must hear of now (a drain).
    pub async fn mood_changed(&self) {
        self.mood_changed.notified().await;
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Connections and viewers still being served... by the fan-out engine.
    pub fn stream_viewers(&self) -> usize {
        self.fanout.viewers()
    }

    /// The admin token, if `/admin/…` is served at all.
    pub(crate) fn admin_token(&self) -> Option<crate::admin_token::AdminToken> {
        self.admin_token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn metrics_handle(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    pub(crate) fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    pub(crate) fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    /// The gate in force now.
    pub(crate) fn gate(&self) -> Arc<Gate> {
        self.gate.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    pub fn tls(&self) -> Option<&crate::listen::tls::Tls> {
        self.tls.as_ref()
    }

    /// From now on, every response carries this Alt-Svc value.
    pub(crate) fn advertise(&self, alt_svc: HeaderValue) {
        let _ = self.alt_svc.set(alt_svc);
    }

    /// The Alt-Svc value every response carries, once HTTP/3 is up.
    pub(crate) fn alt_svc(&self) -> Option<&HeaderValue> {
        self.alt_svc.get()
    }

    /// The TLS certificate's SHA-256 fingerprint, when serving HTTPS.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.tls.as_ref().map(crate::listen::tls::Tls::fingerprint)
    }

    pub fn cache_counts(&self) -> cache::CacheCounts {
        self.fetcher.cache_counts()
    }

    /// `waking` before the first upstream answer, `happy`, or `sad` with the reason while the
    /// upstreams fail; with the reason a reload was refused, if the last one was.
    pub fn mood(&self) -> (estuary_proto::Mood, Option<String>) {
        let (mood, reason) = self.fetcher.mood();
        // Draining says more than how the upstreams are: it is what control acts on.
        let mood = if self.is_draining() {
            estuary_proto::Mood::Draining
        } else {
            mood
        };
        let refused = self
            .reload_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|why| format!("the last reload changed nothing: {why}"));
        match (reason, refused) {
            (Some(reason), Some(refused)) => (mood, Some(format!("{reason}; {refused}"))),
            (reason, refused) => (mood, reason.or(refused)),
        }
    }
}
