//! The packager's configuration. An operator writes a [`Config`] (`deploy/packager.toml`, or
//! `estuary packager` flags over it, each of which is also an `ESTUARY_*` variable); it
//! resolves into the [`Settings`] the packager runs with: keys decoded, the admin token kept
//! for constant-time comparison, the window's bounds checked against each other.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_http::Limits;
use estuary_packager_core::window::WindowConfig;
use estuary_proto::config;
use estuary_proto::duration::text as duration;
use estuary_proto::keycard::{KeycardError, KeycardKey};
use serde::Deserialize;

use crate::auth::{AdminToken, AdminTokenError};
use crate::error::PackagerError;

/// The whole file; every key may be left out for its default.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where ingest (`/ingest/{channel}/{track}`) and players (`/live/…`) connect.
    pub listen: SocketAddr,
    /// The segment duration the ingests use; a segment's number is `floor(utc / segment)`.
    #[serde(with = "duration")]
    pub segment: Duration,
    /// How much recent media each track keeps.
    #[serde(with = "duration")]
    pub window: Duration,
    /// The most tracks a channel may have; an ingest of one more is refused (503).
    pub max_tracks: usize,
    /// The most channels the packager holds; an ingest of one more is refused (503).
    pub max_channels: usize,
    /// A track that takes no header or new chunk for this long is retired.
    #[serde(with = "duration")]
    pub retire_after: Duration,
    /// The hex key ingest keycards must be signed with; none: ingest is open, which only a
    /// loopback `listen` (or `open_ingest`) allows.
    pub keycard_secret: Option<String>,
    /// The id of `keycard_secret` (keycards naming another key are refused).
    pub keycard_key_id: Option<String>,
    /// Accept ingest without keycards on an address that is not loopback.
    pub open_ingest: bool,
    /// The token `/admin/metadata` accepts (at least 16 characters).
    pub admin_token: Option<String>,
    /// How long a request head may take (from the connection opening, or the last response).
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// An ingest body that brings nothing for this long is refused (408).
    #[serde(with = "duration")]
    pub ingest_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// The folder of the player page (web/); none serves no page.
    pub web: Option<PathBuf>,
    /// Where whole segments are kept for VOD; none keeps only the window.
    pub archive: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let window = WindowConfig::default();
        let limits = Limits::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            segment: window.segment,
            window: window.window,
            max_tracks: window.max_tracks,
            max_channels: window.max_channels,
            retire_after: window.retire_after,
            keycard_secret: None,
            keycard_key_id: None,
            open_ingest: false,
            admin_token: None,
            header_timeout: limits.head_timeout,
            ingest_timeout: INGEST_TIMEOUT,
            idle_timeout: limits.idle_timeout,
            web: Some(PathBuf::from("web")),
            archive: None,
        }
    }
}

/// Never shows the keycard secret or the admin token.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "…");
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("segment", &self.segment)
            .field("window", &self.window)
            .field("max_tracks", &self.max_tracks)
            .field("max_channels", &self.max_channels)
            .field("retire_after", &self.retire_after)
            .field("keycard_secret", &hidden(&self.keycard_secret))
            .field("keycard_key_id", &self.keycard_key_id)
            .field("open_ingest", &self.open_ingest)
            .field("admin_token", &hidden(&self.admin_token))
            .field("header_timeout", &self.header_timeout)
            .field("ingest_timeout", &self.ingest_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("web", &self.web)
            .field("archive", &self.archive)
            .finish()
    }
}

/// The default `ingest_timeout`: an ingest sends a chunk every part, a third of a second.
const INGEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration the packager cannot run with: the key (as the file spells it), and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "window ({window:?}) must hold at least one segment ({segment:?}), which must be longer than zero"
    )]
    WindowShorterThanSegment { window: Duration, segment: Duration },
    #[error("{key} must be at least 1")]
    NoRoom { key: &'static str },
    #[error("retire_after ({retire_after:?}) must be at least one segment ({segment:?})")]
    RetiredTooSoon {
        retire_after: Duration,
        segment: Duration,
    },
    #[error("{key} must be longer than zero")]
    ZeroTimeout { key: &'static str },
    #[error("keycard_secret: {0}")]
    BadKeycardSecret(KeycardError),
    #[error("admin_token: {0}")]
    BadAdminToken(AdminTokenError),
}

impl Config {
    /// Reads `path`; errors name the file, the line and what was expected.
    pub fn load(path: &Path) -> Result<Config, config::ConfigError> {
        config::load(path)
    }

    /// What the packager runs with, every value checked.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        if self.segment.is_zero() || self.window < self.segment {
            return Err(ConfigError::WindowShorterThanSegment {
                window: self.window,
                segment: self.segment,
            });
        }
        for (key, value) in [
            ("max_tracks", self.max_tracks),
            ("max_channels", self.max_channels),
        ] {
            if value == 0 {
                return Err(ConfigError::NoRoom { key });
            }
        }
        if self.retire_after < self.segment {
            return Err(ConfigError::RetiredTooSoon {
                retire_after: self.retire_after,
                segment: self.segment,
            });
        }
        for (key, value) in [
            ("header_timeout", self.header_timeout),
            ("ingest_timeout", self.ingest_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroTimeout { key });
            }
        }
        let keys = match &self.keycard_secret {
            Some(secret) => vec![
                KeycardKey::from_hex(self.keycard_key_id.as_deref(), secret)
                    .map_err(ConfigError::BadKeycardSecret)?,
            ],
            None => Vec::new(),
        };
        let admin_token = self
            .admin_token
            .as_deref()
            .map(AdminToken::new)
            .transpose()
            .map_err(ConfigError::BadAdminToken)?;
        Ok(Settings {
            listen: self.listen,
            window: WindowConfig {
                segment: self.segment,
                window: self.window,
                max_tracks: self.max_tracks,
                max_channels: self.max_channels,
                retire_after: self.retire_after,
            },
            keys,
            open_ingest: self.open_ingest,
            admin_token,
            limits: Limits {
                head_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                ..Limits::default()
            },
            ingest_timeout: self.ingest_timeout,
            web: self.web.clone(),
            archive: self.archive.clone(),
        })
    }
}

/// What the packager runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub window: WindowConfig,
    /// Keys an ingest's keycard must be signed with; none means ingest is open, which only a
    /// loopback address, or `open_ingest`, allows.
    pub keys: Vec<KeycardKey>,
    /// Accept ingest without keycards on an address other than loopback.
    pub open_ingest: bool,
    /// The token `/admin/*` accepts besides an ingest keycard.
    pub admin_token: Option<AdminToken>,
    /// What a client's requests and connections may take: head size, head and idle timeouts.
    pub limits: Limits,
    /// An ingest body that brings nothing for this long is refused and its connection closed
    /// (the ingest sends a chunk every part, a third of a second).
    pub ingest_timeout: Duration,
    /// Where the player page lives (web/); none serves no page.
    pub web: Option<PathBuf>,
    /// Where whole segments are kept for VOD; none keeps only the window.
    pub archive: Option<PathBuf>,
}

impl Settings {
    /// Ingest on `listen` needs keycards unless `listen` is loopback or these settings open it
    /// on purpose.
    pub fn check_ingest_is_guarded(&self, listen: SocketAddr) -> Result<(), PackagerError> {
        let loopback = listen.ip().to_canonical().is_loopback();
        if !loopback && self.keys.is_empty() && !self.open_ingest {
            return Err(PackagerError::OpenIngest { address: listen });
        }
        Ok(())
    }

    /// A packager on `listen` with the defaults: open ingest (so `listen` must be loopback
    /// unless keys are added), no admin token, no player page, no archive.
    pub fn new(listen: SocketAddr) -> Self {
        Settings {
            listen,
            window: WindowConfig::default(),
            keys: Vec::new(),
            open_ingest: false,
            admin_token: None,
            limits: Limits::default(),
            ingest_timeout: INGEST_TIMEOUT,
            web: None,
            archive: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, config::ConfigError> {
        config::parse(text, Path::new("deploy/packager.toml"))
    }

    /// The example in deploy/ shows every key: those with a default set to it, the others
    /// commented out; as it is, it reads as the defaults.
    #[test]
    fn the_example_file_holds_every_key_at_its_default() {
        let example = include_str!("../../deploy/packager.toml");
        assert_eq!(parse(example).unwrap(), Config::default());
        for key in [
            "listen",
            "segment",
            "window",
            "max_tracks",
            "max_channels",
            "retire_after",
            "keycard_secret",
            "keycard_key_id",
            "open_ingest",
            "admin_token",
            "header_timeout",
            "ingest_timeout",
            "idle_timeout",
            "web",
            "archive",
        ] {
            let set = format!("\n{key} = ");
            let shown = format!("\n# {key} = ");
            assert!(
                example.contains(&set) || example.contains(&shown),
                "{key} is not in the example"
            );
        }
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let error = parse("window = \"60s\"\nsegmnet = \"2s\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("deploy/packager.toml: "), "{error}");
        assert!(
            error.contains("line 2") && error.contains("segmnet"),
            "{error}"
        );
        let error = parse("max_tracks = 4\nwindow = \"a minute\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");

        let short = parse("window = \"1s\"\n").unwrap().resolve().unwrap_err();
        assert!(short.to_string().starts_with("window (1s)"), "{short}");
        let none = parse("max_channels = 0\n").unwrap().resolve().unwrap_err();
        assert_eq!(none.to_string(), "max_channels must be at least 1");
        let zero = parse("idle_timeout = \"0s\"\n")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(zero.to_string(), "idle_timeout must be longer than zero");
        let token = parse("admin_token = \"short\"\n")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(token.to_string().starts_with("admin_token: "), "{token}");
        let secret = parse("keycard_secret = \"xyz\"\n")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            secret.to_string().starts_with("keycard_secret: "),
            "{secret}"
        );
    }

    #[test]
    fn a_file_sets_what_the_packager_runs_with_and_hides_its_secrets() {
        let config = parse(
            "listen = \"0.0.0.0:9000\"\nsegment = \"4s\"\nwindow = \"2m\"\n\
             keycard_secret = \"00112233445566778899aabbccddeeff\"\nkeycard_key_id = \"k1\"\n\
             admin_token = \"0123456789abcdef\"\narchive = \"/srv/archive\"\n",
        )
        .unwrap();
        let settings = config.resolve().unwrap();
        assert_eq!(settings.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(settings.window.segment, Duration::from_secs(4));
        assert_eq!(settings.window.window, Duration::from_secs(120));
        assert_eq!(settings.keys.len(), 1);
        assert!(settings.admin_token.is_some());
        assert_eq!(settings.archive, Some(PathBuf::from("/srv/archive")));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("0011223344") && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
    }
}
