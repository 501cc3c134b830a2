//! Where addresses are: the GeoIP database reader is shared with the edge (in proto); this
//! module adds the city database that tests write.

pub use estuary_proto::geo::{GeoDatabase, Place};

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
