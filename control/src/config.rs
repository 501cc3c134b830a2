//! Control's configuration file (TOML): the sites, coverage zones (inline, or an Apache Traffic
//! Control coverage-zone file), the GeoIP database, keycards, the routing policy, how edge
//! reports are authenticated (report keys, pins), and the connection timeouts. Unknown keys are
//! errors, and every error names the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_proto::net::Cidr;
use serde::{Deserialize, Serialize};

/// The file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where control listens, unless `--listen` says otherwise.
    pub listen: Option<String>,
    /// Where the admin API and the dashboard listen on their own, unless `--admin-listen` says
    /// otherwise. None: they share `listen` with the redirects.
    pub admin_listen: Option<String>,
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
    type Err = String;

    fn from_str(text: &str) -> Result<Policy, String> {
        match text {
            "closest" => Ok(Policy::Closest),
            "least_cost" => Ok(Policy::LeastCost),
            "least_loaded" => Ok(Policy::LeastLoaded),
            _ => Err(format!(
                "unknown policy {text:?}: expected closest, least_cost or least_loaded"
            )),
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`; relative paths in it are taken from its folder.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let mut config =
            Config::parse(&text).map_err(|error| format!("{}: {error}", path.display()))?;
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
        Ok(config)
    }

    /// Parses and checks configuration text. Errors say the line and what was expected.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|error| {
            // toml's message starts "TOML parse error at line L, column C" and shows the line.
            error.to_string().trim_end().to_owned()
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        for url in &self.origins {
            crate::origins::base_of(url)?;
        }
        let mut names = std::collections::HashSet::new();
        for site in &self.sites {
            if site.name.is_empty() || !names.insert(site.name.as_str()) {
                return Err(format!(
                    "site {:?}: names must be non-empty and unique",
                    site.name
                ));
            }
            check_location(
                &format!("site {:?}", site.name),
                site.latitude,
                site.longitude,
            )?;
            // NaN fails both tests too.
            let usable = site.capacity_mbps > 0.0 && site.cost_per_gb >= 0.0;
            if !usable {
                return Err(format!(
                    "site {:?}: capacity_mbps must be above 0 and cost_per_gb at least 0",
                    site.name
                ));
            }
        }
        self.check_reports()?;
        for zone in &self.zones {
            match (zone.latitude, zone.longitude) {
                (Some(latitude), Some(longitude)) => {
                    check_location(&format!("zone {:?}", zone.name), latitude, longitude)?
                }
                (None, None) => {}
                _ => {
                    return Err(format!(
                        "zone {:?}: give both latitude and longitude, or neither",
                        zone.name
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    fn check_reports(&self) -> Result<(), String> {
        let reports = &self.reports;
        if reports.clock_window.is_zero() || reports.clock_window > Duration::from_secs(600) {
            return Err("reports.clock_window must be above 0 and at most 10m".into());
        }
        if reports.forget_after < crate::registry::LOST_AFTER {
            return Err(format!(
                "reports.forget_after must be at least {:?}, when a silent edge is lost",
                crate::registry::LOST_AFTER
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for pin in &self.edges {
            let what = format!("edge {:?}", pin.id);
            estuary_proto::report::check_name(&pin.id)
                .map_err(|error| format!("{what}: {error}"))?;
            if !ids.insert(pin.id.as_str()) {
                return Err(format!("{what}: pinned twice"));
            }
            if !self.sites.iter().any(|site| site.name == pin.site) {
                return Err(format!(
                    "{what}: site {:?} is not among the sites",
                    pin.site
                ));
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
                checked.map_err(|error| format!("{what}: url {url:?} {error}"))?;
            }
            if let Some(key_id) = &pin.key_id {
                estuary_proto::report::check_name(key_id)
                    .map_err(|error| format!("{what}: key_id {error}"))?;
            }
        }
        let timeouts = &self.timeouts;
        if timeouts.header.is_zero() || timeouts.idle.is_zero() || timeouts.write.is_zero() {
            return Err("timeouts.header, timeouts.idle and timeouts.write must be above 0".into());
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

fn check_location(what: &str, latitude: f64, longitude: f64) -> Result<(), String> {
    if (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude) {
        Ok(())
    } else {
        Err(format!(
            "{what}: latitude must be within ±90 and longitude within ±180, not {latitude}, {longitude}"
        ))
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
        let error = Config::parse(&unknown).unwrap_err();
        assert!(error.contains("line 19"), "{error}");
        assert!(error.contains("unknown field `speed`"), "{error}");
        assert!(
            error.contains("capacity_mbps"),
            "it lists what is expected: {error}"
        );

        let bad_range = EXAMPLE.replace("192.0.2.0/24", "192.0.2.0/33");
        let error = Config::parse(&bad_range).unwrap_err();
        assert!(
            error.contains("line 23") && error.contains("prefix length"),
            "{error}"
        );

        let bad_policy = EXAMPLE.replace("\"least_cost\"", "\"cheapest\"");
        let error = Config::parse(&bad_policy).unwrap_err();
        assert!(
            error.contains("line 12") && error.contains("least_loaded"),
            "{error}"
        );

        let far = EXAMPLE.replace("latitude = 51.5", "latitude = 151.5");
        assert!(Config::parse(&far).unwrap_err().contains("latitude"));
        let https = EXAMPLE.replace("http://127.0.0.1:8080", "https://packager");
        assert!(Config::parse(&https).unwrap_err().contains("origin"));
        let twice = format!(
            "{EXAMPLE}\n[[sites]]\nname = \"lon\"\nlatitude = 1\nlongitude = 1\ncost_per_gb = 1\ncapacity_mbps = 1\n"
        );
        assert!(Config::parse(&twice).unwrap_err().contains("unique"));
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
        assert_eq!(config.admin_listen.as_deref(), Some("127.0.0.1:8071"));
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
            let error = Config::parse(&full.replace(from, to)).unwrap_err();
            assert!(error.contains(says), "{to}: {error}");
        }
        let twice = format!("{full}\n[[edges]]\nid = \"lon-1\"\nsite = \"lon\"\n");
        assert!(Config::parse(&twice).unwrap_err().contains("pinned twice"));
    }
}
