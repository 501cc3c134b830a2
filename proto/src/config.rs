//! Configuration files, read the same way by every role: TOML, unknown keys refused by the
//! role's types, and every error naming the file, the line and what was expected. The value
//! types operators write in them are here too: byte sizes (`256MiB`), durations (`2s`, see
//! [`crate::duration`]) and address ranges ([`crate::net::Cidr`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration file that could not be read or understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    /// What was wrong, with the line and column when the TOML parser knows them.
    pub message: String,
}

/// Reads the TOML file at `path` into a role's configuration.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        path: path.to_owned(),
        message: format!("cannot read it: {error}"),
    })?;
    parse(&text, path)
}

/// Parses configuration `text`, said to come from `path`.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| ConfigError {
        path: path.to_owned(),
        // toml's message starts "TOML parse error at line L, column C" and shows the line.
        message: error.to_string().trim_end().to_owned(),
    })
}

/// A number of bytes, as operators write it: `1048576`, `512KB`, `256MiB`, `2GiB` (decimal
/// units are powers of 1000, binary ones of 1024).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a size: write a number and a unit, e.g. 64KiB, 256MiB or 2GB (B, KB, MB, GB, KiB, MiB, GiB)"
)]
pub struct BadSize(pub String);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, BadSize> {
        let bad = || BadSize(text.to_owned());
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(bad()),
        };
        number.checked_mul(scale).map(ByteSize).ok_or_else(bad)
    }

    /// The size as a `usize` (saturating on a 32-bit machine).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl std::str::FromStr for ByteSize {
    type Err = BadSize;

    fn from_str(text: &str) -> Result<Self, BadSize> {
        ByteSize::parse(text)
    }
}

/// Written as text (`"256MiB"`) or a plain number of bytes.
impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(ByteSize(bytes)),
            Written::Text(text) => ByteSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        cache: ByteSize,
        #[serde(with = "crate::duration::text")]
        ttl: std::time::Duration,
    }

    #[test]
    fn sizes_are_read_as_operators_write_them() {
        assert_eq!(ByteSize::parse("256MiB"), Ok(ByteSize(256 << 20)));
        assert_eq!(ByteSize::parse("2 GB"), Ok(ByteSize(2_000_000_000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        for bad in ["", "MiB", "12 parsecs", "-1KB", "99999999999999999999GiB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
    }

    #[test]
    fn files_are_read_with_errors_naming_the_file_and_the_line() {
        let path = Path::new("deploy/example.toml");
        let example: Example = parse("cache = \"64KiB\"\nttl = \"2s\"\n", path).unwrap();
        assert_eq!(example.cache, ByteSize(64 << 10));
        assert_eq!(example.ttl, std::time::Duration::from_secs(2));
        let numbered: Example = parse("cache = 1024\nttl = \"1m\"\n", path).unwrap();
        assert_eq!(numbered.cache, ByteSize(1024));
        let error = parse::<Example>("cache = \"64KiB\"\nttl = \"2s\"\ncolour = 1\n", path)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("deploy/example.toml: "), "{error}");
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("colour"), "{error}");
        let error = parse::<Example>("cache = \"lots\"\nttl = \"2s\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1") && error.contains("not a size"),
            "{error}"
        );
        let missing = load::<Example>(Path::new("/nonexistent/edge.toml")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/edge.toml"),
            "{missing}"
        );
    }
}
