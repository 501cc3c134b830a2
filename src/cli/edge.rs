//! `estuary edge`: its flags, laid over its configuration file, and the run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use estuary_edge::config::{Admission, EdgeFile, MountFile};
use estuary_edge::net::Cidr;
use estuary_proto::config::ByteSize;

use std::sync::Arc;

use super::runtime;

/// Every flag is also an `ESTUARY_EDGE_*` environment variable, and every one is a key of the
/// configuration file (`--config`, as deploy/edge.toml documents them); a flag given wins over
/// the file, the file over the defaults.
#[derive(Args, Clone)]
pub(crate) struct EdgeArgs {
    /// A configuration file (TOML, as deploy/edge.toml); flags given override its keys. A
    /// reload (SIGHUP, POST /admin/reload) reads it again, with the same flags over it.
    #[arg(long, env = "ESTUARY_EDGE_CONFIG")]
    config: Option<PathBuf>,
    /// The token POST /admin/reload and /admin/drain need (at least 16 characters); without it
    /// they are not served. Better given by the environment than on the command line.
    #[arg(long, env = "ESTUARY_EDGE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How long a draining edge (SIGTERM, POST /admin/drain) serves on before it stops.
    #[arg(long, env = "ESTUARY_EDGE_DRAIN_GRACE", value_parser = duration)]
    drain_grace: Option<Duration>,
    /// A Unix socket where this edge offers its listening sockets to the edge that upgrades it
    /// (started with --takeover on the same path).
    #[arg(long, env = "ESTUARY_EDGE_TAKEOVER_SOCKET")]
    takeover_socket: Option<PathBuf>,
    /// Take the listening sockets of the running edge that offers them at this path instead of
    /// binding: an upgrade in which no connection is refused. The running edge then stops
    /// accepting, finishes what it serves and exits.
    #[arg(long)]
    takeover: Option<PathBuf>,
    /// Address viewers connect to.
    #[arg(long, env = "ESTUARY_EDGE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Base URL(s) of the packager or parent edges, comma-separated, tried in turn.
    #[arg(long, env = "ESTUARY_EDGE_UPSTREAM", value_delimiter = ',')]
    upstream: Vec<String>,
    /// Memory for cached bodies, e.g. 256MiB or 2GiB.
    #[arg(long, env = "ESTUARY_EDGE_CACHE_SIZE")]
    cache_size: Option<ByteSize>,
    /// Key file (lines of HEX or ID HEX): turns on the token bouncer (keycards) for /live
    /// and /vod.
    #[arg(long, env = "ESTUARY_EDGE_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// File of revoked keycard ids (one a line, # comments), read again when it changes: a
    /// keycard whose id= is listed is refused, and its continuous-stream viewers disconnected.
    #[arg(long, env = "ESTUARY_EDGE_REVOKED")]
    revoked: Option<PathBuf>,
    /// GeoIP database (MaxMind DB, country.iso_code or country_code records): turns on the
    /// country bouncer with --allow-countries and/or --deny-countries.
    #[arg(long, env = "ESTUARY_EDGE_GEOIP")]
    geoip: Option<PathBuf>,
    /// Countries let in (ISO 3166-1 codes, comma-separated); all others are turned away.
    #[arg(long, env = "ESTUARY_EDGE_ALLOW_COUNTRIES", value_delimiter = ',')]
    allow_countries: Vec<String>,
    /// Countries turned away.
    #[arg(long, env = "ESTUARY_EDGE_DENY_COUNTRIES", value_delimiter = ',')]
    deny_countries: Vec<String>,
    /// What clients the GeoIP database does not place get: allow or deny.
    #[arg(long, env = "ESTUARY_EDGE_UNKNOWN_COUNTRY")]
    unknown_country: Option<Admission>,
    /// Client ranges let in (CIDR, comma-separated): turns on the network bouncer.
    #[arg(long, env = "ESTUARY_EDGE_ALLOW_NETWORKS", value_delimiter = ',')]
    allow_networks: Vec<Cidr>,
    /// Client ranges turned away (checked before --allow-networks).
    #[arg(long, env = "ESTUARY_EDGE_DENY_NETWORKS", value_delimiter = ',')]
    deny_networks: Vec<Cidr>,
    /// htpasswd file (bcrypt or SHA-256 crypt hashes): turns on the password bouncer (HTTP
    /// Basic).
    #[arg(long, env = "ESTUARY_EDGE_HTPASSWD")]
    htpasswd: Option<PathBuf>,
    /// Let viewers in only from this moment (Unix seconds or 2026-11-21T20:00:00Z).
    #[arg(long, env = "ESTUARY_EDGE_OPEN_AT")]
    open_at: Option<String>,
    /// Turn viewers away from this moment on.
    #[arg(long, env = "ESTUARY_EDGE_CLOSE_AT")]
    close_at: Option<String>,
    /// How the bouncers combine, e.g. 'all(token, country)' or 'any(token, password)'
    /// (names: token, country, network, window, password) [default: all of those configured].
    #[arg(long, env = "ESTUARY_EDGE_BOUNCERS")]
    bouncers: Option<String>,
    /// Proxies (CIDR, comma-separated) whose X-Forwarded-For names the client.
    #[arg(long, env = "ESTUARY_EDGE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<Cidr>,
    /// Control's base URL: a report (clients, egress, cache hits, CPU, mood) goes to
    /// URL/api/v1/reports every second.
    #[arg(long, env = "ESTUARY_EDGE_CONTROL")]
    control: Option<String>,
    /// Report key file (lines of ID HEX or HEX, as control's [reports] key_file): the first
    /// key signs every report; without one, reports go unsigned and control refuses them.
    #[arg(long, env = "ESTUARY_EDGE_REPORT_KEY")]
    report_key: Option<PathBuf>,
    /// This edge's name in its reports [default: the host name and port].
    #[arg(long, env = "ESTUARY_EDGE_ID")]
    id: Option<String>,
    /// The site this edge is in, as control's configuration names it.
    #[arg(long, env = "ESTUARY_EDGE_SITE")]
    site: Option<String>,
    /// Where viewers reach this edge, for control's redirects [default: http://LISTEN].
    #[arg(long, env = "ESTUARY_EDGE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, env = "ESTUARY_EDGE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "ESTUARY_EDGE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate made up at start for localhost and the listen address
    /// (its fingerprint is logged).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// With HTTPS, do not serve HTTP/3 (QUIC on the same port number, UDP, advertised in
    /// Alt-Svc).
    #[arg(long, env = "ESTUARY_EDGE_NO_HTTP3")]
    no_http3: bool,
    /// Trusted proxies may start connections with a PROXY protocol header (v1 or v2).
    #[arg(long, env = "ESTUARY_EDGE_PROXY_PROTOCOL")]
    proxy_protocol: bool,
    /// Write a combined-format access log to FILE (- for standard output).
    #[arg(long, env = "ESTUARY_EDGE_ACCESS_LOG")]
    access_log: Option<PathBuf>,
    /// How long viewers share one fetch of a playlist the packager marks max-age=0.
    #[arg(long, env = "ESTUARY_EDGE_PLAYLIST_TTL", value_parser = duration)]
    playlist_ttl: Option<Duration>,
    /// How old a playlist may be and still be served when every upstream fails.
    #[arg(long, env = "ESTUARY_EDGE_STALE_LIMIT", value_parser = duration)]
    stale_limit: Option<Duration>,
    /// What happens to a viewer of a continuous stream that falls behind: skip (moved on to
    /// the newest keyframe) or drop (disconnected).
    #[arg(long, env = "ESTUARY_EDGE_SLOW_CLIENTS")]
    slow_clients: Option<estuary_edge::fanout::SlowPolicy>,
    /// A continuous-stream viewer this far behind the newest chunk (media time) is slow.
    #[arg(long, env = "ESTUARY_EDGE_MAX_LAG", value_parser = duration)]
    max_lag: Option<Duration>,
    /// A continuous-stream viewer whose reader takes nothing for this long is disconnected,
    /// whatever --slow-clients says.
    #[arg(long, env = "ESTUARY_EDGE_CLIENT_TIMEOUT", value_parser = duration)]
    client_timeout: Option<Duration>,
    /// A continuous-stream viewer this many bytes behind is slow, e.g. 8MiB.
    #[arg(long, env = "ESTUARY_EDGE_MAX_LAG_BYTES")]
    max_lag_bytes: Option<ByteSize>,
    /// Bytes of recent stream a new continuous-stream viewer gets at once, from a keyframe
    /// (0: start on the newest keyframe), e.g. 256KiB.
    #[arg(long, env = "ESTUARY_EDGE_BURST")]
    burst: Option<ByteSize>,
    /// Viewers per continuous stream beyond which new ones are turned away [default: no limit].
    #[arg(long, env = "ESTUARY_EDGE_STREAM_VIEWERS")]
    stream_viewers: Option<usize>,
    /// Where viewers beyond --stream-viewers are redirected (a base URL: the same path there);
    /// without it they get 503.
    #[arg(long, env = "ESTUARY_EDGE_OVERFLOW")]
    overflow: Option<String>,
    /// What writes continuous streams to plain HTTP/1 viewers: io_uring (threads that batch
    /// every viewer's send into one system call per wake-up, zero-copy for large sends where
    /// the kernel offers it), epoll (a tokio task per viewer), or auto (io_uring when the kernel
    /// offers it, else epoll). HTTPS, HTTP/2 and HTTP/3 viewers are relayed on tokio either way.
    #[arg(long, env = "ESTUARY_EDGE_FANOUT", value_name = "ENGINE")]
    fanout: Option<estuary_edge::fanout::EngineChoice>,
    /// Threads of the io_uring engine [default: one per CPU the edge may run on].
    #[arg(
        long,
        env = "ESTUARY_EDGE_FANOUT_THREADS",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    fanout_threads: Option<u16>,
    /// A mount with continuous-stream settings of its own, PREFIX:KEY=VALUE,..., e.g.
    /// '/live/radio/:slow-clients=drop,max-lag=10s,stream-viewers=5000'. Keys: slow-clients,
    /// max-lag, max-lag-bytes, client-timeout, burst, stream-viewers, overflow; the others
    /// keep the edge-wide values. A stream takes the first mount its path starts with.
    /// Repeatable.
    #[arg(long = "mount", value_name = "PREFIX:SETTINGS", value_parser = MountFile::parse)]
    mounts: Vec<MountFile>,
}

/// The flags given, over the file (or the defaults).
fn layered(args: EdgeArgs) -> anyhow::Result<EdgeFile> {
    let mut file = match &args.config {
        Some(path) => EdgeFile::load(path)?,
        None => EdgeFile::default(),
    };
    macro_rules! set {
        ($($flag:ident => $($field:ident).+),* $(,)?) => {
            $(if let Some(value) = args.$flag { file.$($field).+ = value; })*
        };
    }
    macro_rules! set_some {
        ($($flag:ident => $($field:ident).+),* $(,)?) => {
            $(if args.$flag.is_some() { file.$($field).+ = args.$flag; })*
        };
    }
    macro_rules! set_list {
        ($($flag:ident => $($field:ident).+),* $(,)?) => {
            $(if !args.$flag.is_empty() { file.$($field).+ = args.$flag; })*
        };
    }
    set! {
        drain_grace => drain_grace,
        listen => listen, cache_size => cache_size, playlist_ttl => playlist_ttl,
        stale_limit => stale_limit, unknown_country => bouncers.unknown_country,
        site => control.site, slow_clients => streams.slow_clients,
        max_lag => streams.max_lag, client_timeout => streams.client_timeout,
        max_lag_bytes => streams.max_lag_bytes, burst => streams.burst,
        fanout => streams.fanout,
    }
    set_some! {
        admin_token => admin_token, takeover_socket => takeover_socket,
        key_file => bouncers.key_file, revoked => bouncers.revoked, geoip => bouncers.geoip,
        htpasswd => bouncers.htpasswd, open_at => bouncers.open_at,
        close_at => bouncers.close_at, bouncers => bouncers.rule, control => control.url,
        report_key => control.report_key, id => control.id, public_url => control.public_url,
        tls_cert => tls.certificate, tls_key => tls.key, access_log => access_log,
        stream_viewers => streams.stream_viewers, overflow => streams.overflow,
        fanout_threads => streams.fanout_threads,
    }
    set_list! {
        upstream => upstreams, allow_countries => bouncers.allow_countries,
        deny_countries => bouncers.deny_countries, allow_networks => bouncers.allow_networks,
        deny_networks => bouncers.deny_networks, trusted_proxies => trusted_proxies,
        mounts => streams.mounts,
    }
    if args.tls_self_signed {
        file.tls.self_signed = true;
    }
    if args.no_http3 {
        file.tls.http3 = false;
    }
    if args.proxy_protocol {
        file.proxy_protocol = true;
    }
    Ok(file)
}

/// The configuration the flags and the file give, resolved.
fn configuration(args: &EdgeArgs) -> anyhow::Result<estuary_edge::EdgeConfig> {
    let source = args
        .config
        .as_ref()
        .map_or("the flags".to_owned(), |path| path.display().to_string());
    layered(args.clone())?
        .resolve()
        .with_context(|| format!("the configuration from {source}"))
}

pub(crate) fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    let config = configuration(&args)?;
    let takeover = args.takeover.clone();
    let source: estuary_edge::node::ConfigSource =
        Arc::new(move || configuration(&args).map_err(|error| format!("{error:#}")));
    runtime()?.block_on(async {
        let (requester, requests) = estuary_http::lifecycle::signals();
        let lifecycle = estuary_edge::Lifecycle {
            requests,
            requester,
            source: Some(source),
            takeover,
        };
        estuary_edge::run(config, lifecycle).await
    })?;
    Ok(())
}

/// A duration flag: `2s`, `500ms`, `5m`.
fn duration(text: &str) -> Result<Duration, String> {
    estuary_proto::duration::parse_duration(text).map_err(|error| error.to_string())
}
