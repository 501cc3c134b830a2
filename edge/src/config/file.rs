//! The edge's configuration as an operator writes it (`deploy/edge.toml`): plain values and
//! the paths of the files it names, every key with a default. The command line sets the same
//! fields, over the file. [`EdgeFile::resolve`](super::resolve) reads the files it names and
//! gives the [`EdgeConfig`](super::EdgeConfig) the edge runs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_proto::config::{self, ByteSize, ConfigError};
use estuary_proto::duration::text as duration;
use estuary_proto::net::Cidr;
use serde::Deserialize;

use crate::fanout::{EngineChoice, SlowPolicy};

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeFile {
    /// Where viewers connect.
    pub listen: SocketAddr,
    /// The packager or parent edges (`http://host:port`), tried in turn.
    pub upstreams: Vec<String>,
    /// Memory for the cache: bodies, keys and bookkeeping.
    pub cache_size: ByteSize,
    /// How long viewers share one fetch of a playlist the packager marks `max-age=0`.
    #[serde(with = "duration")]
    pub playlist_ttl: Duration,
    /// How old a playlist may be and still be served when every upstream fails.
    #[serde(with = "duration")]
    pub stale_limit: Duration,
    /// A combined-format access log (`-`: standard output).
    pub access_log: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` (and PROXY header) names the client.
    pub trusted_proxies: Vec<Cidr>,
    /// Trusted proxies may start connections with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
    /// The token `POST /admin/reload` and `/admin/drain` need (at least 16 characters); none:
    /// they are not served.
    pub admin_token: Option<String>,
    /// How long a draining edge (SIGTERM, `POST /admin/drain`) serves on before it stops.
    #[serde(with = "duration")]
    pub drain_grace: Duration,
    /// A Unix socket where the edge offers its listening sockets to a new edge started with
    /// `--takeover` on the same path (an upgrade that drops no connection); none: not offered.
    pub takeover_socket: Option<PathBuf>,
    pub bouncers: BouncersFile,
    pub tls: TlsFile,
    pub control: ControlFile,
    pub streams: StreamsFile,
    pub limits: LimitsFile,
}

impl Default for EdgeFile {
    fn default() -> Self {
        EdgeFile {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            upstreams: Vec::new(),
            cache_size: ByteSize(256 << 20),
            playlist_ttl: Duration::from_millis(100),
            stale_limit: Duration::from_secs(60),
            access_log: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            admin_token: None,
            drain_grace: Duration::from_secs(30),
            takeover_socket: None,
            bouncers: BouncersFile::default(),
            tls: TlsFile::default(),
            control: ControlFile::default(),
            streams: StreamsFile::default(),
            limits: LimitsFile::default(),
        }
    }
}

impl EdgeFile {
    /// Reads `path`; errors name the file, the line and what was expected.
    pub fn load(path: &Path) -> Result<EdgeFile, ConfigError> {
        config::load(path)
    }
}

/// Who may fetch `/live/…` and `/vod/…`: each bouncer is on when its keys are given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BouncersFile {
    /// How the bouncers combine, e.g. `all(token, country)` or `any(token, network)` (names:
    /// token, country, network, window, password). Default: all of those configured.
    pub rule: Option<String>,
    /// Keycard keys (lines of `HEX` or `ID HEX`): turns the token bouncer on.
    pub key_file: Option<PathBuf>,
    /// Revoked keycard ids, one a line, read again when the file changes.
    pub revoked: Option<PathBuf>,
    /// A MaxMind DB for the country bouncer (with `allow_countries` or `deny_countries`).
    pub geoip: Option<PathBuf>,
    pub allow_countries: Vec<String>,
    pub deny_countries: Vec<String>,
    /// What clients the GeoIP database does not place get.
    pub unknown_country: Admission,
    /// Client ranges let in: turns the network bouncer on (with `deny_networks`).
    pub allow_networks: Vec<Cidr>,
    /// Client ranges turned away, checked first.
    pub deny_networks: Vec<Cidr>,
    /// An htpasswd file (bcrypt or SHA-256 crypt): turns the password bouncer on.
    pub htpasswd: Option<PathBuf>,
    /// Viewers let in only from this moment (Unix seconds or `2026-11-21T20:00:00Z`).
    pub open_at: Option<String>,
    /// Viewers turned away from this moment on.
    pub close_at: Option<String>,
}

/// What a country bouncer does with a client its database does not place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    #[default]
    Allow,
    Deny,
}

impl std::str::FromStr for Admission {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "allow" => Ok(Admission::Allow),
            "deny" => Ok(Admission::Deny),
            _ => Err(format!("{text:?} is neither allow nor deny")),
        }
    }
}

/// HTTPS, and HTTP/3 beside it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFile {
    /// A certificate chain (PEM, leaf first), with `key`.
    pub certificate: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// A certificate made up at start for localhost and the listen address.
    pub self_signed: bool,
    /// With HTTPS, serve HTTP/3 on the same port number over UDP.
    pub http3: bool,
}

impl Default for TlsFile {
    fn default() -> Self {
        TlsFile {
            certificate: None,
            key: None,
            self_signed: false,
            http3: true,
        }
    }
}

/// Reports to control.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlFile {
    /// Control's base URL: a report goes to `URL/api/v1/reports` every second. None: no
    /// reports.
    pub url: Option<String>,
    /// This edge's name in its reports. Default: the host name and the listen port.
    pub id: Option<String>,
    /// The site this edge is in, as control's configuration names it.
    pub site: String,
    /// Where viewers reach this edge. Default: `http://LISTEN` (`https://` with TLS).
    pub public_url: Option<String>,
    /// The report key file (control's `[reports] key_file` format): its first key signs.
    pub report_key: Option<PathBuf>,
}

impl Default for ControlFile {
    fn default() -> Self {
        ControlFile {
            url: None,
            id: None,
            site: "default".into(),
            public_url: None,
            report_key: None,
        }
    }
}

/// Continuous streams and their viewers: the edge-wide policy, the engine, and mounts with
/// policies of their own.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsFile {
    /// A viewer that falls behind: `skip` (to the newest keyframe) or `drop`.
    pub slow_clients: SlowPolicy,
    /// Behind by this much media time is slow.
    #[serde(with = "duration")]
    pub max_lag: Duration,
    /// A viewer whose reader takes nothing for this long is disconnected.
    #[serde(with = "duration")]
    pub client_timeout: Duration,
    /// Behind by this many bytes is slow.
    pub max_lag_bytes: ByteSize,
    /// Recent stream a new viewer gets at once, from a keyframe (0: the newest keyframe).
    pub burst: ByteSize,
    /// Viewers per stream beyond which new ones are turned away. Default: no limit.
    pub stream_viewers: Option<usize>,
    /// Where viewers beyond `stream_viewers` are redirected (a base URL); else 503.
    pub overflow: Option<String>,
    /// What writes plain HTTP/1 viewers' sockets: `io_uring`, `epoll`, or `auto`.
    pub fanout: EngineChoice,
    /// Threads of the io_uring engine. Default: one per CPU the edge may run on.
    pub fanout_threads: Option<u16>,
    /// Streams under a path prefix with settings of their own: `[[streams.mounts]]`.
    pub mounts: Vec<MountFile>,
}

impl Default for StreamsFile {
    fn default() -> Self {
        StreamsFile {
            slow_clients: SlowPolicy::Skip,
            max_lag: Duration::from_secs(5),
            client_timeout: Duration::from_secs(30),
            max_lag_bytes: ByteSize(8 << 20),
            burst: ByteSize(0),
            stream_viewers: None,
            overflow: None,
            fanout: EngineChoice::Auto,
            fanout_threads: None,
            mounts: Vec::new(),
        }
    }
}

/// A mount: streams whose path starts with `prefix`, and the settings they change.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountFile {
    pub prefix: String,
    pub slow_clients: Option<SlowPolicy>,
    #[serde(default, with = "optional_duration")]
    pub max_lag: Option<Duration>,
    #[serde(default, with = "optional_duration")]
    pub client_timeout: Option<Duration>,
    pub max_lag_bytes: Option<ByteSize>,
    pub burst: Option<ByteSize>,
    pub stream_viewers: Option<usize>,
    pub overflow: Option<String>,
}

impl MountFile {
    /// `PREFIX:KEY=VALUE,...`, as `--mount` takes it, e.g.
    /// `/live/radio/:slow-clients=drop,max-lag=10s,stream-viewers=5000`.
    pub fn parse(text: &str) -> Result<MountFile, String> {
        let (prefix, settings) = text
            .split_once(':')
            .filter(|(prefix, _)| prefix.starts_with('/'))
            .ok_or_else(|| {
                format!("{text:?}: expected PREFIX:KEY=VALUE,..., with PREFIX a path such as /live/radio/")
            })?;
        let mut mount = MountFile {
            prefix: prefix.to_owned(),
            slow_clients: None,
            max_lag: None,
            client_timeout: None,
            max_lag_bytes: None,
            burst: None,
            stream_viewers: None,
            overflow: None,
        };
        for setting in settings.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| format!("{text:?}: {setting:?} is not KEY=VALUE"))?;
            let bad = |reason: String| format!("{prefix} {key}: {reason}");
            match key {
                "slow-clients" => mount.slow_clients = Some(value.parse().map_err(bad)?),
                "max-lag" => {
                    mount.max_lag = Some(
                        estuary_proto::duration::parse_duration(value)
                            .map_err(|e| bad(e.to_string()))?,
                    )
                }
                "client-timeout" => {
                    mount.client_timeout = Some(
                        estuary_proto::duration::parse_duration(value)
                            .map_err(|e| bad(e.to_string()))?,
                    )
                }
                "max-lag-bytes" => {
                    mount.max_lag_bytes =
                        Some(ByteSize::parse(value).map_err(|e| bad(e.to_string()))?)
                }
                "burst" => {
                    mount.burst = Some(ByteSize::parse(value).map_err(|e| bad(e.to_string()))?)
                }
                "stream-viewers" => {
                    mount.stream_viewers = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("{value:?} is not a number")))?,
                    )
                }
                "overflow" => mount.overflow = Some(value.to_owned()),
                _ => {
                    return Err(format!(
                        "{text:?}: unknown setting {key:?} (slow-clients, max-lag, max-lag-bytes, client-timeout, burst, stream-viewers, overflow)"
                    ));
                }
            }
        }
        Ok(mount)
    }
}

/// Limits on requests and connections.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    /// The largest request head; larger is 431.
    pub head_size: ByteSize,
    /// The most request headers; more is 431.
    pub headers: usize,
    /// How long a request head (or an HTTP/2 frame begun) may take.
    #[serde(with = "duration")]
    pub head_timeout: Duration,
    /// How long a connection may stay with no request.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// How long a write to a viewer may make no progress.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
}

impl Default for LimitsFile {
    fn default() -> Self {
        let limits = estuary_http::Limits::default();
        LimitsFile {
            head_size: ByteSize(limits.head_bytes as u64),
            headers: limits.headers,
            head_timeout: limits.head_timeout,
            idle_timeout: limits.idle_timeout,
            write_timeout: limits.write_timeout,
        }
    }
}

/// Serde for an optional duration written as text.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| {
                estuary_proto::duration::parse_duration(&text).map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}
