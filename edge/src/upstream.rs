//! The upstreams: the packager, or a parent edge, asked over HTTP/1.1. With several, a fetch
//! goes to the one that answered last and fails over to the next when it cannot connect or
//! answers 5xx.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long an upstream may take to send its response head: a blocked LL-HLS playlist request
/// waits up to three target durations at the packager.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upstream body may send nothing before it is given up: a segment sent while it
/// is written gets a part every third of a second.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest body taken from an upstream (a 2 s segment at 40 Mbit/s is 10 MB).
pub const MAX_BODY: usize = 64 << 20;

pub struct Upstreams {
    /// `http://host:port`, with no trailing slash: paths are appended as they are.
    bases: Vec<String>,
    preferred: AtomicUsize,
    client: Client<HttpConnector, Empty<Bytes>>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0} is not an http:// URL with a host")]
    BadUrl(String),
    /// Every upstream failed: refused, unreachable, or answered 5xx (some may have timed out).
    #[error("no upstream answered: {0}")]
    Unreachable(String),
    /// Every upstream was reached, or tried, and none answered within the head timeout.
    #[error("no upstream answered within {HEAD_TIMEOUT:?}: {0}")]
    TimedOut(String),
}

impl Upstreams {
    pub fn new(urls: &[String]) -> Result<Upstreams, UpstreamError> {
        let bases = urls
            .iter()
            .map(|url| {
                let uri: Uri = url
                    .trim_end_matches('/')
                    .parse()
                    .map_err(|_| UpstreamError::BadUrl(url.clone()))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    return Err(UpstreamError::BadUrl(url.clone()));
                }
                Ok(url.trim_end_matches('/').to_owned())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if bases.is_empty() {
            return Err(UpstreamError::BadUrl("(none)".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Ok(Upstreams {
            bases,
            preferred: AtomicUsize::new(0),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        })
    }

    /// GETs `path_and_query`; returns the response and how long its head took to come. A 5xx
    /// answer counts as a failure and the next upstream is tried, except a 503 to a blocking
    /// playlist request (`_HLS_msn`): that is the packager saying the part did not come in
    /// time, an answer for the viewer, not a sign that the upstream is down.
    pub async fn get(
        &self,
        path_and_query: &str,
    ) -> Result<(Response<Incoming>, Duration), UpstreamError> {
        self.fetch(path_and_query, None).await
    }

    /// GETs the continuous stream at `path_and_query` framed for an edge
    /// (`estuary_proto::chunks`), with the same failover as [`Upstreams::get`].
    pub async fn get_framed(
        &self,
        path_and_query: &str,
    ) -> Result<(Response<Incoming>, Duration), UpstreamError> {
        self.fetch(path_and_query, Some(estuary_proto::chunks::CONTENT_TYPE))
            .await
    }

    async fn fetch(
        &self,
        path_and_query: &str,
        accept: Option<&'static str>,
    ) -> Result<(Response<Incoming>, Duration), UpstreamError> {
        let blocking = path_and_query.contains("_HLS_msn=");
        let answers = |status: StatusCode| {
            !status.is_server_error() || (blocking && status == StatusCode::SERVICE_UNAVAILABLE)
        };
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        let mut all_timed_out = true;
        for offset in 0..self.bases.len() {
            let index = (first + offset) % self.bases.len();
            let base = &self.bases[index];
            let uri = format!("{base}{path_and_query}");
            let mut request = Request::get(&uri);
            if let Some(accept) = accept {
                request = request.header(hyper::header::ACCEPT, accept);
            }
            let request = match request.body(Empty::new()) {
                Ok(request) => request,
                Err(error) => return Err(UpstreamError::BadUrl(error.to_string())),
            };
            let started = Instant::now();
            match tokio::time::timeout(HEAD_TIMEOUT, self.client.request(request)).await {
                Ok(Ok(response)) if answers(response.status()) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((response, started.elapsed()));
                }
                Ok(Ok(response)) => {
                    all_timed_out = false;
                    failures.push(format!("{base}: {}", response.status()));
                }
                Ok(Err(error)) => {
                    all_timed_out = false;
                    failures.push(format!("{base}: {error}"));
                }
                Err(_) => failures.push(format!("{base}: no answer in {HEAD_TIMEOUT:?}")),
            }
        }
        let failures = failures.join("; ");
        Err(if all_timed_out {
            UpstreamError::TimedOut(failures)
        } else {
            UpstreamError::Unreachable(failures)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_appended_to_the_base_as_they_are() {
        let upstreams = Upstreams::new(&["http://127.0.0.1:8080/".into()]).unwrap();
        assert_eq!(upstreams.bases, ["http://127.0.0.1:8080"]);
    }

    #[test]
    fn upstream_urls_are_checked() {
        assert!(Upstreams::new(&["http://127.0.0.1:8080".into()]).is_ok());
        assert!(Upstreams::new(&["https://x".into()]).is_err());
        assert!(Upstreams::new(&["not a url".into()]).is_err());
        assert!(Upstreams::new(&[]).is_err());
    }
}
