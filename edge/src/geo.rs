//! Countries of addresses, from a MaxMind DB file (GeoIP2/GeoLite2 country or city databases,
//! whose records say `country.iso_code`, and the plain `country_code` of free databases such
//! as geo-whois-asn-country). The reader is shared with control, in proto.

pub use estuary_proto::geo::GeoDatabase as CountryDatabase;

/// GeoIP databases written for tests, in both schemas (also for other crates' tests, with the
/// `testing` feature).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use mmdb_writer::ipnet::IpNet;
    use mmdb_writer::{Value, Writer};

    /// A database in MaxMind's GeoIP2 schema (`country.iso_code`) with 81.2.69.0/24 in GB and
    /// 89.160.20.0/24 in SE, or in the plain schema (`country_code`) with 8.8.8.0/24 in US.
    pub fn database(maxmind_schema: bool) -> Vec<u8> {
        let mut writer = Writer::new(if maxmind_schema {
            "Test-GeoIP2-Country"
        } else {
            "Test-geo-whois-asn-country"
        });
        let entries: &[(&str, &str)] = if maxmind_schema {
            &[("81.2.69.0/24", "GB"), ("89.160.20.0/24", "SE")]
        } else {
            &[("8.8.8.0/24", "US")]
        };
        for (network, code) in entries {
            let record = if maxmind_schema {
                Value::map([("country", Value::map([("iso_code", Value::from(*code))]))])
            } else {
                Value::map([("country_code", Value::from(*code))])
            };
            writer
                .insert_value(network.parse::<IpNet>().unwrap(), record)
                .unwrap();
        }
        writer.to_bytes().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn both_schemas_give_countries() {
        let dir = tempfile::tempdir().unwrap();
        for (maxmind, address, expected) in [
            (true, "81.2.69.142", Some("GB")),
            (true, "89.160.20.112", Some("SE")),
            (true, "::ffff:89.160.20.112", Some("SE")),
            (true, "8.8.8.8", None),
            (false, "8.8.8.8", Some("US")),
        ] {
            let path = dir.path().join(format!("{maxmind}.mmdb"));
            std::fs::write(&path, testing::database(maxmind)).unwrap();
            let database = CountryDatabase::open(&path).unwrap();
            assert_eq!(
                database.country(address.parse().unwrap()).as_deref(),
                expected,
                "{address}"
            );
        }
        assert!(CountryDatabase::open(Path::new("/nonexistent.mmdb")).is_err());
    }
}
