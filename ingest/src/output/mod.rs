//! Where a track's CMAF goes once it leaves the muxer: files (`--out`) and receivers (`--to`).
//!
//! Outputs are fed from GStreamer's streaming threads and must never block them: a slow or
//! absent receiver costs that output its chunks, never the pipeline its timing.

mod file;
mod http;

pub use file::FileOutput;
pub use http::{HttpOutput, HttpTarget};

use bytes::Bytes;

/// What the muxer produced for one track.
#[derive(Clone, Debug)]
pub enum TrackEvent {
    /// The CMAF header (`ftyp` + `moov`), sent again to every new receiver connection.
    Header(Bytes),
    /// One CMAF chunk (`moof` + `mdat`); `fragment_start` when it begins a segment.
    Chunk { data: Bytes, fragment_start: bool },
}

pub trait TrackOutput: Send + Sync {
    fn push(&self, event: &TrackEvent);
    /// No more events will come: flush and end.
    fn finish(&self);
}
