//! What an edge is told: where to listen, its upstreams, its cache, bouncers and policies. An
//! operator writes an [`EdgeFile`] (`deploy/edge.toml`, or flags over it); it resolves into the
//! [`EdgeConfig`] the edge runs with.

mod file;
mod resolve;

pub use file::{
    Admission, BouncersFile, ControlFile, EdgeFile, LimitsFile, MountFile, StreamsFile, TlsFile,
};
pub use resolve::ResolveError;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::bouncer::Bouncer;
use crate::net::Cidr;

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
    pub control: Option<(String, Identity)>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) instead of plain HTTP.
    pub tls: Option<crate::listen::tls::TlsSource>,
    /// With HTTPS, also serve HTTP/3 on the same port number over UDP, and say so in Alt-Svc.
    pub http3: bool,
    /// Continuous streams: slow viewers, bursts, limits.
    pub fanout: crate::fanout::FanoutConfig,
    /// What a client's requests and connections may take: head size, headers, timeouts.
    pub limits: estuary_http::Limits,
    /// The token `/admin/reload` and `/admin/drain` need; none: they are not served.
    pub admin_token: Option<String>,
    /// How long a draining edge serves on before it stops, however many it still serves.
    pub drain_grace: Duration,
    /// Where the edge offers its listening sockets to the edge that upgrades it.
    pub takeover_socket: Option<PathBuf>,
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
            limits: estuary_http::Limits::default(),
            admin_token: None,
            drain_grace: Duration::from_secs(30),
            takeover_socket: None,
        }
    }
}

/// Who this edge is, as its reports to control say, and the key that proves it.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub site: String,
    pub url: String,
    /// The report key that signs every report (the first of the `--report-key` file); none:
    /// reports go unsigned, and a control that checks signatures refuses them.
    pub key: Option<estuary_proto::keycard::KeycardKey>,
}
