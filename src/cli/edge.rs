//! `estuary edge`: its flags, the bouncers they turn on, mounts with settings of their own,
//! and the run.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::{parse_duration, parse_size, runtime, shutdown_signal};

#[derive(Args)]
pub(crate) struct EdgeArgs {
    /// Address viewers connect to.
    #[arg(long, env = "ESTUARY_EDGE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Base URL(s) of the packager or parent edges, comma-separated, tried in turn.
    #[arg(
        long,
        env = "ESTUARY_EDGE_UPSTREAM",
        value_delimiter = ',',
        required = true
    )]
    upstream: Vec<String>,
    /// Memory for cached bodies, e.g. 256MiB or 2GiB.
    #[arg(long, env = "ESTUARY_EDGE_CACHE_SIZE", default_value = "256MiB")]
    cache_size: String,
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
    #[arg(long, env = "ESTUARY_EDGE_UNKNOWN_COUNTRY", default_value = "allow")]
    unknown_country: Admission,
    /// Client ranges let in (CIDR, comma-separated): turns on the network bouncer.
    #[arg(long, env = "ESTUARY_EDGE_ALLOW_NETWORKS", value_delimiter = ',')]
    allow_networks: Vec<String>,
    /// Client ranges turned away (checked before --allow-networks).
    #[arg(long, env = "ESTUARY_EDGE_DENY_NETWORKS", value_delimiter = ',')]
    deny_networks: Vec<String>,
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
    trusted_proxies: Vec<String>,
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
    #[arg(long, env = "ESTUARY_EDGE_SITE", default_value = "default")]
    site: String,
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
    #[arg(long, env = "ESTUARY_EDGE_PLAYLIST_TTL", default_value = "100ms")]
    playlist_ttl: String,
    /// How old a playlist may be and still be served when every upstream fails.
    #[arg(long, env = "ESTUARY_EDGE_STALE_LIMIT", default_value = "60s")]
    stale_limit: String,
    /// What happens to a viewer of a continuous stream that falls behind: skip (moved on to
    /// the newest keyframe) or drop (disconnected).
    #[arg(long, env = "ESTUARY_EDGE_SLOW_CLIENTS", default_value = "skip")]
    slow_clients: estuary_edge::fanout::SlowPolicy,
    /// A continuous-stream viewer this far behind the newest chunk (media time) is slow.
    #[arg(long, env = "ESTUARY_EDGE_MAX_LAG", default_value = "5s")]
    max_lag: String,
    /// A continuous-stream viewer whose reader takes nothing for this long is disconnected,
    /// whatever --slow-clients says.
    #[arg(long, env = "ESTUARY_EDGE_CLIENT_TIMEOUT", default_value = "30s")]
    client_timeout: String,
    /// A continuous-stream viewer this many bytes behind is slow, e.g. 8MiB.
    #[arg(long, env = "ESTUARY_EDGE_MAX_LAG_BYTES", default_value = "8MiB")]
    max_lag_bytes: String,
    /// Bytes of recent stream a new continuous-stream viewer gets at once, from a keyframe
    /// (0: start on the newest keyframe), e.g. 256KiB.
    #[arg(long, env = "ESTUARY_EDGE_BURST", default_value = "0")]
    burst: String,
    /// Viewers per continuous stream beyond which new ones are turned away [default: no limit].
    #[arg(long, env = "ESTUARY_EDGE_STREAM_VIEWERS")]
    stream_viewers: Option<usize>,
    /// Where viewers beyond --stream-viewers are redirected (a base URL: the same path there);
    /// without it they get 503.
    #[arg(long, env = "ESTUARY_EDGE_OVERFLOW", requires = "stream_viewers")]
    overflow: Option<String>,
    /// What writes continuous streams to plain HTTP/1 viewers: io_uring (threads that batch
    /// every viewer's send into one system call per wake-up, zero-copy for large sends where
    /// the kernel offers it), epoll (a tokio task per viewer), or auto (io_uring when the kernel
    /// offers it, else epoll). HTTPS, HTTP/2 and HTTP/3 viewers are relayed on tokio either way.
    #[arg(
        long,
        env = "ESTUARY_EDGE_FANOUT",
        default_value = "auto",
        value_name = "ENGINE"
    )]
    fanout: estuary_edge::fanout::EngineChoice,
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
    #[arg(long = "mount", value_name = "PREFIX:SETTINGS")]
    mounts: Vec<String>,
}

pub(crate) fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    let mut config = estuary_edge::EdgeConfig::new(args.listen, args.upstream.clone());
    config.cache_bytes = parse_size("--cache-size", &args.cache_size)?;
    config.playlist_floor = parse_duration("--playlist-ttl", &args.playlist_ttl)?;
    config.stale_limit = parse_duration("--stale-limit", &args.stale_limit)?;
    let policy = estuary_edge::fanout::MountPolicy {
        slow: args.slow_clients,
        max_lag: parse_duration("--max-lag", &args.max_lag)?,
        client_timeout: parse_duration("--client-timeout", &args.client_timeout)?,
        max_lag_bytes: parse_size("--max-lag-bytes", &args.max_lag_bytes)?,
        burst_bytes: parse_size("--burst", &args.burst)?,
        max_viewers: args.stream_viewers,
        overflow: args.overflow.clone(),
    };
    let mounts = args
        .mounts
        .iter()
        .map(|mount| parse_mount(mount, &policy))
        .collect::<anyhow::Result<_>>()?;
    config.fanout = estuary_edge::fanout::FanoutConfig {
        policy,
        mounts,
        engine: args.fanout,
        engine_threads: args.fanout_threads.map(usize::from),
        ..estuary_edge::fanout::FanoutConfig::default()
    };
    config.access_log = args.access_log.clone();
    config.revoked = args.revoked.clone();
    config.trusted_proxies = cidrs("--trusted-proxies", &args.trusted_proxies)?;
    config.proxy_protocol = args.proxy_protocol;
    config.tls = match (&args.tls_cert, &args.tls_key) {
        (Some(certificate), Some(key)) => Some(estuary_edge::listen::tls::TlsSource::Files {
            certificate: certificate.clone(),
            key: key.clone(),
        }),
        _ if args.tls_self_signed => {
            let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                .into_iter()
                .map(str::to_owned)
                .collect();
            let listen = args.listen.ip().to_string();
            if !names.contains(&listen) && !args.listen.ip().is_unspecified() {
                names.push(listen);
            }
            Some(estuary_edge::listen::tls::TlsSource::SelfSigned { names })
        }
        _ => None,
    };
    config.http3 = !args.no_http3;
    if config.proxy_protocol && config.trusted_proxies.is_empty() {
        bail!("--proxy-protocol needs --trusted-proxies (whose headers to believe)");
    }
    config.bouncer = edge_bouncer(&args)?;
    if let Some(control) = &args.control {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "edge".into());
        let key = match &args.report_key {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--report-key {}", path.display()))?;
                let keys = estuary_proto::keycard::parse_key_file(&text)
                    .map_err(|error| anyhow::anyhow!("--report-key {}: {error}", path.display()))?;
                keys.into_iter().next()
            }
            None => {
                tracing::warn!("no --report-key: reports go unsigned, and control refuses them");
                None
            }
        };
        let identity = estuary_edge::report::Identity {
            id: args
                .id
                .clone()
                .unwrap_or_else(|| format!("{host}:{}", args.listen.port())),
            site: args.site.clone(),
            url: args.public_url.clone().unwrap_or_else(|| {
                let scheme = if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", args.listen)
            }),
            key,
        };
        // Control would refuse every report of an identity out of bounds: say so now.
        estuary_proto::report::check_name(&identity.id)
            .map_err(|error| anyhow::anyhow!("--id: {error}"))?;
        estuary_proto::report::check_url(&identity.url)
            .map_err(|error| anyhow::anyhow!("--public-url {:?} {error}", identity.url))?;
        config.control = Some((control.clone(), identity));
    }
    runtime()?.block_on(async { estuary_edge::run(config, shutdown_signal()).await })?;
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Admission {
    Allow,
    Deny,
}

pub(crate) fn cidrs(flag: &str, list: &[String]) -> anyhow::Result<Vec<estuary_edge::net::Cidr>> {
    list.iter()
        .map(|text| {
            text.parse()
                .map_err(|reason| anyhow::anyhow!("{flag}: {reason}"))
        })
        .collect()
}

/// The bouncers the flags configure, combined by --bouncers (all of them by default).
pub(crate) fn edge_bouncer(
    args: &EdgeArgs,
) -> anyhow::Result<Option<estuary_edge::bouncer::Bouncer>> {
    use estuary_edge::bouncer::{Bouncer, CountryRule, compose};
    let mut named = std::collections::BTreeMap::new();
    if let Some(path) = &args.key_file {
        named.insert(
            "token",
            Bouncer::Token(crate::keycards::read_key_file(path)?),
        );
    }
    let countries = !args.allow_countries.is_empty() || !args.deny_countries.is_empty();
    match (&args.geoip, countries) {
        (Some(path), true) => {
            let database = estuary_edge::geo::CountryDatabase::open(path)
                .map_err(|reason| anyhow::anyhow!("--geoip: {reason}"))?;
            named.insert(
                "country",
                Bouncer::Country(CountryRule {
                    database: std::sync::Arc::new(database),
                    allow: args.allow_countries.clone(),
                    deny: args.deny_countries.clone(),
                    unknown_allowed: matches!(args.unknown_country, Admission::Allow),
                }),
            );
        }
        (Some(_), false) => bail!("--geoip needs --allow-countries or --deny-countries"),
        (None, true) => bail!("--allow-countries and --deny-countries need --geoip"),
        (None, false) => {}
    }
    if !args.allow_networks.is_empty() || !args.deny_networks.is_empty() {
        named.insert(
            "network",
            Bouncer::Network {
                allow: cidrs("--allow-networks", &args.allow_networks)?,
                deny: cidrs("--deny-networks", &args.deny_networks)?,
            },
        );
    }
    if let Some(path) = &args.htpasswd {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the htpasswd file {}", path.display()))?;
        let users = estuary_edge::htpasswd::Htpasswd::parse(&text)
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
        named.insert("password", Bouncer::Password(std::sync::Arc::new(users)));
    }
    if args.open_at.is_some() || args.close_at.is_some() {
        let moment = |flag: &str, text: &Option<String>| {
            text.as_deref()
                .map(estuary_proto::utc::parse_moment)
                .transpose()
                .map_err(|reason| anyhow::anyhow!("{flag}: {reason}"))
        };
        named.insert(
            "window",
            Bouncer::Window {
                from: moment("--open-at", &args.open_at)?,
                until: moment("--close-at", &args.close_at)?,
            },
        );
    }
    let rule = match &args.bouncers {
        Some(rule) => rule.clone(),
        None if named.is_empty() => return Ok(None),
        None => format!(
            "all({})",
            named.keys().copied().collect::<Vec<_>>().join(",")
        ),
    };
    Ok(Some(compose(&rule, &named).map_err(|reason| {
        anyhow::anyhow!("--bouncers: {reason}")
    })?))
}

/// `256MiB`, `2GiB`, `500MB`, `1000000`: a number of bytes.
/// `--mount PREFIX:KEY=VALUE,...`: the edge-wide `policy` with the settings given changed.
pub(crate) fn parse_mount(
    text: &str,
    policy: &estuary_edge::fanout::MountPolicy,
) -> anyhow::Result<(String, estuary_edge::fanout::MountPolicy)> {
    let (prefix, settings) = text
        .split_once(':')
        .filter(|(prefix, _)| prefix.starts_with('/'))
        .with_context(|| format!("--mount {text:?}: expected PREFIX:KEY=VALUE,..., with PREFIX a path such as /live/radio/"))?;
    let mut policy = policy.clone();
    for setting in settings.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("--mount {text:?}: {setting:?} is not KEY=VALUE"))?;
        let flag = format!("--mount {prefix} {key}");
        match key {
            "slow-clients" => {
                policy.slow = value
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("{flag}: {e}"))?
            }
            "max-lag" => policy.max_lag = parse_duration(&flag, value)?,
            "max-lag-bytes" => policy.max_lag_bytes = parse_size(&flag, value)?,
            "client-timeout" => policy.client_timeout = parse_duration(&flag, value)?,
            "burst" => policy.burst_bytes = parse_size(&flag, value)?,
            "stream-viewers" => {
                policy.max_viewers = Some(
                    value
                        .parse()
                        .with_context(|| format!("{flag}: {value:?} is not a number"))?,
                )
            }
            "overflow" => policy.overflow = Some(value.to_owned()),
            _ => bail!(
                "--mount {text:?}: unknown setting {key:?} (slow-clients, max-lag, max-lag-bytes, client-timeout, burst, stream-viewers, overflow)"
            ),
        }
    }
    Ok((prefix.to_owned(), policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_change_the_settings_they_name_and_keep_the_rest() {
        let policy = estuary_edge::fanout::MountPolicy::default();
        let (prefix, radio) = parse_mount(
            "/live/radio/:slow-clients=drop,max-lag=10s,stream-viewers=5000",
            &policy,
        )
        .unwrap();
        assert_eq!(prefix, "/live/radio/");
        assert_eq!(radio.slow, estuary_edge::fanout::SlowPolicy::Drop);
        assert_eq!(radio.max_lag, std::time::Duration::from_secs(10));
        assert_eq!(radio.max_viewers, Some(5000));
        assert_eq!(radio.client_timeout, policy.client_timeout);
        for (bad, says) in [
            ("radio:max-lag=1s", "expected PREFIX:KEY=VALUE"),
            ("/live/:max-lag", "is not KEY=VALUE"),
            ("/live/:speed=2", "unknown setting \"speed\""),
            ("/live/:slow-clients=maybe", "neither skip nor drop"),
        ] {
            let error = parse_mount(bad, &policy).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
