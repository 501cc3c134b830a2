//! Where addresses are, from a MaxMind DB file: GeoIP2/GeoLite2 city databases give a country,
//! a city and a location; country databases (MaxMind's `country.iso_code`, or the plain
//! `country_code` of free ones) give the country alone.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub struct GeoDatabase {
    reader: maxminddb::Reader<Vec<u8>>,
    description: String,
}

/// What the database says about an address.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Place {
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    city: Option<City<'a>>,
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct City<'a> {
    #[serde(borrow)]
    names: Option<Names<'a>>,
}

/// The city's name in English; the other languages are skipped, not decoded.
#[derive(Deserialize)]
struct Names<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl GeoDatabase {
    /// Opens the database, or says which file is unusable and why.
    pub fn open(path: &Path) -> Result<GeoDatabase, String> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|error| format!("the GeoIP database {}: {error}", path.display()))?;
        let description = format!("{} ({})", path.display(), reader.metadata.database_type);
        Ok(GeoDatabase {
            reader,
            description,
        })
    }

    /// Where `address` is, if the database knows it.
    pub fn place(&self, address: IpAddr) -> Option<Place> {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        let found = self.reader.lookup(address).ok()?;
        let record: Record = found.decode().ok()??;
        let location = record.location.as_ref();
        let place = Place {
            country: record
                .country
                .and_then(|country| country.iso_code)
                .or(record.country_code)
                .map(str::to_ascii_uppercase),
            city: record
                .city
                .and_then(|city| city.names)
                .and_then(|names| names.en.map(str::to_owned)),
            latitude: location.and_then(|l| l.latitude),
            longitude: location.and_then(|l| l.longitude),
        };
        (place != Place::default()).then_some(place)
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}

impl std::fmt::Debug for GeoDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// Builds a small city database for tests: each address range with a country, a city and a
/// location, as MaxMind's GeoIP2-City records write them.
#[cfg(any(test, feature = "testing"))]
pub fn test_database(places: &[(&str, &str, &str, f64, f64)]) -> Vec<u8> {
    use mmdb_writer::Writer;
    use mmdb_writer::ipnet::IpNet;
    let mut writer = Writer::new("Estuary-Test-City");
    for (network, country, city, latitude, longitude) in places {
        let record = serde_json::json!({
            "country": { "iso_code": country },
            "city": { "names": { "en": city } },
            "location": { "latitude": latitude, "longitude": longitude },
        });
        writer
            .insert(network.parse::<IpNet>().expect("a test network"), &record)
            .expect("a test record");
    }
    writer.to_bytes().expect("writing to memory")
}
