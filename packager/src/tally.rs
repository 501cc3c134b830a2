//! What the packager counts for `/metrics` outside the window (whose tracks carry their own
//! counters): refused ingests by reason, and requests by kind. Refusals are counted by the
//! reason alone, a fixed set, so nothing a refused request named ever becomes a label.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an ingest was refused: the label of `estuary_packager_ingest_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No keycard, or one that does not let its holder ingest this track.
    Keycard,
    /// The channel or track name is not allowed.
    Name,
    /// The stream is not CMAF, or a box breaks a bound.
    Cmaf,
    /// A chunk came before any header.
    NoHeader,
    /// The channel has as many tracks as it may.
    TooManyTracks,
    /// The packager has as many channels as it may.
    TooManyChannels,
    /// A chunk ends too far ahead of the packager's clock.
    AheadOfClock,
    /// Nothing arrived for the ingest timeout.
    Stalled,
    /// The body broke off (the connection failed mid-request).
    BrokenBody,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::Keycard,
        Refusal::Name,
        Refusal::Cmaf,
        Refusal::NoHeader,
        Refusal::TooManyTracks,
        Refusal::TooManyChannels,
        Refusal::AheadOfClock,
        Refusal::Stalled,
        Refusal::BrokenBody,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Keycard => "keycard",
            Refusal::Name => "name",
            Refusal::Cmaf => "cmaf",
            Refusal::NoHeader => "no_header",
            Refusal::TooManyTracks => "too_many_tracks",
            Refusal::TooManyChannels => "too_many_channels",
            Refusal::AheadOfClock => "ahead_of_clock",
            Refusal::Stalled => "stalled",
            Refusal::BrokenBody => "broken_body",
        }
    }

    /// Its place in [`Refusal::ALL`], which lists the reasons in the order they are declared.
    fn index(self) -> usize {
        self as usize
    }
}

/// How many ingests were refused, per reason.
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; Refusal::ALL.len()]);

impl Refusals {
    pub fn count(&self, reason: Refusal) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: Refusal) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }
}

/// Requests for media and playlists, by kind (what an edge in front saves shows here).
#[derive(Debug, Default)]
pub struct Requests(Mutex<BTreeMap<&'static str, u64>>);

impl Requests {
    pub fn count(&self, kind: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub fn get(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
