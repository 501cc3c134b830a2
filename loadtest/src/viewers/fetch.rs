//! How a viewer fetches: one HTTP client per viewer, redirects followed (a viewer may start at
//! control), every request given up after a while, requests and bytes counted; and references
//! in playlists resolved against the URL they came from.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::LOCATION;
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ViewerError;
use super::tls::Trust;

/// How long one request may take before the viewer counts it as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A viewer's connection and its tally.
pub struct Fetcher {
    client: HttpClient,
    pub requests: u64,
    pub bytes: u64,
}

impl Fetcher {
    /// A viewer's client: `http://`, and `https://` when it trusts some certificates.
    pub fn new(trust: Option<Trust>) -> Fetcher {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        let connector = match trust {
            Some(trust) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*trust).clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector),
            None => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(refusing_tls())
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector),
        };
        Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
            requests: 0,
            bytes: 0,
        }
    }

    /// GETs `url`, following redirects; gives the final URL and the body.
    pub async fn get(&mut self, url: &str) -> Result<(String, Bytes), ViewerError> {
        let mut url = url.to_owned();
        for _ in 0..5 {
            let request = Request::get(&url)
                .header("user-agent", "estuary-loadtest-viewer")
                .body(Empty::new())
                .map_err(|e| ViewerError::request(&url, e))?;
            self.requests += 1;
            let exchange = async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| ViewerError::request(&url, e))?;
                let status = response.status();
                let location = response.headers().get(LOCATION).cloned();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ViewerError::request(&url, e))?
                    .to_bytes();
                Ok::<_, ViewerError>((status, location, body))
            };
            let (status, location, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| ViewerError::Silent {
                url: url.clone(),
                waited: REQUEST_TIMEOUT,
            })??;
            self.bytes += body.len() as u64;
            if status.is_redirection()
                && let Some(location) = location.and_then(|l| l.to_str().ok().map(str::to_owned))
            {
                url = resolve(&url, &location);
                continue;
            }
            if !status.is_success() {
                return Err(ViewerError::Status {
                    url: strip_query(&url).to_owned(),
                    status: status.to_string(),
                });
            }
            return Ok((url, body));
        }
        Err(ViewerError::Redirects { url })
    }

    /// GETs `url` as text, following redirects; gives the final URL and the text.
    pub async fn text(&mut self, url: &str) -> Result<(String, String), ViewerError> {
        let (url, body) = self.get(url).await?;
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ViewerError::NotText { url: url.clone() })?;
        Ok((url, text))
    }
}

/// A TLS configuration that trusts no certificate: without a bundle, `https://` fails at the
/// handshake with the server's certificate named as unknown.
fn refusing_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring offers the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth()
}

/// `url` without its query (and the keycard in it), as reports show it.
pub fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// `reference` (absolute, rooted or relative, with `..`) against the absolute URL `base`.
pub fn resolve(base: &str, reference: &str) -> String {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return reference.to_owned();
    }
    let Ok(uri) = base.parse::<Uri>() else {
        return reference.to_owned();
    };
    let origin = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str())
    );
    let (reference_path, query) = match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    };
    let mut segments: Vec<&str> = if reference_path.starts_with('/') {
        Vec::new()
    } else {
        let path = uri.path();
        let folder = &path[..path.rfind('/').unwrap_or(0)];
        folder.split('/').filter(|s| !s.is_empty()).collect()
    };
    for segment in reference_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut url = format!("{origin}/{}", segments.join("/"));
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_against_their_playlist() {
        let base = "http://127.0.0.1:8090/live/demo/master.m3u8?keycard=k";
        assert_eq!(
            resolve(base, "v720/media.m3u8?keycard=k"),
            "http://127.0.0.1:8090/live/demo/v720/media.m3u8?keycard=k"
        );
        assert_eq!(
            resolve("http://h/live/demo/v720/media.m3u8", "../a128/media.m3u8"),
            "http://h/live/demo/a128/media.m3u8"
        );
        assert_eq!(resolve(base, "/x/y.m4s"), "http://127.0.0.1:8090/x/y.m4s");
        assert_eq!(resolve(base, "http://other/z"), "http://other/z");
    }
}
