//! The packager's core, sans IO: CMAF headers and chunks of each channel's tracks in; parts,
//! segments and events out, over a window of recent segments held as shared `Bytes`. The
//! packager's clock is passed in (`now`, UTC since the Unix epoch) with every change.
//!
//! Media time is UTC (DESIGN.md "Media time is UTC"), so a chunk's segment is
//! `floor(utc / segment_duration)` and every track of a channel, and every redundant ingest of
//! a track, agrees on segment numbers without talking to the others. Parts are numbered within
//! their segment in the order they begin. The first copy of a part wins; later copies (from a
//! redundant encoder, or a reconnecting one that repeats itself) are dropped.
//!
//! Because a chunk's time decides where everything after it goes, it is checked against the
//! packager's clock: a chunk that ends more than [`MAX_SEGMENTS_AHEAD`] segments ahead of it is
//! refused (it would make every real chunk after it look like a copy), and a track that jumps
//! back further than its window holds, once nothing has fed its timeline for a segment, starts
//! a new timeline instead of being dropped as a copy for ever (see [`Window::push_chunk`]).

use std::collections::BTreeMap;
use std::time::Duration;

use estuary_proto::url::{ChannelName, TrackName};

use crate::cmaf::{Chunk, TrackHeader};

mod event;
mod track;

pub use event::Event;
pub use track::{Part, Segment, TrackCounters, TrackWindow};

/// Timestamps this close below a segment boundary count as on it (rounding between
/// timescales).
const BOUNDARY_TOLERANCE_NS: u128 = 1_000;

/// How far ahead of the packager's clock a chunk may end, in segments: ingest hosts' clocks may
/// be this far off (see docs/packager.md, "Clocks"), and no further.
pub const MAX_SEGMENTS_AHEAD: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    pub segment: Duration,
    /// How much recent media each track keeps.
    pub window: Duration,
    /// The most tracks one channel may have.
    pub max_tracks: usize,
    /// The most channels the packager holds.
    pub max_channels: usize,
    /// A track that has taken nothing new (header or chunk) for this long is retired.
    pub retire_after: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            segment: Duration::from_secs(2),
            window: Duration::from_secs(60),
            max_tracks: 16,
            max_channels: 64,
            retire_after: Duration::from_secs(120),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("track {track} of channel {channel} has sent no CMAF header yet")]
    NoHeader {
        channel: ChannelName,
        track: TrackName,
    },
    #[error("channel {channel} already has {limit} tracks, the most this packager takes")]
    TooManyTracks { channel: ChannelName, limit: usize },
    #[error("this packager already holds {limit} channels, the most it takes")]
    TooManyChannels { limit: usize },
    #[error(
        "a chunk of {channel}/{track} ends {ahead:.1?} ahead of the packager's clock (at most {MAX_SEGMENTS_AHEAD} segments are allowed): is the ingest's clock set by NTP?"
    )]
    AheadOfClock {
        channel: ChannelName,
        track: TrackName,
        ahead: Duration,
    },
}

/// What happened to a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    New(Vec<Event>),
    /// A copy of media the window already has (redundant ingest): dropped.
    Duplicate,
}

/// A track's names, for its events.
pub(crate) type Who = (ChannelName, TrackName);

/// Every channel's tracks. A channel exists while it has a track.
#[derive(Debug, Default)]
pub struct Window {
    config: WindowConfig,
    channels: BTreeMap<ChannelName, BTreeMap<TrackName, TrackWindow>>,
}

impl Window {
    pub fn new(config: WindowConfig) -> Self {
        Self {
            config,
            channels: BTreeMap::new(),
        }
    }

    /// Changes the limits on what the window holds. New ingests meet them; tracks and channels
    /// already over a lowered limit stay until they are retired.
    pub fn set_limits(&mut self, max_tracks: usize, max_channels: usize, retire_after: Duration) {
        self.config.max_tracks = max_tracks;
        self.config.max_channels = max_channels;
        self.config.retire_after = retire_after;
    }

    pub fn config(&self) -> WindowConfig {
        self.config
    }

    pub fn track(&self, channel: &ChannelName, track: &TrackName) -> Option<&TrackWindow> {
        self.channels.get(channel)?.get(track)
    }

    /// The tracks of `channel`, by name.
    pub fn tracks<'a>(
        &'a self,
        channel: &ChannelName,
    ) -> impl Iterator<Item = (&'a TrackName, &'a TrackWindow)> + 'a {
        self.channels.get(channel).into_iter().flatten()
    }

    /// The channels, by name.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.channels.keys()
    }

    /// Every track of every channel, by channel and name.
    pub fn all_tracks(&self) -> impl Iterator<Item = (&ChannelName, &TrackName, &TrackWindow)> {
        self.channels.iter().flat_map(|(channel, tracks)| {
            tracks
                .iter()
                .map(move |(track, window)| (channel, track, window))
        })
    }

    /// A track's header arrived (at the start of every ingest connection). The same header
    /// again changes nothing: a reconnecting ingest continues its track. A new track is
    /// refused when its channel, or the packager, is full.
    pub fn push_header(
        &mut self,
        channel: &ChannelName,
        track: &TrackName,
        header: TrackHeader,
        now: Duration,
    ) -> Result<Vec<Event>, WindowError> {
        if let Some(window) = self
            .channels
            .get_mut(channel)
            .and_then(|tracks| tracks.get_mut(track))
        {
            window.fed_at = now;
            if window.header.bytes == header.bytes {
                return Ok(Vec::new());
            }
            if window.header.timescale != header.timescale {
                // Times in the old timescale mean nothing in the new one.
                window.end = None;
            }
            window.header = header.clone();
            window.discontinuity_pending = true;
            return Ok(vec![Event::HeaderChanged {
                channel: channel.clone(),
                track: track.clone(),
                header,
            }]);
        }
        let tracks = self.channels.get(channel).map_or(0, BTreeMap::len);
        if tracks == 0 && self.channels.len() >= self.config.max_channels {
            return Err(WindowError::TooManyChannels {
                limit: self.config.max_channels,
            });
        }
        if tracks >= self.config.max_tracks {
            return Err(WindowError::TooManyTracks {
                channel: channel.clone(),
                limit: self.config.max_tracks,
            });
        }
        self.channels
            .entry(channel.clone())
            .or_default()
            .insert(track.clone(), TrackWindow::new(header.clone(), now));
        Ok(vec![Event::TrackStarted {
            channel: channel.clone(),
            track: track.clone(),
            header,
        }])
    }

    /// A chunk of a track arrived at `now`.
    ///
    /// A chunk that ends more than [`MAX_SEGMENTS_AHEAD`] segments after `now` is refused
    /// ([`WindowError::AheadOfClock`]); the track keeps what it had.
    ///
    /// A chunk that starts before the newest part ends is behind the timeline, and is one of
    /// two things. A copy repeats the recent past: a redundant encoder's copy, or a
    /// reconnecting encoder that sends again what it sent before; it falls on segments the
    /// window holds, or arrives while another source is still feeding the timeline. Those are
    /// dropped ([`Accepted::Duplicate`]): the first copy wins, and segment numbers, which
    /// caches keep as immutable URLs, never get other media. A new timeline (an ingest whose
    /// clock stepped back, or an encoder that does not lock its timestamps to UTC) goes back
    /// further than the window holds, and nothing has fed the old timeline for a segment: its
    /// segments leave the window and the chunk begins a segment marked as a discontinuity.
    pub fn push_chunk(
        &mut self,
        channel: &ChannelName,
        track: &TrackName,
        chunk: Chunk,
        now: Duration,
    ) -> Result<Accepted, WindowError> {
        let config = self.config;
        let segment_ns = config.segment.as_nanos().max(1);
        let window_segments = (config.window.as_nanos() / segment_ns).max(1) as u64;
        let who: Who = (channel.clone(), track.clone());
        let window = self
            .channels
            .get_mut(channel)
            .and_then(|tracks| tracks.get_mut(track))
            .ok_or_else(|| WindowError::NoHeader {
                channel: channel.clone(),
                track: track.clone(),
            })?;
        let end_ns = window.nanos(chunk.start.saturating_add(chunk.duration));
        let horizon = now.as_nanos() + segment_ns * u128::from(MAX_SEGMENTS_AHEAD);
        if end_ns > horizon {
            let ahead = end_ns - now.as_nanos();
            return Err(WindowError::AheadOfClock {
                channel: channel.clone(),
                track: track.clone(),
                ahead: Duration::from_nanos(u64::try_from(ahead).unwrap_or(u64::MAX)),
            });
        }
        let number = ((window.nanos(chunk.start) + BOUNDARY_TOLERANCE_NS) / segment_ns) as u64;
        let mut events = Vec::new();
        // A copy from a redundant encoder starts a whole part before the end; timestamps
        // rounded between timescales may start the next part a tick early, which is new media.
        let rounding = chunk.duration / (2 * u64::from(chunk.samples.max(1)));
        if window
            .end
            .is_some_and(|end| chunk.start.saturating_add(rounding) < end)
        {
            let held = window
                .segments
                .keys()
                .next()
                .is_some_and(|oldest| number >= *oldest);
            let fed_lately = now.saturating_sub(window.fed_at) < config.segment;
            if held || fed_lately {
                window.counters.duplicates += 1;
                return Ok(Accepted::Duplicate);
            }
            events.extend(window.reset(&who));
        }
        let newest = window.segments.keys().next_back().copied();
        if newest.is_some_and(|newest| number < newest) {
            // Starts after the newest part ends but maps to an older segment: the clock of this
            // copy disagrees with the first one's; the first copy wins.
            window.counters.duplicates += 1;
            return Ok(Accepted::Duplicate);
        }

        if let Some(newest) = newest
            && number > newest
        {
            if let Some(previous) = window.segments.get_mut(&newest)
                && !previous.complete
            {
                previous.complete = true;
                events.push(Event::SegmentCompleted {
                    channel: who.0.clone(),
                    track: who.1.clone(),
                    segment: previous.clone(),
                    header: window.header.bytes.clone(),
                });
            }
            if number > newest + 1 {
                window.counters.gaps += 1;
                events.push(Event::Gap {
                    channel: who.0.clone(),
                    track: who.1.clone(),
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
        let (start, duration) = (chunk.start, chunk.duration);
        segment.parts.push(chunk.clone());
        let part = segment.parts.len() - 1;
        events.push(Event::PartAdded {
            channel: who.0.clone(),
            track: who.1.clone(),
            segment: number,
            part,
            chunk,
        });
        // A part that reaches the next boundary completes its segment now, not when the next
        // segment begins: a player streaming the segment gets its end without waiting a part.
        if end_ns + BOUNDARY_TOLERANCE_NS >= (u128::from(number) + 1) * segment_ns {
            segment.complete = true;
            events.push(Event::SegmentCompleted {
                channel: who.0.clone(),
                track: who.1.clone(),
                segment: segment.clone(),
                header: window.header.bytes.clone(),
            });
        }
        window.longest_part = window.longest_part.max(duration);
        window.end = Some(start + duration);
        window.fed_at = now;
        window.last_part = Some(now);
        window.counters.parts += 1;
        events.extend(window.evict(number, window_segments, &who));
        Ok(Accepted::New(events))
    }

    /// Retires the tracks that have taken nothing new for [`WindowConfig::retire_after`]; a
    /// channel goes with its last track.
    pub fn retire_idle(&mut self, now: Duration) -> Vec<Event> {
        let limit = self.config.retire_after;
        let mut events = Vec::new();
        self.channels.retain(|channel, tracks| {
            tracks.retain(|track, window| {
                let idle = now.saturating_sub(window.fed_at) >= limit;
                if idle {
                    events.push(Event::TrackRetired {
                        channel: channel.clone(),
                        track: track.clone(),
                    });
                }
                !idle
            });
            if tracks.is_empty() {
                events.push(Event::ChannelRetired {
                    channel: channel.clone(),
                });
            }
            !tracks.is_empty()
        });
        events
    }

    /// Forgets a track that never took a chunk (its first ingest was refused), so that a
    /// refused ingest leaves nothing behind.
    pub fn forget_if_empty(&mut self, channel: &ChannelName, track: &TrackName) -> Vec<Event> {
        let Some(tracks) = self.channels.get_mut(channel) else {
            return Vec::new();
        };
        if !tracks.get(track).is_some_and(|t| t.segments.is_empty()) {
            return Vec::new();
        }
        tracks.remove(track);
        let mut events = vec![Event::TrackRetired {
            channel: channel.clone(),
            track: track.clone(),
        }];
        if tracks.is_empty() {
            self.channels.remove(channel);
            events.push(Event::ChannelRetired {
                channel: channel.clone(),
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::cmaf::{self, CmafReader, Piece};
    use crate::testing::{self, DAY_START_SECONDS, TrackSpec, parsed_chunk as chunk};
    use bytes::Bytes;
    use proptest::prelude::*;

    /// A clock a day after the fixtures' chunks: none is ahead of it, and none is long
    /// unfed (every push happens at the same moment).
    const NOW: Duration = Duration::from_secs(DAY_START_SECONDS + 24 * 3600);

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
        match window.push_chunk(&channel, &track, chunk, NOW).unwrap() {
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
        window
            .push_header(&channel, &track, header.clone(), NOW)
            .unwrap();
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
        window
            .push_header(&channel, &v720, video_header.clone(), NOW)
            .unwrap();
        for index in 0..18 {
            push(&mut window, "v720", chunk(&video, &video_header, index));
        }
        // Audio starts a segment later, with chunks of 16 AAC frames (not a divisor of 2 s).
        window
            .push_header(&channel, &a128, audio_header.clone(), NOW)
            .unwrap();
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
        window
            .push_header(&channel, &track, header.clone(), NOW)
            .unwrap();
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
        window
            .push_header(&channel, &track, header.clone(), NOW)
            .unwrap();
        // A second encoder sends the same header and the same chunks, a little behind.
        assert!(
            window
                .push_header(&channel, &track, header.clone(), NOW)
                .unwrap()
                .is_empty()
        );
        for index in 0..8 {
            push(&mut window, "v720", chunk(&spec, &header, index));
            if index > 0 {
                let copy = chunk(&spec, &header, index - 1);
                assert_eq!(
                    window.push_chunk(&channel, &track, copy, NOW).unwrap(),
                    Accepted::Duplicate
                );
            }
        }
        // The first encoder stops; the second one's next chunk is new media and is taken.
        assert!(matches!(
            window
                .push_chunk(&channel, &track, chunk(&spec, &header, 8), NOW)
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
        window
            .push_header(&channel, &track, header.clone(), NOW)
            .unwrap();
        let first = chunk(&spec, &header, 0);
        let end = first.start + first.duration;
        push(&mut window, "a128", first);
        // AAC frame times rounded from nanoseconds: the next part begins one tick early.
        let bytes = testing::chunk(&spec, 1, end - 1, spec.samples_per_chunk);
        let early = cmaf::parse_chunk(Bytes::from(bytes), &header).unwrap();
        assert!(matches!(
            window.push_chunk(&channel, &track, early, NOW).unwrap(),
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
            ..Default::default()
        };
        let mut window = Window::new(config);
        let (channel, track) = names("v720");
        window
            .push_header(&channel, &track, header.clone(), NOW)
            .unwrap();
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
        window
            .push_header(&channel, &track, first.clone(), NOW)
            .unwrap();
        push(&mut window, "v720", chunk(&spec, &first, 0));
        let mut second = first.clone();
        second.bytes = Bytes::from_static(b"another encoder configuration");
        assert_eq!(
            window
                .push_header(&channel, &track, second.clone(), NOW)
                .unwrap(),
            [Event::HeaderChanged {
                channel: channel.clone(),
                track: track.clone(),
                header: second.clone(),
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
            .push_chunk(&channel, &track, chunk(&spec, &header, 0), NOW)
            .unwrap_err();
        assert!(error.to_string().contains("no CMAF header"), "{error}");
    }

    /// The packager's clock when chunk `index` of the fixture video has just arrived: its end.
    fn live(index: u64) -> Duration {
        let spec = TrackSpec::video();
        let end = (index + 1) * spec.chunk_ticks();
        Duration::from_secs(DAY_START_SECONDS)
            + Duration::from_nanos(end * 1_000_000_000 / u64::from(spec.timescale))
    }

    /// A video track fed live with `chunks`.
    fn live_track(config: WindowConfig, chunks: Range<u64>) -> (Window, TrackHeader) {
        let spec = TrackSpec::video();
        let header = header(&spec);
        let mut window = Window::new(config);
        let (channel, track) = names("v720");
        window
            .push_header(&channel, &track, header.clone(), live(chunks.start))
            .unwrap();
        for index in chunks {
            let outcome = window
                .push_chunk(&channel, &track, chunk(&spec, &header, index), live(index))
                .unwrap();
            assert!(matches!(outcome, Accepted::New(_)), "chunk {index}");
        }
        (window, header)
    }

    fn newest_part(window: &Window) -> (u64, usize) {
        let (channel, track) = names("v720");
        window.track(&channel, &track).unwrap().newest().unwrap()
    }

    /// One chunk far in the future would make every real chunk after it look like a copy: it
    /// is refused, and the track plays on.
    #[test]
    fn a_chunk_ahead_of_the_clock_is_refused_and_the_track_plays_on() {
        let spec = TrackSpec::video();
        let (mut window, header) = live_track(WindowConfig::default(), 0..12);
        let (channel, track) = names("v720");
        let before = newest_part(&window);
        // A day ahead; then just past the horizon: its end 19 parts (6.3 s) after the clock,
        // which reads the end of chunk 11.
        for ahead in [24 * 3600 * 3, 19] {
            let future = chunk(&spec, &header, 11 + ahead);
            let error = window
                .push_chunk(&channel, &track, future, live(11))
                .unwrap_err();
            assert!(matches!(error, WindowError::AheadOfClock { .. }), "{error}");
            assert!(error.to_string().contains("NTP"), "{error}");
        }
        assert_eq!(newest_part(&window), before);
        // On the horizon (its end three segments, 18 parts, after the clock): a clock a
        // little fast is taken.
        let fast = chunk(&spec, &header, 11 + 17);
        assert!(matches!(
            window.push_chunk(&channel, &track, fast, live(11)),
            Ok(Accepted::New(_))
        ));
        // The real chunks that follow are still new media once they catch up, and meanwhile
        // the track is not blacked out for longer than the horizon.
        for index in 29..40 {
            let outcome = window
                .push_chunk(&channel, &track, chunk(&spec, &header, index), live(index))
                .unwrap();
            assert!(matches!(outcome, Accepted::New(_)), "chunk {index}");
        }

        // A long duration pushes a chunk's end ahead as much as its start would.
        let mut long = chunk(&spec, &header, 40);
        long.duration = 3000 * 3600;
        let error = window
            .push_chunk(&channel, &track, long, live(40))
            .unwrap_err();
        assert!(matches!(error, WindowError::AheadOfClock { .. }), "{error}");
        let mut huge = chunk(&spec, &header, 40);
        huge.start = u64::MAX - 5;
        assert!(window.push_chunk(&channel, &track, huge, live(40)).is_err());
    }

    /// Copies repeat the recent past, and are dropped: a redundant encoder a few parts behind,
    /// an ingest that reconnects and sends its last segment again after an outage of a minute.
    #[test]
    fn copies_of_the_recent_past_stay_duplicates() {
        let spec = TrackSpec::video();
        let (mut window, header) = live_track(WindowConfig::default(), 0..60);
        let (channel, track) = names("v720");
        for copy in [59, 55, 40] {
            assert_eq!(
                window
                    .push_chunk(&channel, &track, chunk(&spec, &header, copy), live(59))
                    .unwrap(),
                Accepted::Duplicate
            );
        }
        let outage = live(59) + Duration::from_secs(60);
        for copy in 54..60 {
            assert_eq!(
                window
                    .push_chunk(&channel, &track, chunk(&spec, &header, copy), outage)
                    .unwrap(),
                Accepted::Duplicate
            );
        }
        let counters = window.track(&channel, &track).unwrap().counters();
        assert_eq!((counters.parts, counters.duplicates), (60, 9));
        assert_eq!(counters.timeline_resets, 0);
    }

    /// An ingest whose clock stepped back further than the window holds: while another source
    /// still feeds the timeline its chunks are dropped; once nothing has for a segment, they
    /// start a new timeline, marked as a discontinuity, rather than being dropped for ever.
    #[test]
    fn a_jump_back_beyond_the_window_starts_a_new_timeline() {
        let spec = TrackSpec::video();
        let config = WindowConfig {
            window: Duration::from_secs(10),
            ..Default::default()
        };
        let (mut window, header) = live_track(config, 3600..3660);
        let (channel, track) = names("v720");
        // Ten minutes back (1800 parts), arriving just after the newest real part.
        let stepped = |index: u64| chunk(&spec, &header, index - 1800);
        assert_eq!(
            window
                .push_chunk(&channel, &track, stepped(3660), live(3659))
                .unwrap(),
            Accepted::Duplicate
        );
        // Nothing fed the old timeline for a whole segment (6 parts): a new one begins.
        let Accepted::New(events) = window
            .push_chunk(&channel, &track, stepped(3666), live(3666))
            .unwrap()
        else {
            panic!("the new timeline's first chunk was dropped")
        };
        assert!(events.iter().any(|event| matches!(
            event,
            Event::TimelineReset { channel: c, track: t, .. } if c == &channel && t == &track
        )));
        let evicted = events
            .iter()
            .filter(|event| matches!(event, Event::Evicted { .. }))
            .count();
        assert_eq!(evicted, 5, "the whole window left: {events:?}");
        let this = window.track(&channel, &track).unwrap();
        let numbers: Vec<u64> = this.segments().map(|s| s.number).collect();
        assert_eq!(numbers, [first_segment() + (3666 - 1800) / 6]);
        assert!(this.segments().next().unwrap().discontinuity);
        assert_eq!(this.counters().timeline_resets, 1);
        // The new timeline goes on; the old one's clock is gone.
        for index in 3667..3680 {
            let outcome = window
                .push_chunk(&channel, &track, stepped(index), live(index))
                .unwrap();
            assert!(matches!(outcome, Accepted::New(_)), "chunk {index}");
        }
    }

    /// Going back less than the window holds lands on segment numbers caches already hold
    /// as immutable: those chunks stay duplicates until the timeline catches up.
    #[test]
    fn a_jump_back_within_the_window_waits_for_the_timeline() {
        let spec = TrackSpec::video();
        let (mut window, header) = live_track(WindowConfig::default(), 0..60);
        let (channel, track) = names("v720");
        let later = live(59) + Duration::from_secs(30);
        assert_eq!(
            window
                .push_chunk(&channel, &track, chunk(&spec, &header, 30), later)
                .unwrap(),
            Accepted::Duplicate
        );
        assert!(matches!(
            window
                .push_chunk(&channel, &track, chunk(&spec, &header, 60), later)
                .unwrap(),
            Accepted::New(_)
        ));
    }

    #[test]
    fn channels_and_their_tracks_are_bounded() {
        let spec = TrackSpec::video();
        let header = header(&spec);
        let config = WindowConfig {
            max_tracks: 2,
            max_channels: 2,
            ..Default::default()
        };
        let mut window = Window::new(config);
        let name = |n: &str| ChannelName::new(n).unwrap();
        let track = |n: &str| TrackName::new(n).unwrap();
        let mut add = |channel: &str, t: &str| {
            window.push_header(&name(channel), &track(t), header.clone(), NOW)
        };
        assert!(add("a", "v1").is_ok());
        assert!(add("a", "v2").is_ok());
        assert_eq!(
            add("a", "v3"),
            Err(WindowError::TooManyTracks {
                channel: name("a"),
                limit: 2
            })
        );
        // A header again for a track it has is no new track.
        assert_eq!(add("a", "v2"), Ok(Vec::new()));
        assert!(add("b", "v1").is_ok());
        assert_eq!(
            add("c", "v1"),
            Err(WindowError::TooManyChannels { limit: 2 })
        );
        assert_eq!(window.channels().count(), 2);
    }

    #[test]
    fn idle_tracks_and_channels_are_retired() {
        let config = WindowConfig {
            retire_after: Duration::from_secs(30),
            ..Default::default()
        };
        let (mut window, _) = live_track(config, 0..12);
        let (channel, track) = names("v720");
        assert!(
            window
                .retire_idle(live(11) + Duration::from_secs(29))
                .is_empty()
        );
        assert_eq!(
            window.retire_idle(live(11) + Duration::from_secs(30)),
            [
                Event::TrackRetired {
                    channel: channel.clone(),
                    track: track.clone()
                },
                Event::ChannelRetired {
                    channel: channel.clone()
                }
            ]
        );
        assert!(window.track(&channel, &track).is_none());
        assert_eq!(window.channels().count(), 0);
    }

    /// A track whose first ingest is refused before a chunk is forgotten; one with media is
    /// kept.
    #[test]
    fn a_track_without_a_chunk_can_be_forgotten() {
        let spec = TrackSpec::video();
        let (mut window, header) = live_track(WindowConfig::default(), 0..1);
        let (channel, track) = names("v720");
        let (_, empty) = names("v1080");
        window
            .push_header(&channel, &empty, header, live(0))
            .unwrap();
        assert!(window.forget_if_empty(&channel, &track).is_empty());
        assert_eq!(window.forget_if_empty(&channel, &empty).len(), 1);
        assert_eq!(window.tracks(&channel).count(), 1);
        let _ = spec;
    }

    #[test]
    fn discontinuities_that_leave_the_window_are_counted() {
        let spec = TrackSpec::video();
        let header = header(&spec);
        let config = WindowConfig {
            window: Duration::from_secs(4),
            ..Default::default()
        };
        let mut window = Window::new(config);
        let (channel, track) = names("v720");
        window
            .push_header(&channel, &track, header.clone(), NOW)
            .unwrap();
        push(&mut window, "v720", chunk(&spec, &header, 0));
        // Gaps of a segment: segments 2 and 4 begin discontinuities.
        push(&mut window, "v720", chunk(&spec, &header, 12));
        push(&mut window, "v720", chunk(&spec, &header, 24));
        let this = window.track(&channel, &track).unwrap();
        assert_eq!(this.segments().next().unwrap().number, first_segment() + 4);
        assert_eq!(this.evicted_discontinuities(), 1);
        push(&mut window, "v720", chunk(&spec, &header, 36));
        push(&mut window, "v720", chunk(&spec, &header, 42));
        let this = window.track(&channel, &track).unwrap();
        assert_eq!(this.evicted_discontinuities(), 2);
    }

    proptest! {
        /// Whatever order, loss and duplication the network brings, numbering only grows, parts
        /// follow each other, and nothing outside the window is kept.
        #[test]
        fn numbering_only_grows(steps in proptest::collection::vec((0u64..4, any::<bool>()), 1..120)) {
            let spec = TrackSpec::video();
            let header = header(&spec);
            let config = WindowConfig { segment: Duration::from_secs(2), window: Duration::from_secs(20), ..Default::default() };
            let mut window = Window::new(config);
            let (channel, track) = names("v720");
            window.push_header(&channel, &track, header.clone(), NOW).unwrap();
            let mut index = 0u64;
            let mut last_part = None;
            for (skip, repeat) in steps {
                index += skip;
                let copy = repeat && index > 0;
                let at = if copy { index - 1 } else { index };
                let outcome = window.push_chunk(&channel, &track, chunk(&spec, &header, at), NOW).unwrap();
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
