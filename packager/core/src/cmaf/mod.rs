//! Reading CMAF as it arrives: a byte stream (an ingest POST's body, in whatever pieces the
//! network delivers) is cut into the track's header (`ftyp` + `moov`) and its chunks
//! (`[styp] moof mdat`) by the [`CmafReader`], without copying the bytes, and each is parsed
//! for what the packager needs: timescale and codec from the header; start, duration and
//! whether it starts with a sync sample from each chunk, and the samples themselves.
//!
//! Everything here reads what anyone who can reach the ingest port may send, so every count
//! and size a box declares is checked against the bounds below before anything is done with
//! it: nothing costs more than the bytes that were sent, and those are bounded too. Boxes are
//! found by their headers, and only those the packager uses (`mdhd`, `stsd`, `trex`; `tfhd`,
//! `tfdt`, `trun`) are handed to mp4-atom's decoders: whatever else a sender puts in a header
//! or a fragment is passed over unread.

mod chunk;
mod header;
mod reader;

pub use chunk::{Chunk, Sample, parse_chunk, samples};
pub use header::{CodecConfig, OpusConfig, TrackHeader, VpConfig, parse_header};
pub use reader::{CmafReader, Piece};

/// The largest header (`ftyp`, `moov` and whatever boxes come between): a real one is a few
/// kilobytes, parameter sets included.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// The largest chunk (`[styp] moof mdat` and the boxes beside them). A chunk of a live track
/// is a fraction of a second; a whole 2 s segment sent as one chunk of 4K video at 50 Mbit/s
/// is about 12 MB.
pub const MAX_CHUNK_BYTES: usize = 32 << 20;

/// The largest sample (a 4K keyframe is a few megabytes).
pub const MAX_SAMPLE_BYTES: u32 = 16 << 20;

/// The most samples one chunk may declare, whatever its `mdat` holds: a 10 s chunk of Opus in
/// 2.5 ms frames has 4000, of 60 fps video 600.
pub const MAX_SAMPLES_PER_CHUNK: u64 = 8192;

/// Boxes that are neither the header's `ftyp`/`moov` nor a chunk's `moof`/`mdat` (`styp`,
/// `prft`, `emsg`, `free`…) kept with the unit they precede: at most this many…
pub const MAX_SIDE_BOXES: usize = 16;

/// …and this many bytes of them, so that a stream of boxes that never reaches a `moof` or an
/// `mdat` cannot make the reader's buffer grow.
pub const MAX_SIDE_BYTES: usize = 256 << 10;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CmafError {
    #[error(
        "the {unit} would be at least {size} bytes with this {kind:?} box; the largest accepted is {limit}"
    )]
    UnitTooLarge {
        unit: &'static str,
        kind: String,
        size: u64,
        limit: usize,
    },
    #[error(
        "more than {MAX_SIDE_BOXES} boxes or {MAX_SIDE_BYTES} bytes of boxes other than moof and mdat ({kind:?} is one too many)"
    )]
    TooManySideBoxes { kind: String },
    #[error("a second moof box came before the first one's mdat")]
    MoofWithoutMdat,
    #[error("box header is invalid: size {size} for a {kind:?} box")]
    BadBoxSize { kind: String, size: u64 },
    #[error("this is not CMAF: {0:02x?} is not a box type (four printable characters)")]
    NotABox([u8; 4]),
    #[error("a {kind:?} box came before the CMAF header (ftyp + moov)")]
    NoHeader { kind: String },
    #[error("an mdat box came without a moof before it")]
    MdatWithoutMoof,
    #[error("the {0} box does not parse: {1}")]
    Unparsable(&'static str, String),
    #[error("the header has no {0}")]
    MissingInHeader(&'static str),
    #[error("the chunk has no {0}")]
    MissingInChunk(&'static str),
    #[error("the chunk declares {declared} samples; the most accepted is {MAX_SAMPLES_PER_CHUNK}")]
    TooManySamples { declared: u64 },
    #[error(
        "the chunk declares {declared} samples but its mdat holds {bytes} bytes (a sample takes at least one)"
    )]
    SamplesBeyondMdat { declared: u64, bytes: usize },
    #[error("sample {index} claims {size} bytes; the largest accepted is {MAX_SAMPLE_BYTES}")]
    SampleTooLarge { index: u64, size: u32 },
    #[error("the samples add up to more than the {bytes} bytes of the mdat (from sample {index})")]
    SamplesOverflowMdat { index: u64, bytes: usize },
    #[error("sample {index} lies outside the mdat")]
    SampleOutsideMdat { index: u64 },
    #[error("the samples' decode times run past the largest time a track can have")]
    TimeOverflow,
    #[error("codec {0:?} is not supported (H.264, VP8, VP9, AAC, MP3 and Opus are)")]
    UnsupportedCodec(String),
    #[error("the stream ended inside a {kind:?} box ({missing} bytes missing)")]
    Truncated { kind: String, missing: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Media {
    /// `codec` is the RFC 6381 string for CODECS attributes, e.g. `avc1.64001f`.
    Video {
        codec: String,
        width: u16,
        height: u16,
    },
    Audio {
        codec: String,
        sample_rate: u32,
        channels: u16,
    },
}

impl Media {
    pub fn codec(&self) -> &str {
        match self {
            Media::Video { codec, .. } | Media::Audio { codec, .. } => codec,
        }
    }
}
