//! Control's configuration file (TOML): the sites, coverage zones (inline, or an Apache Traffic
//! Control coverage-zone file), the GeoIP database, keycards, and the routing policy. Unknown
//! keys are errors, and every error names the file and the line.

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
    /// The bearer token that the admin API's changes (policy, forgetting an edge) need;
    /// without one, the admin API is read-only.
    pub admin_token: Option<String>,
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
}
