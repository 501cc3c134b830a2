//! The edge as a node: what every connection shares (the fetch driver and its cache, the
//! fan-out engine, the gate, metrics, the access log, TLS), built from its configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

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
    Tls(String),
    #[error("revoked keycards: {0}")]
    Revoked(String),
    #[error("fan-out engine: {0}")]
    Fanout(String),
}

pub struct Edge {
    config: EdgeConfig,
    fetcher: Fetcher,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    /// The revocation list and the bouncers.
    gate: Gate,
    tls: Option<crate::listen::tls::Tls>,
    /// The Alt-Svc header naming the HTTP/3 endpoint, once it is bound.
    alt_svc: OnceLock<HeaderValue>,
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
            .transpose()
            .map_err(EdgeError::Tls)?;
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
            gate: Gate::new(config.bouncer.clone(), revoked),
            tls,
            alt_svc: OnceLock::new(),
            config,
        }))
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

    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
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
    /// upstreams fail.
    pub fn mood(&self) -> (estuary_proto::Mood, Option<String>) {
        self.fetcher.mood()
    }
}
