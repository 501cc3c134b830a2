//! Coverage zones: named sets of client address ranges with a location, looked up by longest
//! prefix. Zones come from control's configuration or from a coverage-zone file in Apache
//! Traffic Control's JSON format:
//!
//! ```json
//! { "coverageZones": { "zone": { "network": ["192.0.2.0/24"], "network6": ["2001:db8::/32"],
//!                                "coordinates": { "latitude": 51.5, "longitude": -0.13 } } } }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use estuary_proto::net::Cidr;
use serde::Deserialize;

use crate::config::Zone;

/// The zones, indexed for longest-prefix lookups: for each prefix length in use (longest
/// first), the networks of that length.
#[derive(Debug, Default)]
pub struct Coverage {
    zones: Vec<Zone>,
    v4: Vec<(u8, HashMap<u32, usize>)>,
    v6: Vec<(u8, HashMap<u128, usize>)>,
}

impl Coverage {
    pub fn new(zones: Vec<Zone>) -> Coverage {
        let mut v4: BTreeMap<u8, HashMap<u32, usize>> = BTreeMap::new();
        let mut v6: BTreeMap<u8, HashMap<u128, usize>> = BTreeMap::new();
        for (index, zone) in zones.iter().enumerate() {
            for network in &zone.networks {
                // The first zone to name a network keeps it.
                match network.network() {
                    IpAddr::V4(address) => {
                        v4.entry(network.prefix())
                            .or_default()
                            .entry(u32::from(address))
                            .or_insert(index);
                    }
                    IpAddr::V6(address) => {
                        v6.entry(network.prefix())
                            .or_default()
                            .entry(u128::from(address))
                            .or_insert(index);
                    }
                }
            }
        }
        Coverage {
            zones,
            v4: v4.into_iter().rev().collect(),
            v6: v6.into_iter().rev().collect(),
        }
    }

    /// The zone with the longest network that holds `address`.
    pub fn zone(&self, address: IpAddr) -> Option<&Zone> {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        let index = match address {
            IpAddr::V4(address) => {
                let address = u32::from(address);
                self.v4.iter().find_map(|(prefix, networks)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                    networks.get(&(address & mask)).copied()
                })
            }
            IpAddr::V6(address) => {
                let address = u128::from(address);
                self.v6.iter().find_map(|(prefix, networks)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                    networks.get(&(address & mask)).copied()
                })
            }
        }?;
        self.zones.get(index)
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrafficControlFile {
    coverage_zones: BTreeMap<String, TrafficControlZone>,
}

#[derive(Deserialize)]
struct TrafficControlZone {
    #[serde(default)]
    network: Vec<Cidr>,
    #[serde(default)]
    network6: Vec<Cidr>,
    coordinates: Option<Coordinates>,
}

#[derive(Deserialize)]
struct Coordinates {
    latitude: f64,
    longitude: f64,
}

/// Why a coverage-zone file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "line {line}, column {column}: {reason} (expected a coverage-zone file: {{\"coverageZones\": {{NAME: {{\"network\": [...], \"network6\": [...], \"coordinates\": {{...}}}}}}}})"
    )]
    Parse {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: Box<CoverageError>,
    },
}

/// Reads a coverage-zone file in Apache Traffic Control's format.
pub fn read_traffic_control(path: &Path) -> Result<Vec<Zone>, CoverageError> {
    let text = std::fs::read_to_string(path).map_err(|source| CoverageError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_traffic_control(&text).map_err(|error| CoverageError::File {
        path: path.to_owned(),
        source: Box::new(error),
    })
}

/// Parses a coverage-zone file in Apache Traffic Control's format.
pub fn parse_traffic_control(text: &str) -> Result<Vec<Zone>, CoverageError> {
    let file: TrafficControlFile =
        serde_json::from_str(text).map_err(|error| CoverageError::Parse {
            line: error.line(),
            column: error.column(),
            reason: error.to_string(),
        })?;
    Ok(file
        .coverage_zones
        .into_iter()
        .map(|(name, zone)| Zone {
            name,
            networks: zone.network.into_iter().chain(zone.network6).collect(),
            latitude: zone.coordinates.as_ref().map(|c| c.latitude),
            longitude: zone.coordinates.as_ref().map(|c| c.longitude),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, networks: &[&str]) -> Zone {
        Zone {
            name: name.into(),
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            latitude: None,
            longitude: None,
        }
    }

    #[test]
    fn the_longest_prefix_wins() {
        let coverage = Coverage::new(vec![
            zone("wide", &["10.0.0.0/8", "2001:db8::/32"]),
            zone("narrow", &["10.1.2.0/24", "2001:db8:1::/48"]),
            zone("host", &["10.1.2.3"]),
        ]);
        let name = |address: &str| {
            coverage
                .zone(address.parse().unwrap())
                .map(|z| z.name.as_str())
        };
        assert_eq!(name("10.9.9.9"), Some("wide"));
        assert_eq!(name("10.1.2.4"), Some("narrow"));
        assert_eq!(name("10.1.2.3"), Some("host"));
        assert_eq!(name("::ffff:10.1.2.3"), Some("host"));
        assert_eq!(name("11.0.0.1"), None);
        assert_eq!(name("2001:db8:1::5"), Some("narrow"));
        assert_eq!(name("2001:db8:2::5"), Some("wide"));
        assert_eq!(name("2001:db9::1"), None);
    }

    #[test]
    fn traffic_control_files_are_read() {
        let text = r#"{
            "revision": "Mon Dec 21 15:04:29 2015",
            "customerName": "Example",
            "coverageZones": {
                "office": {
                    "coordinates": { "latitude": 48.85, "longitude": 2.35 },
                    "network6": ["2001:db8::/32"],
                    "network": ["192.0.2.0/24", "198.51.100.0/24"]
                },
                "lab": { "network": ["203.0.113.0/24"] }
            }
        }"#;
        let zones = parse_traffic_control(text).unwrap();
        assert_eq!(zones.len(), 2);
        let office = zones.iter().find(|z| z.name == "office").unwrap();
        assert_eq!(office.networks.len(), 3);
        assert_eq!(
            (office.latitude, office.longitude),
            (Some(48.85), Some(2.35))
        );
        let error =
            parse_traffic_control("{\"coverageZones\": {\"x\": {\"network\": [\"nope\"]}}}")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("line 1") && error.contains("nope"),
            "{error}"
        );
    }
}
