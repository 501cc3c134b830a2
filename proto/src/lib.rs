//! What crosses a process boundary in Estuary: the public and ingest URL layout, keycards (the
//! EdgeAuth 2.0 compatible tokens every role checks), moods (how a component says how it is),
//! the reports edges send to control, address ranges and client addresses, and the framing of
//! continuous streams between packager and edge. Plain types and sans-IO functions: no runtime.

pub mod chunks;
pub mod config;
pub mod duration;
#[cfg(feature = "geo")]
pub mod geo;
pub mod icy;
pub mod keycard;
pub mod mood;
pub mod net;
pub mod report;
pub mod systemd;
pub mod url;
pub mod utc;

pub use keycard::{Grant, Keycard, KeycardError, KeycardKey, KeycardRequest, parse_key_file};
pub use mood::Mood;
