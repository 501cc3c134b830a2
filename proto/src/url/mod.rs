//! The URL layout shared by every role (DESIGN.md "Public URL layout" and "CMAF ingest"), and the
//! rules for the names that appear in it. [`PublicPath`] is the public layout as a type: every
//! role decides what a request is by parsing it into one, and nothing else.
//!
//! Channel and track names go into URLs and file names, so they are restricted to characters
//! that need no escaping anywhere: ASCII letters, digits, `-` and `_`.

mod parse;
mod public;

pub use public::{
    Blocking, CacheClass, LiveObject, PublicPath, PublicPathError, Script, Skip, StreamFormat,
    VodObject, VodRange,
};

use std::fmt;

/// The path prefix under which a packager receives CMAF tracks.
pub const INGEST_PREFIX: &str = "/ingest";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} name {name:?} is not allowed: use 1 to 64 ASCII letters, digits, '-' or '_'")]
pub struct BadName {
    pub kind: &'static str,
    pub name: String,
}

fn check_name(kind: &'static str, name: &str) -> Result<(), BadName> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if (1..=64).contains(&name.len()) && name.chars().all(allowed) {
        Ok(())
    } else {
        Err(BadName {
            kind,
            name: name.to_owned(),
        })
    }
}

/// A channel: one live programme, with several tracks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    pub fn new(name: &str) -> Result<Self, BadName> {
        check_name("channel", name).map(|()| Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CMAF track of a channel: `v720` is video 720 lines high, `a128` is audio at 128 kbit/s.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackName(String);

impl TrackName {
    pub fn new(name: &str) -> Result<Self, BadName> {
        check_name("track", name).map(|()| Self(name.to_owned()))
    }

    /// The conventional name of a video rendition `height` lines high.
    pub fn video(height: u32) -> Self {
        Self(format!("v{height}"))
    }

    /// The conventional name of an audio track at `kbps` kilobits per second.
    pub fn audio(kbps: u32) -> Self {
        Self(format!("a{kbps}"))
    }

    /// The MP3 track beside a channel's main audio, for `stream.mp3`.
    pub fn mp3(kbps: u32) -> Self {
        Self(format!("mp3-{kbps}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `/ingest/{channel}/{track}`: where a packager receives one CMAF track.
pub fn ingest_path(channel: &ChannelName, track: &TrackName) -> String {
    format!("{INGEST_PREFIX}/{channel}/{track}")
}

/// The ACL that lets an ingest send every track of `channel`.
pub fn ingest_acl(channel: &ChannelName) -> String {
    format!("{INGEST_PREFIX}/{channel}/*")
}

/// `text` with its `%XX` escapes decoded (invalid UTF-8 replaced); a `%` not followed by two
/// hex digits is kept as it is.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[index], hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                index += 3;
            }
            (byte, ..) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(ChannelName::new("demo-1_b").is_ok());
        for bad in ["", "a/b", "ü", "a b", "..", &"x".repeat(65)] {
            let error = ChannelName::new(bad).unwrap_err();
            assert_eq!(error.name, bad);
        }
    }

    #[test]
    fn ingest_layout() {
        let channel = ChannelName::new("demo").unwrap();
        assert_eq!(
            ingest_path(&channel, &TrackName::video(720)),
            "/ingest/demo/v720"
        );
        assert_eq!(ingest_acl(&channel), "/ingest/demo/*");
        assert_eq!(TrackName::audio(128).as_str(), "a128");
    }
}
