//! The packager's core, sans IO: CMAF headers and chunks of each channel's tracks in; parts,
//! segments and events out, over a window of recent segments held as shared `Bytes`.
//!
//! Media time is UTC (DESIGN.md "Media time is UTC"), so a chunk's segment is
//! `floor(utc / segment_duration)` and every track of a channel, and every redundant ingest of
//! a track, agrees on segment numbers without talking to the others. Parts are numbered within
//! their segment in the order they begin. The first copy of a part wins; later copies (from a
//! redundant encoder, or a reconnecting one that repeats itself) are dropped.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use estuary_proto::url::{ChannelName, TrackName};

use crate::cmaf::{Chunk, TrackHeader};

/// Timestamps this close below a segment boundary count as on it (rounding between
/// timescales).
const BOUNDARY_TOLERANCE_NS: u128 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    pub segment: Duration,
    /// How much recent media each track keeps.
    pub window: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            segment: Duration::from_secs(2),
            window: Duration::from_secs(60),
        }
    }
}

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

/// The window of one track.
#[derive(Clone, Debug)]
pub struct TrackWindow {
    pub header: TrackHeader,
    segments: BTreeMap<u64, Segment>,
    /// Where the newest accepted part ends, in ticks.
    end: Option<u64>,
    /// The next segment begins a new timeline (after a header change).
    discontinuity_pending: bool,
    /// The longest part ever taken, in ticks: LL-HLS PART-TARGET may never be below it.
    longest_part: u64,
    /// Discontinuities that have left the window (HLS EXT-X-DISCONTINUITY-SEQUENCE).
    evicted_discontinuities: u64,
}

impl TrackWindow {
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
}

/// What changed; the origin wakes blocked playlist requests and the archive keeps evicted
/// segments from these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    TrackStarted {
        channel: ChannelName,
        track: TrackName,
    },
    HeaderChanged {
        channel: ChannelName,
        track: TrackName,
    },
    PartAdded {
        channel: ChannelName,
        track: TrackName,
        segment: u64,
        part: usize,
        independent: bool,
    },
    SegmentCompleted {
        channel: ChannelName,
        track: TrackName,
        segment: u64,
    },
    /// Segments that never came: the ingest stopped or lost media.
    Gap {
        channel: ChannelName,
        track: TrackName,
        missing: Range<u64>,
    },
    /// Left the window; the archive may keep it.
    Evicted {
        channel: ChannelName,
        track: TrackName,
        segment: Segment,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("track {track} of channel {channel} has sent no CMAF header yet")]
    NoHeader {
        channel: ChannelName,
        track: TrackName,
    },
}

/// What happened to a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    New(Vec<Event>),
    /// A copy of media the window already has (redundant ingest): dropped.
    Duplicate,
}

/// Every channel's tracks.
#[derive(Debug, Default)]
pub struct Window {
    config: WindowConfig,
    tracks: BTreeMap<(ChannelName, TrackName), TrackWindow>,
}

impl Window {
    pub fn new(config: WindowConfig) -> Self {
        Self {
            config,
            tracks: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> WindowConfig {
        self.config
    }

    pub fn track(&self, channel: &ChannelName, track: &TrackName) -> Option<&TrackWindow> {
        self.tracks.get(&(channel.clone(), track.clone()))
    }

    /// The tracks of `channel`, by name.
    pub fn tracks<'a>(
        &'a self,
        channel: &'a ChannelName,
    ) -> impl Iterator<Item = (&'a TrackName, &'a TrackWindow)> + 'a {
        self.tracks
            .iter()
            .filter(move |((name, _), _)| name == channel)
            .map(|((_, track), window)| (track, window))
    }

    /// A track's header arrived (at the start of every ingest connection). The same header
    /// again changes nothing: a reconnecting ingest continues its track.
    pub fn push_header(
        &mut self,
        channel: &ChannelName,
        track: &TrackName,
        header: TrackHeader,
    ) -> Vec<Event> {
        let key = (channel.clone(), track.clone());
        match self.tracks.get_mut(&key) {
            None => {
                self.tracks.insert(
                    key,
                    TrackWindow {
                        header,
                        segments: BTreeMap::new(),
                        end: None,
                        discontinuity_pending: false,
                        longest_part: 0,
                        evicted_discontinuities: 0,
                    },
                );
                vec![Event::TrackStarted {
                    channel: channel.clone(),
                    track: track.clone(),
                }]
            }
            Some(window) if window.header.bytes == header.bytes => Vec::new(),
            Some(window) => {
                if window.header.timescale != header.timescale {
                    // Times in the old timescale mean nothing in the new one.
                    window.end = None;
                }
                window.header = header;
                window.discontinuity_pending = true;
                vec![Event::HeaderChanged {
                    channel: channel.clone(),
                    track: track.clone(),
                }]
            }
        }
    }

    /// A chunk of a track arrived.
    pub fn push_chunk(
        &mut self,
        channel: &ChannelName,
        track: &TrackName,
        chunk: Chunk,
    ) -> Result<Accepted, WindowError> {
        let segment_ns = self.config.segment.as_nanos();
        let window_segments = (self.config.window.as_nanos() / segment_ns).max(1) as u64;
        let window = self
            .tracks
            .get_mut(&(channel.clone(), track.clone()))
            .ok_or_else(|| WindowError::NoHeader {
                channel: channel.clone(),
                track: track.clone(),
            })?;
        // A copy from a redundant encoder starts a whole part before the end; timestamps
        // rounded between timescales may start the next part a tick early, which is new media.
        let rounding = chunk.duration / (2 * u64::from(chunk.samples.max(1)));
        if window.end.is_some_and(|end| chunk.start + rounding < end) {
            return Ok(Accepted::Duplicate);
        }
        let utc_ns = u128::from(chunk.start) * 1_000_000_000 / u128::from(window.header.timescale);
        let number = ((utc_ns + BOUNDARY_TOLERANCE_NS) / segment_ns) as u64;
        let newest = window.segments.keys().next_back().copied();
        if newest.is_some_and(|newest| number < newest) {
            // Starts after the newest part ends but maps to an older segment: the clock of this
            // copy disagrees with the first one's; the first copy wins.
            return Ok(Accepted::Duplicate);
        }

        let mut events = Vec::new();
        let who = || (channel.clone(), track.clone());
        if let Some(newest) = newest
            && number > newest
        {
            if let Some(previous) = window.segments.get_mut(&newest)
                && !previous.complete
            {
                previous.complete = true;
                let (channel, track) = who();
                events.push(Event::SegmentCompleted {
                    channel,
                    track,
                    segment: newest,
                });
            }
            if number > newest + 1 {
                let (channel, track) = who();
                events.push(Event::Gap {
                    channel,
                    track,
                    missing: newest + 1..number,
                });
            }
        }
        let segment = window.segments.entry(number).or_insert_with(|| Segment {
            number,
            parts: Vec::new(),
            complete: false,
            discontinuity: newest.is_some_and(|newest| number > newest + 1),
        });
        if std::mem::take(&mut window.discontinuity_pending) {
            segment.discontinuity = true;
        }
        let (start, duration, independent) = (chunk.start, chunk.duration, chunk.independent);
        segment.parts.push(chunk);
        window.longest_part = window.longest_part.max(duration);
        window.end = Some(start + duration);
        let (channel_name, track_name) = who();
        events.push(Event::PartAdded {
            channel: channel_name,
            track: track_name,
            segment: number,
            part: segment.parts.len() - 1,
            independent,
        });
        // A part that reaches the next boundary completes its segment now, not when the next
        // segment begins: a player streaming the segment gets its end without waiting a part.
        let end_ns =
            u128::from(start + duration) * 1_000_000_000 / u128::from(window.header.timescale);
        if end_ns + BOUNDARY_TOLERANCE_NS >= (u128::from(number) + 1) * segment_ns {
            segment.complete = true;
            let (channel, track) = who();
            events.push(Event::SegmentCompleted {
                channel,
                track,
                segment: number,
            });
        }

        while let Some(oldest) = window.segments.first_entry() {
            if *oldest.key() + window_segments > number {
                break;
            }
            let (channel, track) = who();
            events.push(Event::Evicted {
                channel,
                track,
                segment: oldest.remove(),
            });
        }
        Ok(Accepted::New(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::{self, CmafReader, Piece};
    use crate::testing::{self, DAY_START_SECONDS, TrackSpec, parsed_chunk as chunk};
    use proptest::prelude::*;

    fn names(track: &str) -> (ChannelName, TrackName) {
        (
            ChannelName::new("demo").unwrap(),
            TrackName::new(track).unwrap(),
        )
    }

    fn header(spec: &TrackSpec) -> TrackHeader {
        let pieces = CmafReader::new().push(&testing::header(spec)).unwrap();
        let Piece::Header(bytes) = &pieces[0] else {
            panic!("a header")
        };
        cmaf::parse_header(bytes.clone()).unwrap()
    }

    fn push(window: &mut Window, track: &str, chunk: Chunk) -> Vec<Event> {
        let (channel, track) = names(track);
        match window.push_chunk(&channel, &track, chunk).unwrap() {
            Accepted::New(events) => events,
            Accepted::Duplicate => panic!("a new chunk was taken for a duplicate"),
        }
    }

    fn first_segment() -> u64 {
        DAY_START_SECONDS / 2
    }

    #[test]
    fn segments_are_numbered_by_utc_and_parts_within_them() {
        let spec = TrackSpec::video();
        let header = header(&spec);
        let mut window = Window::new(WindowConfig::default());
        let (channel, track) = names("v720");
        window.push_header(&channel, &track, header.clone());
        for index in 0..13 {
            push(&mut window, "v720", chunk(&spec, &header, index));
        }
        let track = window.track(&channel, &track).unwrap();
        let numbers: Vec<u64> = track.segments().map(|s| s.number).collect();
        assert_eq!(
            numbers,
            [first_segment(), first_segment() + 1, first_segment() + 2]
        );
        let first = track.segment(first_segment()).unwrap();
        assert!(first.complete && !first.discontinuity);
        assert_eq!(first.parts.len(), 6);
        assert!(first.parts[0].independent && !first.parts[1].independent);
        assert_eq!(first.duration(), spec.segment_ticks());
        assert_eq!(track.newest(), Some((first_segment() + 2, 1)));
        // A whole segment is its parts, byte for byte, sharing their memory.
        let body: Vec<Bytes> = first.body().collect();
        assert_eq!(body.len(), 6);
        assert!(
            body.iter()
                .zip(&first.parts)
                .all(|(b, p)| b.as_ptr() == p.bytes.as_ptr())
        );
        assert_eq!(first.len(), body.iter().map(Bytes::len).sum::<usize>());
        // And it parses as one CMAF stream again after the header.
        let mut reader = CmafReader::new();
        reader.push(&testing::header(&spec)).unwrap();
        let pieces: Vec<Piece> = body.iter().flat_map(|b| reader.push(b).unwrap()).collect();
        assert_eq!(pieces.len(), 6);
    }

    #[test]
    fn tracks_align_and_a_late_track_joins_on_the_same_numbers() {
        let video = TrackSpec::video();
        let audio = TrackSpec::audio();
        let (video_header, audio_header) = (header(&video), header(&audio));
        let mut window = Window::new(WindowConfig::default());
        let (channel, v720) = names("v720");
        let (_, a128) = names("a128");
        window.push_header(&channel, &v720, video_header.clone());
        for index in 0..18 {
            push(&mut window, "v720", chunk(&video, &video_header, index));
        }
        // Audio starts a segment later, with chunks of 16 AAC frames (not a divisor of 2 s).
        window.push_header(&channel, &a128, audio_header.clone());
        let audio_start = (DAY_START_SECONDS + 2) * 48_000;
        let mut start = audio_start;
        while start < (DAY_START_SECONDS + 6) * 48_000 {
            let bytes = testing::chunk(&audio, 0, start, audio.samples_per_chunk);
            let parsed = cmaf::parse_chunk(Bytes::from(bytes), &audio_header).unwrap();
            start += parsed.duration;
            push(&mut window, "a128", parsed);
        }
        let video_numbers: Vec<u64> = window
            .track(&channel, &v720)
            .unwrap()
            .segments()
            .map(|s| s.number)
            .collect();
        let audio_numbers: Vec<u64> = window
            .track(&channel, &a128)
            .unwrap()
            .segments()
            .map(|s| s.number)
            .collect();
        assert_eq!(audio_numbers, video_numbers[1..]);
    }

    #[test]
    fn an_ingest_gap_is_reported_and_marked_as_a_discontinuity() {
        let spec = TrackSpec::video();
        let header = header(&spec);
        let mut window = Window::new(WindowConfig::default());
        let (channel, track) = names("v360");
        window.push_header(&channel, &track, header.clone());
        for index in 0..6 {
            push(&mut window, "v360", chunk(&spec, &header, index));
        }
        // Two segments (12 chunks) never arrive.
        let events = push(&mut window, "v360", chunk(&spec, &header, 18));
        assert!(events.contains(&Event::Gap {
            channel: channel.clone(),
            track: track.clone(),
            missing: first_segment() + 1..first_segment() + 3,
        }));
        let after = window
            .track(&channel, &track)
            .unwrap()
            .segment(first_segment() + 3)
            .unwrap();
        assert!(after.discontinuity);
        assert!(
            window
                .track(&channel, &track)
                .unwrap()
                .segment(first_segment() + 1)
                .is_none()
        );
    }

    #[test]
    fn redundant_ingests_first_copy_wins() {
        let spec = TrackSpec::video();
        let header = header(&spec);
        let mut window = Window::new(WindowConfig::default());
        let (channel, track) = names("v720");
        window.push_header(&channel, &track, header.clone());
        // A second encoder sends the same header and the same chunks, a little behind.
        assert!(
            window
                .push_header(&channel, &track, header.clone())
                .is_empty()
        );
        for index in 0..8 {
            push(&mut window, "v720", chunk(&spec, &header, index));
            if index > 0 {
                let copy = chunk(&spec, &header, index - 1);
                assert_eq!(
                    window.push_chunk(&channel, &track, copy).unwrap(),
                    Accepted::Duplicate
                );
            }
        }
        // The first encoder stops; the second one's next chunk is new media and is taken.
        assert!(matches!(
            window
                .push_chunk(&channel, &track, chunk(&spec, &header, 8))
                .unwrap(),
            Accepted::New(_)
        ));
        let parts: usize = window
            .track(&channel, &track)
            .unwrap()
            .segments()
            .map(|s| s.parts.len())
            .sum();
        assert_eq!(parts, 9);
    }

    #[test]
    fn a_part_starting_a_tick_early_is_new_media() {
        let spec = TrackSpec::audio();
        let header = header(&spec);
        let mut window = Window::new(WindowConfig::default());
        let (channel, track) = names("a128");
        window.push_header(&channel, &track, header.clone());
        let first = chunk(&spec, &header, 0);
        let end = first.start + first.duration;
        push(&mut window, "a128", first);
        // AAC frame times rounded from nanoseconds: the next part begins one tick early.
        let bytes = testing::chunk(&spec, 1, end - 1, spec.samples_per_chunk);
        let early = cmaf::parse_chunk(Bytes::from(bytes), &header).unwrap();
        assert!(matches!(
            window.push_chunk(&channel, &track, early).unwrap(),
            Accepted::New(_)
        ));
    }

    #[test]
    fn old_segments_leave_the_window() {
        let spec = TrackSpec::video();
        let header = header(&spec);
        let config = WindowConfig {
            segment: Duration::from_secs(2),
            window: Duration::from_secs(10),
        };
        let mut window = Window::new(config);
        let (channel, track) = names("v720");
        window.push_header(&channel, &track, header.clone());
        let mut evicted = Vec::new();
        for index in 0..6 * 8 {
            for event in push(&mut window, "v720", chunk(&spec, &header, index)) {
                if let Event::Evicted { segment, .. } = event {
                    assert!(segment.complete);
                    evicted.push(segment.number);
                }
            }
        }
        // Eight segments were made; a 10 s window keeps the newest five.
        assert_eq!(
            evicted,
            (0..3).map(|n| first_segment() + n).collect::<Vec<_>>()
        );
        assert_eq!(
            window.track(&channel, &track).unwrap().segments().count(),
            5
        );
    }

    #[test]
    fn a_changed_header_starts_a_new_timeline() {
        let spec = TrackSpec::video();
        let first = header(&spec);
        let mut window = Window::new(WindowConfig::default());
        let (channel, track) = names("v720");
        window.push_header(&channel, &track, first.clone());
        push(&mut window, "v720", chunk(&spec, &first, 0));
        let mut second = first.clone();
        second.bytes = Bytes::from_static(b"another encoder configuration");
        assert_eq!(
            window.push_header(&channel, &track, second.clone()),
            [Event::HeaderChanged {
                channel: channel.clone(),
                track: track.clone()
            }]
        );
        push(&mut window, "v720", chunk(&spec, &second, 6));
        let segment = window
            .track(&channel, &track)
            .unwrap()
            .segment(first_segment() + 1)
            .unwrap();
        assert!(segment.discontinuity);
    }

    #[test]
    fn chunks_before_a_header_are_refused() {
        let spec = TrackSpec::video();
        let header = header(&spec);
        let mut window = Window::new(WindowConfig::default());
        let (channel, track) = names("v720");
        let error = window
            .push_chunk(&channel, &track, chunk(&spec, &header, 0))
            .unwrap_err();
        assert!(error.to_string().contains("no CMAF header"), "{error}");
    }

    proptest! {
        /// Whatever order, loss and duplication the network brings, numbering only grows, parts
        /// follow each other, and nothing outside the window is kept.
        #[test]
        fn numbering_only_grows(steps in proptest::collection::vec((0u64..4, any::<bool>()), 1..120)) {
            let spec = TrackSpec::video();
            let header = header(&spec);
            let config = WindowConfig { segment: Duration::from_secs(2), window: Duration::from_secs(20) };
            let mut window = Window::new(config);
            let (channel, track) = names("v720");
            window.push_header(&channel, &track, header.clone());
            let mut index = 0u64;
            let mut last_part = None;
            for (skip, repeat) in steps {
                index += skip;
                let copy = repeat && index > 0;
                let at = if copy { index - 1 } else { index };
                let outcome = window.push_chunk(&channel, &track, chunk(&spec, &header, at)).unwrap();
                for event in match outcome { Accepted::New(events) => events, Accepted::Duplicate => Vec::new() } {
                    if let Event::PartAdded { segment, part, .. } = event {
                        prop_assert!(last_part.is_none_or(|last| (segment, part) > last));
                        last_part = Some((segment, part));
                    }
                }
                if !copy { index += 1; }
                let track_window = window.track(&channel, &track).unwrap();
                let numbers: Vec<u64> = track_window.segments().map(|s| s.number).collect();
                prop_assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]));
                prop_assert!(numbers.last().unwrap() - numbers.first().unwrap() < 10);
                for segment in track_window.segments() {
                    for pair in segment.parts.windows(2) {
                        prop_assert!(pair[0].start + pair[0].duration <= pair[1].start);
                    }
                }
            }
        }
    }
}
