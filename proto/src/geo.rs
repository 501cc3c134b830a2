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

    /// The ISO 3166-1 code of the country `address` is in, if the database knows it.
    pub fn country(&self, address: IpAddr) -> Option<String> {
        self.place(address).and_then(|place| place.country)
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
