//! Which live channels exist. Control asks its origins (the packagers) for their channels once
//! a second, from the `channels` list of each one's `/healthz`, so that a viewer asking for a
//! channel no origin has gets a `404` from control instead of a redirect to an edge that would
//! only pass the `404` on. When no origin has answered for a while, control does not know, and
//! redirects as if every channel existed: an origin outage must not turn away viewers of
//! channels that still play from the edges' caches.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// How often the origins are asked.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long the last answer is trusted when the origins stop answering.
pub const TRUSTED_FOR: Duration = Duration::from_secs(5);
/// How long one origin may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Origins {
    /// `http://host:port`, no trailing slash.
    bases: Vec<String>,
    client: Client<HttpConnector, Empty<Bytes>>,
    known: RwLock<Known>,
}

#[derive(Default)]
struct Known {
    channels: HashSet<String>,
    /// When an origin last answered.
    heard: Option<Instant>,
}

/// What control knows of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// An origin has it.
    Live,
    /// The origins answered, and none has it.
    Absent,
    /// No origin answered lately (or none is configured).
    Unknown,
}

/// The part of a packager's `/healthz` that names its channels.
#[derive(Deserialize)]
struct Health {
    channels: Vec<ChannelHealth>,
}

#[derive(Deserialize)]
struct ChannelHealth {
    channel: String,
}

impl Origins {
    /// `urls` are checked here: each must be an `http://` URL with a host.
    pub fn new(urls: &[String]) -> Result<Origins, BadOrigin> {
        let bases = urls
            .iter()
            .map(|url| base_of(url).ok_or_else(|| BadOrigin { url: url.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(ANSWER_TIMEOUT));
        Ok(Origins {
            bases,
            client: Client::builder(TokioExecutor::new()).build(connector),
            known: RwLock::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    pub fn presence(&self, channel: &str, now: Instant) -> Presence {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        match known.heard {
            Some(heard) if now.duration_since(heard) <= TRUSTED_FOR => {
                if known.channels.contains(channel) {
                    Presence::Live
                } else {
                    Presence::Absent
                }
            }
            _ => Presence::Unknown,
        }
    }

    /// The channels the origins had when they last answered, sorted.
    pub fn channels(&self) -> Vec<String> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let mut channels: Vec<String> = known.channels.iter().cloned().collect();
        channels.sort();
        channels
    }

    /// Asks the origins for their channels every [`POLL_EVERY`], for ever.
    pub async fn watch(&self) {
        if self.is_empty() {
            return;
        }
        let mut ticks = tokio::time::interval(POLL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match self.poll().await {
                Ok(channels) => {
                    if failing {
                        tracing::info!("the origins answer again");
                    }
                    failing = false;
                    *self.known.write().unwrap_or_else(|e| e.into_inner()) = Known {
                        channels,
                        heard: Some(Instant::now()),
                    };
                }
                Err(reason) => {
                    if !failing {
                        tracing::warn!(%reason, "no origin tells which channels exist; every channel is redirected until one does");
                    }
                    failing = true;
                }
            }
        }
    }

    /// The union of the channels of every origin that answers; an error when none does.
    async fn poll(&self) -> Result<HashSet<String>, Silent> {
        let mut channels = HashSet::new();
        let mut failures = Vec::new();
        let mut answered = false;
        for base in &self.bases {
            match tokio::time::timeout(ANSWER_TIMEOUT, self.ask(base)).await {
                Ok(Ok(health)) => {
                    answered = true;
                    channels.extend(health.channels.into_iter().map(|c| c.channel));
                }
                Ok(Err(error)) => failures.push(error),
                Err(_) => failures.push(OriginError::Slow {
                    base: base.clone(),
                    waited: ANSWER_TIMEOUT,
                }),
            }
        }
        if answered {
            Ok(channels)
        } else {
            Err(Silent(failures))
        }
    }

    async fn ask(&self, base: &str) -> Result<Health, OriginError> {
        let failed = |reason: String| OriginError::Unreachable {
            base: base.to_owned(),
            reason,
        };
        let request = Request::get(format!("{base}/healthz"))
            .body(Empty::new())
            .map_err(|error| failed(error.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| failed(error.to_string()))?;
        if !response.status().is_success() {
            return Err(OriginError::Status {
                base: base.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| failed(error.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|error| OriginError::NotHealth {
            base: base.to_owned(),
            reason: error.to_string(),
        })
    }
}

/// An origin's URL that is not an `http://` URL with a host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("origin {url:?} is not an http:// URL with a host")]
pub struct BadOrigin {
    pub url: String,
}

/// Why an origin did not say which channels it has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("{base}: {reason}")]
    Unreachable { base: String, reason: String },
    #[error("{base}: no answer in {waited:?}")]
    Slow { base: String, waited: Duration },
    #[error("{base}: /healthz answered {status}")]
    Status { base: String, status: u16 },
    #[error("{base}: /healthz does not list channels: {reason}")]
    NotHealth { base: String, reason: String },
}

/// No origin answered: why each did not.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Silent(pub Vec<OriginError>);

/// The base of an origin's URL (no trailing slash), if it is an `http://` URL with a host.
pub fn base_of(url: &str) -> Option<String> {
    let base = url.trim_end_matches('/');
    match base.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {
            Some(base.to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_urls_are_checked() {
        assert!(Origins::new(&["http://127.0.0.1:8080/".into()]).is_ok());
        assert!(Origins::new(&["https://packager".into()]).is_err());
        assert!(Origins::new(&["packager:8080".into()]).is_err());
    }

    #[test]
    fn a_channel_is_known_only_while_the_origins_answer() {
        let origins = Origins::new(&["http://127.0.0.1:9".into()]).unwrap();
        let now = Instant::now();
        assert_eq!(origins.presence("demo", now), Presence::Unknown);
        *origins.known.write().unwrap() = Known {
            channels: HashSet::from(["demo".to_owned()]),
            heard: Some(now),
        };
        assert_eq!(origins.presence("demo", now), Presence::Live);
        assert_eq!(origins.presence("other", now), Presence::Absent);
        let later = now + TRUSTED_FOR + Duration::from_millis(1);
        assert_eq!(origins.presence("other", later), Presence::Unknown);
    }

    #[tokio::test]
    async fn channels_come_from_a_packagers_health() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let body = r#"{"role":"packager","mood":"happy","channels":[{"channel":"demo","mood":"happy"},{"channel":"news","mood":"hungry"}]}"#;
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = [0; 1024];
                let _ = stream.read(&mut head).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let dead = "http://127.0.0.1:9".to_owned();
        let origins = Origins::new(&[dead, format!("http://{address}")]).unwrap();
        let channels = origins.poll().await.unwrap();
        assert_eq!(channels.len(), 2);
        assert!(channels.contains("news"));

        let nobody = Origins::new(&["http://127.0.0.1:9".into()]).unwrap();
        let error = nobody.poll().await.unwrap_err().to_string();
        assert!(error.contains("127.0.0.1:9"), "{error}");
    }
}
