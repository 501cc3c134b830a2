//! What a change of the window did, as the window says it: each event carries what those who
//! follow the window need (the part, the whole segment, the new header), so that they act on
//! it without reading the window again. The service hands these to its subscribers (the
//! continuous streams, the archive) and wakes blocked requests.

use std::ops::Range;

use bytes::Bytes;
use estuary_proto::url::{ChannelName, TrackName};

use super::{Part, Segment};
use crate::cmaf::TrackHeader;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A track's first header: it exists now.
    TrackStarted {
        channel: ChannelName,
        track: TrackName,
        header: TrackHeader,
    },
    /// A track's header changed (its next segment begins a discontinuity).
    HeaderChanged {
        channel: ChannelName,
        track: TrackName,
        header: TrackHeader,
    },
    /// Part `part` of segment `segment` landed: `chunk` is it, its bytes shared.
    PartAdded {
        channel: ChannelName,
        track: TrackName,
        segment: u64,
        part: usize,
        chunk: Part,
    },
    /// A segment is whole: no part will be added. `header` is the CMAF header its parts play
    /// with.
    SegmentCompleted {
        channel: ChannelName,
        track: TrackName,
        segment: Segment,
        header: Bytes,
    },
    /// Segments that never came: the ingest stopped or lost media.
    Gap {
        channel: ChannelName,
        track: TrackName,
        missing: Range<u64>,
    },
    /// Left the window.
    Evicted {
        channel: ChannelName,
        track: TrackName,
        segment: Segment,
    },
    /// The track went back further than its window holds and starts a new timeline: every
    /// segment it had has left the window (with its own `Evicted` event). `header` is the
    /// track's, unchanged.
    TimelineReset {
        channel: ChannelName,
        track: TrackName,
        header: TrackHeader,
    },
    /// The track took nothing new for
    /// [`WindowConfig::retire_after`](super::WindowConfig::retire_after), or its first ingest
    /// was refused before it sent a chunk: it is gone, with its counters.
    TrackRetired {
        channel: ChannelName,
        track: TrackName,
    },
    /// The channel's last track was retired: the channel is gone too.
    ChannelRetired { channel: ChannelName },
}
