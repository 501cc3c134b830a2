//! Control's configuration file (TOML): where it listens, the sites, coverage zones (inline, or
//! an Apache Traffic Control coverage-zone file), the GeoIP database, keycards, the routing
//! policy, how edge reports are authenticated (report keys, pins), and the connection
//! timeouts. It is read as every role reads its file (`estuary_proto::config`): unknown keys
//! are errors naming the file and the line; then [`Config::validate`] checks what the types
//! cannot (bounds, names, pins), naming the entry. `deploy/control.toml` is the example.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_http::Limits;
use estuary_proto::net::Cidr;
use serde::{Deserialize, Serialize};

/// The file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where control listens, unless `--listen` says otherwise.
    pub listen: Option<SocketAddr>,
    /// Where the admin API and the dashboard listen on their own, unless `--admin-listen` says
    /// otherwise. None: they share `listen` with the redirects.
    pub admin_listen: Option<SocketAddr>,
    /// A MaxMind DB (city or country) that places clients no coverage zone names.
    pub geoip: Option<PathBuf>,
    /// A coverage-zone file in Apache Traffic Control's JSON format, added to `zones`.
    pub coverage_zones: Option<PathBuf>,
    /// The client group of clients that neither a zone nor GeoIP places.
    #[serde(default = "default_group")]
    pub default_group: String,
    /// Peers whose X-Forwarded-For names the client.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// The packagers (`http://host:port`), asked every second which live channels exist; a
    /// viewer asking for another gets `404`. None: every channel is redirected.
    #[serde(default)]
    pub origins: Vec<String>,
    pub keycards: Option<KeycardConfig>,
    /// The bearer token that the admin API's changes (policy, forgetting an edge) and its
    /// views of viewers (decisions, the event stream, channels asked for) need; without one,
    /// those are refused.
    pub admin_token: Option<String>,
    #[serde(default)]
    pub reports: ReportsConfig,
    /// Edges pinned to their site (and URL, and key): `[[edges]]`.
    #[serde(default)]
    pub edges: Vec<EdgePin>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub sites: Vec<Site>,
    #[serde(default)]
    pub zones: Vec<Zone>,
}

fn default_group() -> String {
    "default".into()
}

/// Why control's configuration cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable, not TOML, or not what control expects: the file and the line say where.
    #[error(transparent)]
    File(#[from] estuary_proto::config::ConfigError),
    /// Read, but a value is out of bounds or contradicts another.
    #[error("{}: {invalid}", path.display())]
    Invalid { path: PathBuf, invalid: Invalid },
}

/// A value the types let through but control cannot use: the entry and what was expected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("site {name:?}: names must be non-empty and unique")]
    SiteName { name: String },
    #[error("site {name:?}: capacity_mbps must be above 0 and cost_per_gb at least 0")]
    SiteCapacity { name: String },
    #[error(
        "{what}: latitude must be within ±90 and longitude within ±180, not {latitude}, {longitude}"
    )]
    Location {
        what: String,
        latitude: f64,
        longitude: f64,
    },
    #[error("zone {name:?}: give both latitude and longitude, or neither")]
    HalfLocation { name: String },
    #[error(transparent)]
    Origin(#[from] crate::origins::BadOrigin),
    #[error("reports.clock_window must be above 0 and at most 10m, not {0:?}")]
    ClockWindow(Duration),
    #[error(
        "reports.forget_after must be at least {lost:?}, when a silent edge is lost, not {given:?}"
    )]
    ForgetAfter { given: Duration, lost: Duration },
    #[error("edge {id:?}: {problem}")]
    Pin { id: String, problem: String },
    #[error("timeouts.{0} must be above 0")]
    Timeout(&'static str),
    #[error("default_group must not be empty")]
    DefaultGroup,
}

/// A place with edges in it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
    /// What a GB sent from this site costs, in any currency, the same for every site.
    pub cost_per_gb: f64,
    /// The egress the site can carry, in Mbit/s: at or above it the site is full.
    pub capacity_mbps: f64,
}

/// Client addresses that belong together, and where they are.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    /// IPv4 and IPv6 ranges, e.g. `["192.0.2.0/24", "2001:db8::/32"]`.
    pub networks: Vec<Cidr>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeycardConfig {
    /// Lines of `HEX` or `ID HEX`, the same file the edges read; the first key signs.
    pub key_file: PathBuf,
    /// How long a keycard in a redirect lets its viewer in.
    #[serde(default = "default_lifetime", with = "estuary_proto::duration::text")]
    pub lifetime: Duration,
}

fn default_lifetime() -> Duration {
    Duration::from_secs(300)
}

/// How edge reports are authenticated, and how long a silent edge is remembered.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// Lines of `ID HEX` (or `HEX`), the keys reports may be signed with (the edges'
    /// `--report-key` files). None: every report is refused.
    pub key_file: Option<PathBuf>,
    /// How far a report's signature time may be from control's clock, either way.
    #[serde(
        default = "default_clock_window",
        with = "estuary_proto::duration::text"
    )]
    pub clock_window: Duration,
    /// How long an edge may stay silent before control forgets it (it is `lost` long before).
    #[serde(
        default = "default_forget_after",
        with = "estuary_proto::duration::text"
    )]
    pub forget_after: Duration,
    /// Take reports only from edges that `[[edges]]` pins.
    #[serde(default)]
    pub pinned_only: bool,
}

impl Default for ReportsConfig {
    fn default() -> ReportsConfig {
        ReportsConfig {
            key_file: None,
            clock_window: default_clock_window(),
            forget_after: default_forget_after(),
            pinned_only: false,
        }
    }
}

fn default_clock_window() -> Duration {
    estuary_proto::report::DEFAULT_CLOCK_WINDOW
}

fn default_forget_after() -> Duration {
    Duration::from_secs(60)
}

/// What an edge id's reports must say: its site, its URL (exactly, or starting with what comes
/// before a final `*`), and the key that signs them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgePin {
    pub id: String,
    pub site: String,
    /// `https://lon-1.cdn.example`, or a prefix such as `https://lon-1.cdn.example:*`. None:
    /// any URL.
    pub url: Option<String>,
    /// The id of the report key that must sign. None: any report key.
    pub key_id: Option<String>,
}

/// How long control waits for each part of a connection's life.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// For a request's head once it has started (and for a report's or a policy's body):
    /// past it, the connection is closed (`408` at the front door).
    #[serde(
        default = "default_header_timeout",
        with = "estuary_proto::duration::text"
    )]
    pub header: Duration,
    /// For the next request on a kept-alive connection at the front door.
    #[serde(
        default = "default_idle_timeout",
        with = "estuary_proto::duration::text"
    )]
    pub idle: Duration,
    /// For a write to make progress (a client that reads nothing is let go).
    #[serde(
        default = "default_write_timeout",
        with = "estuary_proto::duration::text"
    )]
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header: default_header_timeout(),
            idle: default_idle_timeout(),
            write: default_write_timeout(),
        }
    }
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Timeouts {
    /// The limits every connection to control is kept to, at the front door and in axum
    /// alike: these timeouts, and estuary-http's bounds on a request head (16 KiB, 64
    /// headers).
    pub fn limits(&self) -> Limits {
        Limits {
            head_timeout: self.header,
            idle_timeout: self.idle,
            write_timeout: self.write,
            ..Limits::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy for channels `channels` does not name.
    #[serde(default)]
    pub default: Policy,
    /// Per-channel policies, e.g. `{ news = "least_cost" }`.
    #[serde(default)]
    pub channels: BTreeMap<String, Policy>,
}

/// How a site is chosen for a client group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The nearest site (great-circle distance).
    #[default]
    Closest,
    /// The site whose traffic costs least.
    LeastCost,
    /// The site with the lowest reported egress over capacity.
    LeastLoaded,
}

/// A policy name that is none of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?}: expected closest, least_cost or least_loaded")]
pub struct UnknownPolicy(pub String);

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Closest => "closest",
            Policy::LeastCost => "least_cost",
            Policy::LeastLoaded => "least_loaded",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(text: &str) -> Result<Policy, UnknownPolicy> {
        match text {
            "closest" => Ok(Policy::Closest),
            "least_cost" => Ok(Policy::LeastCost),
            "least_loaded" => Ok(Policy::LeastLoaded),
            _ => Err(UnknownPolicy(text.to_owned())),
        }
    }
}

/// What [`Config::parse`] names as the file of configuration text.
const INLINE: &str = "(control configuration)";

impl Config {
    /// Reads and checks the file at `path`; relative paths in it are taken from its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = estuary_proto::config::load(path)?;
        let folder = path.parent().unwrap_or(Path::new("."));
        for file in [
            config.geoip.as_mut(),
            config.coverage_zones.as_mut(),
            config
                .keycards
                .as_mut()
                .map(|keycards| &mut keycards.key_file),
            config.reports.key_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = folder.join(&*file);
            }
        }
        config.checked(path)
    }

    /// Parses and checks configuration text (the demo's, tests'). Errors say the line and
    /// what was expected.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let path = Path::new(INLINE);
        let config: Config = estuary_proto::config::parse(text, path)?;
        config.checked(path)
    }

    fn checked(self, path: &Path) -> Result<Config, ConfigError> {
        self.validate().map_err(|invalid| ConfigError::Invalid {
            path: path.to_owned(),
            invalid,
        })?;
        Ok(self)
    }

    /// Checks what the types cannot: names unique, locations on Earth, capacities above 0,
    /// origins usable, the report bounds and pins, timeouts above 0.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.default_group.is_empty() {
            return Err(Invalid::DefaultGroup);
        }
        for url in &self.origins {
            if crate::origins::base_of(url).is_none() {
                return Err(crate::origins::BadOrigin { url: url.clone() }.into());
            }
        }
        let mut names = std::collections::HashSet::new();
        for site in &self.sites {
            if site.name.is_empty() || !names.insert(site.name.as_str()) {
                return Err(Invalid::SiteName {
                    name: site.name.clone(),
                });
            }
            check_location(
                || format!("site {:?}", site.name),
                site.latitude,
                site.longitude,
            )?;
            // NaN fails both tests too.
            let usable = site.capacity_mbps > 0.0 && site.cost_per_gb >= 0.0;
            if !usable {
                return Err(Invalid::SiteCapacity {
                    name: site.name.clone(),
                });
            }
        }
        for zone in &self.zones {
            match (zone.latitude, zone.longitude) {
                (Some(latitude), Some(longitude)) => {
                    check_location(|| format!("zone {:?}", zone.name), latitude, longitude)?
                }
                (None, None) => {}
                _ => {
                    return Err(Invalid::HalfLocation {
                        name: zone.name.clone(),
                    });
                }
            }
        }
        self.validate_reports()?;
        let timeouts = &self.timeouts;
        for (name, timeout) in [
            ("header", timeouts.header),
            ("idle", timeouts.idle),
            ("write", timeouts.write),
        ] {
            if timeout.is_zero() {
                return Err(Invalid::Timeout(name));
            }
        }
        Ok(())
    }

    fn validate_reports(&self) -> Result<(), Invalid> {
        let reports = &self.reports;
        if reports.clock_window.is_zero() || reports.clock_window > Duration::from_secs(600) {
            return Err(Invalid::ClockWindow(reports.clock_window));
        }
        if reports.forget_after < crate::registry::LOST_AFTER {
            return Err(Invalid::ForgetAfter {
                given: reports.forget_after,
                lost: crate::registry::LOST_AFTER,
            });
        }
        let mut ids = std::collections::HashSet::new();
        for pin in &self.edges {
            let invalid = |problem: String| Invalid::Pin {
                id: pin.id.clone(),
                problem,
            };
            estuary_proto::report::check_name(&pin.id).map_err(invalid)?;
            if !ids.insert(pin.id.as_str()) {
                return Err(invalid("pinned twice".into()));
            }
            if !self.sites.iter().any(|site| site.name == pin.site) {
                return Err(invalid(format!(
                    "site {:?} is not among the sites",
                    pin.site
                )));
            }
            if let Some(url) = &pin.url {
                let whole = url.strip_suffix('*').unwrap_or(url);
                let checked = if whole.len() < url.len() {
                    // A prefix: what an edge's URL could start with.
                    estuary_proto::report::check_url(&format!("{whole}x"))
                        .or_else(|_| estuary_proto::report::check_url(&format!("{whole}1")))
                } else {
                    estuary_proto::report::check_url(url)
                };
                checked.map_err(|error| invalid(format!("url {url:?} {error}")))?;
            }
            if let Some(key_id) = &pin.key_id {
                estuary_proto::report::check_name(key_id)
                    .map_err(|error| invalid(format!("key_id {error}")))?;
            }
        }
        Ok(())
    }
}

impl PolicyConfig {
    /// The policy for `channel`.
    pub fn policy_for(&self, channel: &str) -> Policy {
        self.channels.get(channel).copied().unwrap_or(self.default)
    }
}

fn check_location(what: impl Fn() -> String, latitude: f64, longitude: f64) -> Result<(), Invalid> {
    if (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude) {
        Ok(())
    } else {
        Err(Invalid::Location {
            what: what(),
            latitude,
            longitude,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
geoip = "GeoIP2-City-Test.mmdb"
trusted_proxies = ["127.0.0.1/32"]
origins = ["http://127.0.0.1:8080"]

[keycards]
key_file = "keys.txt"
lifetime = "10m"

[policy]
default = "closest"
channels = { news = "least_cost" }

[[sites]]
name = "lon"
latitude = 51.5
longitude = -0.13
cost_per_gb = 0.02
capacity_mbps = 10000

[[zones]]
name = "office"
networks = ["192.0.2.0/24", "2001:db8::/32"]
latitude = 48.85
longitude = 2.35
"#;

    #[test]
    fn a_whole_file_reads() {
        let config = Config::parse(EXAMPLE).unwrap();
        assert_eq!(config.sites[0].name, "lon");
        assert_eq!(config.zones[0].networks.len(), 2);
        assert_eq!(config.policy.policy_for("news"), Policy::LeastCost);
        assert_eq!(config.policy.policy_for("sport"), Policy::Closest);
        assert_eq!(config.keycards.unwrap().lifetime, Duration::from_secs(600));
        assert_eq!(config.default_group, "default");
    }

    #[test]
    fn errors_name_the_line_and_what_was_expected() {
        let unknown = EXAMPLE.replace("cost_per_gb = 0.02", "cost_per_gb = 0.02\nspeed = 3");
        let error = Config::parse(&unknown).unwrap_err().to_string();
        assert!(error.contains("line 19"), "{error}");
        assert!(error.contains("unknown field `speed`"), "{error}");
        assert!(
            error.contains("capacity_mbps"),
            "it lists what is expected: {error}"
        );

        let bad_range = EXAMPLE.replace("192.0.2.0/24", "192.0.2.0/33");
        let error = Config::parse(&bad_range).unwrap_err().to_string();
        assert!(
            error.contains("line 23") && error.contains("prefix length"),
            "{error}"
        );

        let bad_policy = EXAMPLE.replace("\"least_cost\"", "\"cheapest\"");
        let error = Config::parse(&bad_policy).unwrap_err().to_string();
        assert!(
            error.contains("line 12") && error.contains("least_loaded"),
            "{error}"
        );

        let far = EXAMPLE.replace("latitude = 51.5", "latitude = 151.5");
        assert!(
            Config::parse(&far)
                .unwrap_err()
                .to_string()
                .contains("latitude")
        );
        let https = EXAMPLE.replace("http://127.0.0.1:8080", "https://packager");
        assert!(
            Config::parse(&https)
                .unwrap_err()
                .to_string()
                .contains("origin")
        );
        let twice = format!(
            "{EXAMPLE}\n[[sites]]\nname = \"lon\"\nlatitude = 1\nlongitude = 1\ncost_per_gb = 1\ncapacity_mbps = 1\n"
        );
        assert!(
            Config::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("unique")
        );
    }

    #[test]
    fn reports_pins_and_timeouts_have_defaults_and_are_checked() {
        let config = Config::parse(EXAMPLE).unwrap();
        assert_eq!(config.reports.key_file, None);
        assert_eq!(config.reports.clock_window, Duration::from_secs(30));
        assert_eq!(config.reports.forget_after, Duration::from_secs(60));
        assert!(!config.reports.pinned_only);
        assert!(config.edges.is_empty());
        assert_eq!(config.admin_listen, None);
        assert_eq!(
            config.timeouts,
            Timeouts {
                header: Duration::from_secs(10),
                idle: Duration::from_secs(60),
                write: Duration::from_secs(10),
            }
        );

        let full = format!(
            "admin_listen = \"127.0.0.1:8071\"\n{EXAMPLE}\n[reports]\nkey_file = \"report-keys.txt\"\n\
             clock_window = \"10s\"\nforget_after = \"5m\"\npinned_only = true\n\n\
             [timeouts]\nheader = \"5s\"\nidle = \"30s\"\nwrite = \"20s\"\n\n\
             [[edges]]\nid = \"lon-1\"\nsite = \"lon\"\nurl = \"https://lon-1.cdn.example:*\"\nkey_id = \"lon-1\"\n"
        );
        let config = Config::parse(&full).unwrap();
        assert_eq!(config.admin_listen, Some("127.0.0.1:8071".parse().unwrap()));
        assert_eq!(config.reports.clock_window, Duration::from_secs(10));
        assert_eq!(config.reports.forget_after, Duration::from_secs(300));
        assert!(config.reports.pinned_only);
        assert_eq!(config.timeouts.header, Duration::from_secs(5));
        assert_eq!(
            config.edges[0].url.as_deref(),
            Some("https://lon-1.cdn.example:*")
        );

        for (from, to, says) in [
            (
                "site = \"lon\"\nurl",
                "site = \"mars\"\nurl",
                "not among the sites",
            ),
            ("id = \"lon-1\"", "id = \"lon 1\"", "must be 1 to 64"),
            (
                "url = \"https://lon-1.cdn.example:*\"",
                "url = \"ftp://lon-1\"",
                "url",
            ),
            ("key_id = \"lon-1\"", "key_id = \"\"", "key_id"),
            (
                "forget_after = \"5m\"",
                "forget_after = \"1s\"",
                "forget_after",
            ),
            (
                "clock_window = \"10s\"",
                "clock_window = \"0s\"",
                "clock_window",
            ),
            ("header = \"5s\"", "header = \"0s\"", "timeouts"),
        ] {
            let error = Config::parse(&full.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{to}: {error}");
        }
        let twice = format!("{full}\n[[edges]]\nid = \"lon-1\"\nsite = \"lon\"\n");
        assert!(
            Config::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("pinned twice")
        );
    }

    #[test]
    fn timeouts_are_the_limits_of_every_connection() {
        let config =
            Config::parse("[timeouts]\nheader = \"5s\"\nidle = \"1m\"\nwrite = \"2s\"\n").unwrap();
        let limits = config.timeouts.limits();
        assert_eq!(limits.head_timeout, Duration::from_secs(5));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.write_timeout, Duration::from_secs(2));
        assert_eq!(limits.head_bytes, Limits::default().head_bytes);
        let error = Config::parse("listen = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1") && error.contains("listen"),
            "{error}"
        );
    }

    #[test]
    fn a_file_is_named_in_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        std::fs::write(&path, "[[sites]]\nname = \"lon\"\nlatitude = 95\nlongitude = 0\ncost_per_gb = 0\ncapacity_mbps = 1\n").unwrap();
        let error = Config::load(&path).unwrap_err();
        assert!(
            matches!(
                &error,
                ConfigError::Invalid {
                    invalid: Invalid::Location { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with(&path.display().to_string()),
            "{error}"
        );
        let missing = Config::load(&dir.path().join("absent.toml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("absent.toml"), "{missing}");
    }

    /// The example in deploy/ is a configuration control takes, and every key it shows (each
    /// with its default, commented) is in docs/control.md.
    #[test]
    fn the_deploy_example_loads_and_every_key_is_documented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/control.toml");
        let config = Config::load(&path).unwrap();
        let sites: Vec<&str> = config.sites.iter().map(|site| site.name.as_str()).collect();
        assert_eq!(sites, ["lon", "fra", "nyc"]);
        let docs = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/control.md"),
        )
        .unwrap();
        let example = std::fs::read_to_string(&path).unwrap();
        let mut table = String::new();
        let mut keys = Vec::new();
        for line in example.lines() {
            // Keys, and keys commented out (`# key = default`), under their tables.
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
                table = format!("{name}[].");
            } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
                table = format!("{name}.");
            } else if let Some((key, _)) = line.split_once(" = ")
                && !key.contains(' ')
                && !key.is_empty()
            {
                keys.push(format!("{table}{key}"));
            }
        }
        for key in [
            "listen",
            "admin_listen",
            "geoip",
            "coverage_zones",
            "default_group",
            "trusted_proxies",
            "origins",
            "admin_token",
            "keycards.key_file",
            "keycards.lifetime",
            "reports.key_file",
            "reports.clock_window",
            "reports.forget_after",
            "reports.pinned_only",
            "edges[].id",
            "edges[].url",
            "edges[].key_id",
            "timeouts.header",
            "timeouts.idle",
            "timeouts.write",
            "policy.default",
            "policy.channels",
            "sites[].name",
            "sites[].capacity_mbps",
            "zones[].networks",
        ] {
            assert!(
                keys.contains(&key.to_owned()),
                "deploy/control.toml does not show {key}: {keys:?}"
            );
        }
        for key in keys {
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/control.md does not document `{key}`"
            );
        }
    }
}
