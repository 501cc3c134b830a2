//! From the configuration as written to the one the edge runs with: the files it names read
//! and checked (keycard keys, the GeoIP database, the htpasswd file, the report key), the
//! bouncers composed by their rule, mounts laid over the edge-wide policy. Every error names
//! the key (as the file spells it) and what was wrong, so that `estuary config check` and a
//! reload can say what to fix before anything changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::file::{Admission, BouncersFile, EdgeFile, MountFile, StreamsFile};
use super::{EdgeConfig, Identity};
use crate::bouncer::{Bouncer, CountryRule, compose};
use crate::fanout::{FanoutConfig, MountPolicy};
use crate::geo::CountryDatabase;
use crate::htpasswd::Htpasswd;
use crate::listen::tls::TlsSource;

/// A configuration that cannot run: the key, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ResolveError {
    /// The key as the file spells it, e.g. `bouncers.key_file`.
    pub key: &'static str,
    pub reason: String,
}

fn refuse(key: &'static str, reason: impl Into<String>) -> ResolveError {
    ResolveError {
        key,
        reason: reason.into(),
    }
}

impl EdgeFile {
    /// The configuration the edge runs with, every file it names read and checked.
    pub fn resolve(&self) -> Result<EdgeConfig, ResolveError> {
        if self.upstreams.is_empty() {
            return Err(refuse(
                "upstreams",
                "name at least one packager or parent edge, e.g. [\"http://127.0.0.1:8080\"]",
            ));
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err(refuse(
                "proxy_protocol",
                "needs trusted_proxies (whose headers to believe)",
            ));
        }
        let mut config = EdgeConfig::new(self.listen, self.upstreams.clone());
        config.cache_bytes = self.cache_size.as_usize();
        config.playlist_floor = self.playlist_ttl;
        config.stale_limit = self.stale_limit;
        config.access_log = self.access_log.clone();
        config.trusted_proxies = self.trusted_proxies.clone();
        config.proxy_protocol = self.proxy_protocol;
        config.revoked = self.bouncers.revoked.clone();
        if let Some(path) = &config.revoked {
            readable("bouncers.revoked", path)?;
        }
        config.bouncer = self.bouncers.resolve()?;
        config.tls = self.tls_source()?;
        config.http3 = self.tls.http3;
        config.fanout = self.streams.resolve()?;
        config.limits = estuary_http::Limits {
            head_bytes: self.limits.head_size.as_usize(),
            headers: self.limits.headers,
            head_timeout: self.limits.head_timeout,
            idle_timeout: self.limits.idle_timeout,
            write_timeout: self.limits.write_timeout,
            ..estuary_http::Limits::default()
        };
        config.control = self.identity(config.tls.is_some())?;
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            return Err(refuse(
                "admin_token",
                "use at least 16 characters (openssl rand -hex 32)",
            ));
        }
        config.admin_token = self.admin_token.clone();
        config.drain_grace = self.drain_grace;
        config.takeover_socket = self.takeover_socket.clone();
        Ok(config)
    }

    fn tls_source(&self) -> Result<Option<TlsSource>, ResolveError> {
        match (&self.tls.certificate, &self.tls.key, self.tls.self_signed) {
            (Some(certificate), Some(key), false) => {
                readable("tls.certificate", certificate)?;
                readable("tls.key", key)?;
                Ok(Some(TlsSource::Files {
                    certificate: certificate.clone(),
                    key: key.clone(),
                }))
            }
            (None, None, true) => {
                let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                let listen = self.listen.ip().to_string();
                if !names.contains(&listen) && !self.listen.ip().is_unspecified() {
                    names.push(listen);
                }
                Ok(Some(TlsSource::SelfSigned { names }))
            }
            (None, None, false) => Ok(None),
            (_, _, true) => Err(refuse(
                "tls.self_signed",
                "give either a certificate and its key, or self_signed, not both",
            )),
            _ => Err(refuse("tls", "certificate and key go together")),
        }
    }

    fn identity(&self, tls: bool) -> Result<Option<(String, Identity)>, ResolveError> {
        let Some(url) = &self.control.url else {
            return Ok(None);
        };
        let key = match &self.control.report_key {
            Some(path) => {
                let text = read("control.report_key", path)?;
                let keys = estuary_proto::keycard::parse_key_file(&text).map_err(|error| {
                    refuse("control.report_key", format!("{}: {error}", path.display()))
                })?;
                keys.into_iter().next()
            }
            None => {
                tracing::warn!("no report key: reports go unsigned, and control refuses them");
                None
            }
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "edge".into());
        let identity = Identity {
            id: self
                .control
                .id
                .clone()
                .unwrap_or_else(|| format!("{host}:{}", self.listen.port())),
            site: self.control.site.clone(),
            url: self.control.public_url.clone().unwrap_or_else(|| {
                let scheme = if tls { "https" } else { "http" };
                format!("{scheme}://{}", self.listen)
            }),
            key,
        };
        // Control would refuse every report of an identity out of bounds: say so now.
        estuary_proto::report::check_name(&identity.id)
            .map_err(|error| refuse("control.id", error.to_string()))?;
        estuary_proto::report::check_url(&identity.url)
            .map_err(|error| refuse("control.public_url", format!("{:?} {error}", identity.url)))?;
        Ok(Some((url.clone(), identity)))
    }
}

impl BouncersFile {
    /// The bouncers configured, combined by the rule (all of them by default); none lets
    /// everyone in.
    pub fn resolve(&self) -> Result<Option<Bouncer>, ResolveError> {
        let mut named = BTreeMap::new();
        if let Some(path) = &self.key_file {
            let text = read("bouncers.key_file", path)?;
            let keys = estuary_proto::keycard::parse_key_file(&text).map_err(|reason| {
                refuse("bouncers.key_file", format!("{}: {reason}", path.display()))
            })?;
            named.insert("token", Bouncer::Token(keys));
        }
        let countries = !self.allow_countries.is_empty() || !self.deny_countries.is_empty();
        match (&self.geoip, countries) {
            (Some(path), true) => {
                let database = CountryDatabase::open(path)
                    .map_err(|reason| refuse("bouncers.geoip", reason))?;
                named.insert(
                    "country",
                    Bouncer::Country(CountryRule {
                        database: Arc::new(database),
                        allow: self.allow_countries.clone(),
                        deny: self.deny_countries.clone(),
                        unknown_allowed: self.unknown_country == Admission::Allow,
                    }),
                );
            }
            (Some(_), false) => {
                return Err(refuse(
                    "bouncers.geoip",
                    "needs allow_countries or deny_countries",
                ));
            }
            (None, true) => {
                return Err(refuse(
                    "bouncers.allow_countries",
                    "allow_countries and deny_countries need geoip",
                ));
            }
            (None, false) => {}
        }
        if !self.allow_networks.is_empty() || !self.deny_networks.is_empty() {
            named.insert(
                "network",
                Bouncer::Network {
                    allow: self.allow_networks.clone(),
                    deny: self.deny_networks.clone(),
                },
            );
        }
        if let Some(path) = &self.htpasswd {
            let text = read("bouncers.htpasswd", path)?;
            let users = Htpasswd::parse(&text).map_err(|reason| {
                refuse("bouncers.htpasswd", format!("{}: {reason}", path.display()))
            })?;
            named.insert("password", Bouncer::Password(Arc::new(users)));
        }
        if self.open_at.is_some() || self.close_at.is_some() {
            let moment = |key, text: &Option<String>| {
                text.as_deref()
                    .map(estuary_proto::utc::parse_moment)
                    .transpose()
                    .map_err(|reason| refuse(key, reason))
            };
            named.insert(
                "window",
                Bouncer::Window {
                    from: moment("bouncers.open_at", &self.open_at)?,
                    until: moment("bouncers.close_at", &self.close_at)?,
                },
            );
        }
        let rule = match &self.rule {
            Some(rule) => rule.clone(),
            None if named.is_empty() => return Ok(None),
            None => format!(
                "all({})",
                named.keys().copied().collect::<Vec<_>>().join(",")
            ),
        };
        compose(&rule, &named)
            .map(Some)
            .map_err(|reason| refuse("bouncers.rule", reason))
    }
}

impl StreamsFile {
    /// The fan-out engine's configuration: the edge-wide policy, and each mount's over it.
    pub fn resolve(&self) -> Result<FanoutConfig, ResolveError> {
        if self.overflow.is_some() && self.stream_viewers.is_none() {
            return Err(refuse("streams.overflow", "needs stream_viewers"));
        }
        if self.fanout_threads == Some(0) {
            return Err(refuse("streams.fanout_threads", "must be at least 1"));
        }
        let policy = MountPolicy {
            slow: self.slow_clients,
            max_lag: self.max_lag,
            client_timeout: self.client_timeout,
            max_lag_bytes: self.max_lag_bytes.as_usize(),
            burst_bytes: self.burst.as_usize(),
            max_viewers: self.stream_viewers,
            overflow: self.overflow.clone(),
        };
        let mounts = self
            .mounts
            .iter()
            .map(|mount| mount.over(&policy))
            .collect::<Result<_, _>>()?;
        Ok(FanoutConfig {
            policy,
            mounts,
            engine: self.fanout,
            engine_threads: self.fanout_threads.map(usize::from),
            ..FanoutConfig::default()
        })
    }
}

impl MountFile {
    /// The mount's prefix and `policy` with the settings the mount gives changed.
    pub fn over(&self, policy: &MountPolicy) -> Result<(String, MountPolicy), ResolveError> {
        if !self.prefix.starts_with('/') {
            return Err(refuse(
                "streams.mounts.prefix",
                format!("{:?} is not a path such as /live/radio/", self.prefix),
            ));
        }
        let mut policy = policy.clone();
        if let Some(slow) = self.slow_clients {
            policy.slow = slow;
        }
        if let Some(max_lag) = self.max_lag {
            policy.max_lag = max_lag;
        }
        if let Some(timeout) = self.client_timeout {
            policy.client_timeout = timeout;
        }
        if let Some(bytes) = self.max_lag_bytes {
            policy.max_lag_bytes = bytes.as_usize();
        }
        if let Some(burst) = self.burst {
            policy.burst_bytes = burst.as_usize();
        }
        if let Some(viewers) = self.stream_viewers {
            policy.max_viewers = Some(viewers);
        }
        if let Some(overflow) = &self.overflow {
            policy.overflow = Some(overflow.clone());
        }
        Ok((self.prefix.clone(), policy))
    }
}

fn read(key: &'static str, path: &Path) -> Result<String, ResolveError> {
    std::fs::read_to_string(path)
        .map_err(|error| refuse(key, format!("{}: {error}", path.display())))
}

fn readable(key: &'static str, path: &Path) -> Result<(), ResolveError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|error| refuse(key, format!("{}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::SlowPolicy;
    use std::time::Duration;

    fn parse(text: &str) -> EdgeFile {
        estuary_proto::config::parse(text, Path::new("edge.toml")).unwrap()
    }

    #[test]
    fn a_file_with_every_section_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "k1 00112233445566778899aabbccddeeff\n").unwrap();
        let file = parse(&format!(
            r#"
listen = "127.0.0.1:9090"
upstreams = ["http://127.0.0.1:8080"]
cache_size = "64MiB"
playlist_ttl = "200ms"

[bouncers]
key_file = "{}"
allow_networks = ["10.0.0.0/8"]
rule = "any(token, network)"

[streams]
slow_clients = "drop"
max_lag = "3s"

[[streams.mounts]]
prefix = "/live/radio/"
slow_clients = "skip"
stream_viewers = 5000

[limits]
head_timeout = "5s"
"#,
            keys.display()
        ));
        let config = file.resolve().unwrap();
        assert_eq!(config.cache_bytes, 64 << 20);
        assert_eq!(config.playlist_floor, Duration::from_millis(200));
        assert!(matches!(config.bouncer, Some(Bouncer::Any(_))));
        assert_eq!(config.fanout.policy.slow, SlowPolicy::Drop);
        let (prefix, radio) = &config.fanout.mounts[0];
        assert_eq!(prefix, "/live/radio/");
        assert_eq!(radio.slow, SlowPolicy::Skip);
        assert_eq!(
            radio.max_lag,
            Duration::from_secs(3),
            "kept from the edge-wide policy"
        );
        assert_eq!(radio.max_viewers, Some(5000));
        assert_eq!(config.limits.head_timeout, Duration::from_secs(5));
    }

    #[test]
    fn what_cannot_run_names_its_key() {
        let cases = [
            ("", "upstreams"),
            (
                "upstreams = [\"http://x:1\"]\nproxy_protocol = true\n",
                "proxy_protocol",
            ),
            (
                "upstreams = [\"http://x:1\"]\n[bouncers]\nkey_file = \"/nonexistent/keys\"\n",
                "bouncers.key_file",
            ),
            (
                "upstreams = [\"http://x:1\"]\n[bouncers]\nallow_countries = [\"GB\"]\n",
                "bouncers.allow_countries",
            ),
            (
                "upstreams = [\"http://x:1\"]\n[bouncers]\nallow_networks = [\"10.0.0.0/8\"]\nrule = \"all(token)\"\n",
                "bouncers.rule",
            ),
            (
                "upstreams = [\"http://x:1\"]\n[tls]\ncertificate = \"/nonexistent/cert.pem\"\n",
                "tls",
            ),
            (
                "upstreams = [\"http://x:1\"]\n[streams]\noverflow = \"http://spare\"\n",
                "streams.overflow",
            ),
            (
                "upstreams = [\"http://x:1\"]\n[control]\nurl = \"http://control\"\nid = \"has spaces\"\n",
                "control.id",
            ),
        ];
        for (text, key) in cases {
            let error = parse(text).resolve().unwrap_err();
            assert_eq!(error.key, key, "{text}: {error}");
        }
    }

    #[test]
    fn the_documented_example_resolves() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/edge.toml");
        let file = EdgeFile::load(&path).unwrap();
        let config = file.resolve().unwrap();
        let defaults = EdgeFile::default();
        // The example shows the defaults: read, it says what the edge does without it.
        assert_eq!(file.listen, defaults.listen);
        assert_eq!(file.streams, defaults.streams);
        assert_eq!(file.limits, defaults.limits);
        assert_eq!(config.cache_bytes, 256 << 20);
        assert!(config.bouncer.is_none());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let error = estuary_proto::config::parse::<EdgeFile>(
            "upstreams = [\"http://x:1\"]\n[streams]\nslow = \"drop\"\n",
            Path::new("deploy/edge.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("deploy/edge.toml") && error.contains("line 3"),
            "{error}"
        );
    }

    #[test]
    fn mounts_are_read_as_the_command_line_writes_them() {
        let mount =
            MountFile::parse("/live/radio/:slow-clients=drop,max-lag=10s,stream-viewers=5000")
                .unwrap();
        let (prefix, radio) = mount.over(&MountPolicy::default()).unwrap();
        assert_eq!(prefix, "/live/radio/");
        assert_eq!(radio.slow, SlowPolicy::Drop);
        assert_eq!(radio.max_lag, Duration::from_secs(10));
        assert_eq!(radio.max_viewers, Some(5000));
        assert_eq!(radio.client_timeout, MountPolicy::default().client_timeout);
        for (bad, says) in [
            ("radio:max-lag=1s", "expected PREFIX:KEY=VALUE"),
            ("/live/:max-lag", "is not KEY=VALUE"),
            ("/live/:speed=2", "unknown setting \"speed\""),
            ("/live/:slow-clients=maybe", "neither skip nor drop"),
        ] {
            let error = MountFile::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
