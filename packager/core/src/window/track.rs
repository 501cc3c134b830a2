//! One track's window: its segments and parts, where its timeline stands, and its counters.
//! [`Window`](super::Window) decides what a chunk is; this keeps what it decided.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::{Event, Who};
use crate::cmaf::{Chunk, TrackHeader};

/// One part: a CMAF chunk as received (LL-HLS `INDEPENDENT=YES` when it starts with a sync
/// sample).
pub type Part = Chunk;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// `floor(utc start / segment duration)`.
    pub number: u64,
    pub parts: Vec<Part>,
    /// No part will be added: the next segment has begun.
    pub complete: bool,
    /// The timeline does not continue from the segment before it in the window: segments are
    /// missing before it, or the track's header changed (HLS EXT-X-DISCONTINUITY).
    pub discontinuity: bool,
}

impl Segment {
    pub fn start(&self) -> u64 {
        self.parts.first().map_or(0, |part| part.start)
    }

    pub fn duration(&self) -> u64 {
        self.parts.iter().map(|part| part.duration).sum()
    }

    /// The whole CMAF segment, as served at `{msn}.m4s`: its parts' shared bytes one after the
    /// other, to be written in turn (never joined into a copy per viewer).
    pub fn body(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.parts.iter().map(|part| part.bytes.clone())
    }

    /// Bytes of the whole segment, for Content-Length.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|part| part.bytes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// What happened to a track's chunks, for `/metrics`: they live and go with the track.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackCounters {
    pub parts: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub timeline_resets: u64,
}

/// The window of one track.
#[derive(Clone, Debug)]
pub struct TrackWindow {
    pub header: TrackHeader,
    pub(super) segments: BTreeMap<u64, Segment>,
    /// Where the newest accepted part ends, in ticks.
    pub(super) end: Option<u64>,
    /// The next segment begins a new timeline (after a header change).
    pub(super) discontinuity_pending: bool,
    /// The longest part ever taken, in ticks: LL-HLS PART-TARGET may never be below it.
    pub(super) longest_part: u64,
    /// Discontinuities that have left the window (HLS EXT-X-DISCONTINUITY-SEQUENCE).
    pub(super) evicted_discontinuities: u64,
    /// When (packager clock) the track last took something new: its header or a new part.
    pub(super) fed_at: Duration,
    /// When the newest part was taken.
    pub(super) last_part: Option<Duration>,
    pub(super) counters: TrackCounters,
}

impl TrackWindow {
    pub(super) fn new(header: TrackHeader, now: Duration) -> Self {
        TrackWindow {
            header,
            segments: BTreeMap::new(),
            end: None,
            discontinuity_pending: false,
            longest_part: 0,
            evicted_discontinuities: 0,
            fed_at: now,
            last_part: None,
            counters: TrackCounters::default(),
        }
    }

    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &Segment> {
        self.segments.values()
    }

    pub fn segment(&self, number: u64) -> Option<&Segment> {
        self.segments.get(&number)
    }

    pub fn part(&self, segment: u64, part: usize) -> Option<&Part> {
        self.segments.get(&segment)?.parts.get(part)
    }

    pub fn longest_part(&self) -> u64 {
        self.longest_part
    }

    pub fn evicted_discontinuities(&self) -> u64 {
        self.evicted_discontinuities
    }

    pub fn counters(&self) -> TrackCounters {
        self.counters
    }

    /// When the newest part was taken (packager clock, since the Unix epoch).
    pub fn last_part(&self) -> Option<Duration> {
        self.last_part
    }

    /// The newest segment and how many parts it has so far.
    pub fn newest(&self) -> Option<(u64, usize)> {
        self.segments
            .values()
            .next_back()
            .map(|segment| (segment.number, segment.parts.len()))
    }

    /// Peak and average bits per second over the window: the peak of complete segments, the
    /// average of everything held (so a track that just started has a figure too).
    pub fn bandwidth(&self) -> (u64, u64) {
        let timescale = f64::from(self.header.timescale);
        let (mut peak, mut bytes, mut seconds) = (0f64, 0usize, 0f64);
        for segment in self.segments().filter(|s| s.duration() > 0) {
            let duration = segment.duration() as f64 / timescale;
            if segment.complete {
                peak = peak.max(segment.len() as f64 * 8.0 / duration);
            }
            bytes += segment.len();
            seconds += duration;
        }
        let average = if seconds > 0.0 {
            bytes as f64 * 8.0 / seconds
        } else {
            0.0
        };
        (peak.max(average).ceil() as u64, average.ceil() as u64)
    }

    /// Samples per second over the window (frames per second for video).
    pub fn frame_rate(&self) -> f64 {
        let (samples, ticks) = self
            .segments()
            .flat_map(|segment| &segment.parts)
            .fold((0u64, 0u64), |(samples, ticks), part| {
                (samples + u64::from(part.samples), ticks + part.duration)
            });
        if ticks == 0 {
            return 0.0;
        }
        samples as f64 * f64::from(self.header.timescale) / ticks as f64
    }

    /// `ticks` of the track's clock in nanoseconds of UTC.
    pub(super) fn nanos(&self, ticks: u64) -> u128 {
        u128::from(ticks) * 1_000_000_000 / u128::from(self.header.timescale.max(1))
    }

    /// Removes the segments older than `keep` segments before `newest`.
    pub(super) fn evict(&mut self, newest: u64, keep: u64, who: &Who) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(oldest) = self.segments.first_entry() {
            if oldest.key().saturating_add(keep) > newest {
                break;
            }
            let segment = oldest.remove();
            self.evicted_discontinuities += u64::from(segment.discontinuity);
            events.push(Event::Evicted {
                channel: who.0.clone(),
                track: who.1.clone(),
                segment,
            });
        }
        events
    }
}

impl TrackWindow {
    /// Ends the track's timeline: every segment leaves the window (the archive has kept the
    /// whole ones), and the next one begins a discontinuity.
    pub(super) fn reset(&mut self, who: &Who) -> Vec<Event> {
        let mut events = self.evict(u64::MAX, 0, who);
        self.end = None;
        self.discontinuity_pending = true;
        self.counters.timeline_resets += 1;
        events.push(Event::TimelineReset {
            channel: who.0.clone(),
            track: who.1.clone(),
            header: self.header.clone(),
        });
        events
    }
}
