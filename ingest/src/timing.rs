//! UTC-locked media time, as pure arithmetic (DESIGN.md "Media time is UTC").
//!
//! Buffers reach these functions with running times that are nanoseconds since the Unix epoch.
//! [`UtcGrid`] says which segment and part a time falls in, [`StartGate`] makes every track of a
//! channel begin on the same segment boundary, and [`FrameSnapper`] puts video frames on the
//! frame-rate grid counted from the epoch, so that segment boundaries fall exactly on frames.

use std::time::Duration;

/// Times this close below a boundary count as on it: timestamps pass through integer rounding
/// (nanoseconds, then the track's timescale) and must not slip into the previous part.
const BOUNDARY_TOLERANCE_NS: u64 = 1_000;

/// Segment and part boundaries on the UTC timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcGrid {
    segment_ns: u64,
    parts_per_segment: u32,
}

/// Where a time falls on the grid: segment number `floor(utc / segment_duration)` and the part
/// within that segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GridPosition {
    pub segment: u64,
    pub part: u32,
}

impl UtcGrid {
    pub fn new(segment: Duration, parts_per_segment: u32) -> Self {
        assert!(
            segment.as_nanos() > 0 && parts_per_segment > 0,
            "checked by the config"
        );
        Self {
            segment_ns: segment.as_nanos() as u64,
            parts_per_segment,
        }
    }

    pub fn segment_ns(&self) -> u64 {
        self.segment_ns
    }

    /// The duration of one part (a CMAF chunk), rounded down to the nanosecond.
    pub fn part_ns(&self) -> u64 {
        self.segment_ns / u64::from(self.parts_per_segment)
    }

    pub fn position(&self, utc_ns: u64) -> GridPosition {
        let t = utc_ns + BOUNDARY_TOLERANCE_NS;
        let within = u128::from(t % self.segment_ns);
        GridPosition {
            segment: t / self.segment_ns,
            part: (within * u128::from(self.parts_per_segment) / u128::from(self.segment_ns))
                as u32,
        }
    }

    /// The first part boundary at or after `utc_ns` (within the rounding tolerance).
    pub fn next_part_start(&self, utc_ns: u64) -> u64 {
        let position = self.position(utc_ns);
        let start = self.part_start(position.segment, position.part);
        if start + BOUNDARY_TOLERANCE_NS >= utc_ns {
            start
        } else if position.part + 1 < self.parts_per_segment {
            self.part_start(position.segment, position.part + 1)
        } else {
            self.part_start(position.segment + 1, 0)
        }
    }

    fn part_start(&self, segment: u64, part: u32) -> u64 {
        segment * self.segment_ns
            + u64::from(part) * self.segment_ns / u64::from(self.parts_per_segment)
    }

    /// The first segment boundary at or after `utc_ns`.
    pub fn next_segment_start(&self, utc_ns: u64) -> u64 {
        utc_ns.div_ceil(self.segment_ns) * self.segment_ns
    }

    /// The boundary that opens the segment `utc_ns` falls in.
    fn segment_start(&self, utc_ns: u64) -> u64 {
        self.position(utc_ns).segment * self.segment_ns
    }
}

/// Where a video frame goes once it is on the frame grid and admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub utc_ns: u64,
    /// The first frame of its segment: the encoder is to make it a keyframe.
    pub opens_segment: bool,
}

/// Follows one video track's frames and puts each frame that opens a segment on the segment's
/// boundary, however late within the segment it comes.
///
/// The frames before it were lost: a decoder drops late frames under load, a source skips
/// some or stalls. Left where it is, the frame would start its segment late, the segment before
/// would run past its duration, and a segment that starts a part or more late is not one the
/// muxer's output can cut on the grid at all: it would join the segment before, twice the
/// target duration long. Moved back, the frame shows a little longer and every segment starts on
/// its boundary with a keyframe.
#[derive(Clone, Debug)]
pub struct SegmentOpener {
    grid: UtcGrid,
    last_segment: Option<u64>,
}

impl SegmentOpener {
    pub fn new(grid: UtcGrid) -> Self {
        Self {
            grid,
            last_segment: None,
        }
    }

    pub fn place(&mut self, utc_ns: u64) -> Placed {
        let segment = self.grid.position(utc_ns).segment;
        let opens_segment = self.last_segment.replace(segment) != Some(segment);
        Placed {
            utc_ns: if opens_segment {
                self.grid.segment_start(utc_ns)
            } else {
                utc_ns
            },
            opens_segment,
        }
    }
}

/// What a split point before a buffer should be, when the buffer starts a new part or segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    None,
    /// The buffer starts a new part within the same segment: a new CMAF chunk.
    Chunk,
    /// The buffer starts a new segment: a new CMAF fragment.
    Fragment,
    /// The buffer is the first of a new segment but not a keyframe, so no segment can start
    /// on it: it stays in the last part of the segment before, and the encoder is to make the
    /// next frame a keyframe, where the new segment then starts.
    AwaitKeyframe,
}

/// Follows one track's buffers across the grid and says where to cut.
///
/// A segment starts on a keyframe, always: when the first buffer past a segment boundary is
/// not one, the cut waits for the next keyframe (which the caller asks the encoder for), so
/// the segment before ends a frame late rather than the next one starting where no decoder
/// can. If no keyframe comes within a part, the segment is cut anyway, to keep segments near
/// their duration whatever the encoder does.
#[derive(Clone, Debug)]
pub struct Splitter {
    grid: UtcGrid,
    last: Option<GridPosition>,
    /// The segment that began without a keyframe and has not been cut yet.
    awaiting_keyframe: Option<u64>,
}

impl Splitter {
    pub fn new(grid: UtcGrid) -> Self {
        Self {
            grid,
            last: None,
            awaiting_keyframe: None,
        }
    }

    /// Where to cut before a buffer presented at `utc_ns`; `keyframe` when a decoder can start
    /// on it (every buffer of an audio track).
    pub fn split_before(&mut self, utc_ns: u64, keyframe: bool) -> Split {
        let position = self.grid.position(utc_ns);
        let Some(last) = self.last.replace(position) else {
            return Split::None;
        };
        if let Some(segment) = self.awaiting_keyframe {
            if keyframe || position.segment != segment || position.part != 0 {
                self.awaiting_keyframe = None;
                return Split::Fragment;
            }
            return Split::None;
        }
        if position.segment != last.segment {
            if keyframe {
                return Split::Fragment;
            }
            self.awaiting_keyframe = Some(position.segment);
            return Split::AwaitKeyframe;
        }
        if position.part != last.part {
            Split::Chunk
        } else {
            Split::None
        }
    }
}

/// The kinds of track a channel starts together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Video = 0,
    Audio = 1,
}

/// Holds every track back until all have data, then lets each through from the same segment
/// boundary: the first one at or after everything dropped while waiting (so no track lacks media
/// it already threw away, however far ahead of the others it ran). A kind that has
/// not shown up after [`GIVE_UP_WAITING_NS`] of the other's media is not waited for; if it comes
/// later it starts on the next boundary after its first buffer.
#[derive(Debug)]
pub struct StartGate {
    grid: UtcGrid,
    expected: [bool; 2],
    first_seen: [Option<u64>; 2],
    /// The end of the latest buffer dropped before the start was decided.
    dropped_until: u64,
    starts: [Option<u64>; 2],
}

/// How much media of one kind the gate lets go by while waiting for the other.
pub const GIVE_UP_WAITING_NS: u64 = 5_000_000_000;

/// The gate's answer for one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Before the start: drop it.
    Drop,
    /// Let it through; `start` is the track's first segment boundary, which the buffer may
    /// straddle (audio is clipped to it).
    Pass { start: u64 },
}

impl StartGate {
    pub fn new(grid: UtcGrid, video: bool, audio: bool) -> Self {
        Self {
            grid,
            expected: [video, audio],
            first_seen: [None, None],
            dropped_until: 0,
            starts: [None, None],
        }
    }

    /// Judges a buffer of `kind` spanning `[utc_ns, utc_ns + duration_ns)`.
    pub fn admit(&mut self, kind: Kind, utc_ns: u64, duration_ns: u64) -> Admission {
        let index = kind as usize;
        self.first_seen[index].get_or_insert(utc_ns);
        let start = match self.starts[index] {
            Some(start) => start,
            None => match self.decide(kind, utc_ns) {
                Some(start) => start,
                None => {
                    self.dropped_until = self.dropped_until.max(utc_ns + duration_ns);
                    return Admission::Drop;
                }
            },
        };
        if utc_ns + duration_ns <= start || (kind == Kind::Video && utc_ns < start) {
            Admission::Drop
        } else {
            Admission::Pass { start }
        }
    }

    fn decide(&mut self, kind: Kind, utc_ns: u64) -> Option<u64> {
        if let Some(other_start) = self.starts.iter().flatten().next() {
            // The other kind started without this one: join on the next boundary.
            let start = self.grid.next_segment_start(utc_ns.max(*other_start));
            self.starts[kind as usize] = Some(start);
            return Some(start);
        }
        let mut latest_first = 0;
        for (expected, seen) in self.expected.iter().zip(self.first_seen) {
            match (expected, seen) {
                (true, Some(seen)) => latest_first = latest_first.max(seen),
                (true, None) => {
                    let waited = utc_ns.saturating_sub(self.first_seen[kind as usize]?);
                    if waited < GIVE_UP_WAITING_NS {
                        return None;
                    }
                    latest_first = latest_first.max(utc_ns);
                }
                (false, _) => {}
            }
        }
        let start = self
            .grid
            .next_segment_start(latest_first.max(self.dropped_until));
        for (index, seen) in self.first_seen.iter().enumerate() {
            if seen.is_some() {
                self.starts[index] = Some(start);
            }
        }
        Some(start)
    }
}

/// Where a stopping channel ends: every track at the same part boundary, the first one after
/// the stop was asked for and after every buffer any track has let through, so the last segment
/// ends with whole parts and no track holds media past the others' end.
#[derive(Clone, Debug)]
pub struct EndPoint {
    grid: UtcGrid,
    requested: bool,
    /// The latest buffer start seen so far, by any track.
    latest: u64,
    end: Option<u64>,
}

impl EndPoint {
    pub fn new(grid: UtcGrid) -> Self {
        Self {
            grid,
            requested: false,
            latest: 0,
            end: None,
        }
    }

    pub fn request(&mut self) {
        self.requested = true;
    }

    /// Whether a buffer starting at `utc_ns` lies past the end. Every track asks for every
    /// buffer, at every stage that may drop one; the first to ask after the stop fixes the end,
    /// past the furthest any of them has gone (a rendition whose encoder lags may ask first).
    pub fn is_past(&mut self, utc_ns: u64) -> bool {
        if !self.requested {
            self.latest = self.latest.max(utc_ns);
            return false;
        }
        let latest = self.latest.max(utc_ns);
        let end = *self
            .end
            .get_or_insert_with(|| self.grid.next_part_start(latest));
        utc_ns + BOUNDARY_TOLERANCE_NS >= end
    }
}

/// Moves video frames onto the grid `n * frame_duration` counted from the epoch.
#[derive(Clone, Debug)]
pub struct FrameSnapper {
    fps_num: u64,
    fps_den: u64,
    last_index: Option<u64>,
}

impl FrameSnapper {
    pub fn new(fps_num: u32, fps_den: u32) -> Self {
        assert!(fps_num > 0 && fps_den > 0, "checked by the config");
        Self {
            fps_num: fps_num.into(),
            fps_den: fps_den.into(),
            last_index: None,
        }
    }

    /// The grid time for a frame captured at `utc_ns`, or `None` when the nearest grid slot is
    /// already taken by the previous frame (the frame is a duplicate and is dropped).
    pub fn snap(&mut self, utc_ns: u64) -> Option<u64> {
        let per_second = u128::from(self.fps_num);
        let unit = u128::from(self.fps_den) * 1_000_000_000;
        let index = ((u128::from(utc_ns) * per_second + unit / 2) / unit) as u64;
        if self.last_index.is_some_and(|last| index <= last) {
            return None;
        }
        self.last_index = Some(index);
        Some(self.frame_time(index))
    }

    pub fn frame_duration_ns(&self) -> u64 {
        self.frame_time(1)
    }

    /// Rounded up, so that converting back to a track timescale (rounding down) gives the
    /// exact tick of frame `index`.
    fn frame_time(&self, index: u64) -> u64 {
        (u128::from(index) * u128::from(self.fps_den) * 1_000_000_000)
            .div_ceil(u128::from(self.fps_num)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: u64 = 1_000_000_000;
    /// 2026-11-21 00:00:00 UTC, a multiple of 2 s.
    const EPOCH_2026: u64 = 1_795_219_200 * SECOND;

    fn grid() -> UtcGrid {
        UtcGrid::new(Duration::from_secs(2), 6)
    }

    #[test]
    fn segment_number_is_utc_over_duration() {
        let position = grid().position(EPOCH_2026 + 3 * SECOND);
        assert_eq!(position.segment, EPOCH_2026 / (2 * SECOND) + 1);
        assert_eq!(position.part, 3);
    }

    #[test]
    fn thirty_fps_frames_start_parts_and_segments_exactly() {
        let mut snapper = FrameSnapper::new(30, 1);
        let mut splitter = Splitter::new(grid());
        let mut fragments = Vec::new();
        let mut chunks = 0;
        // Frames captured with jitter of a few milliseconds around the ideal grid.
        for n in 0..300u64 {
            let jitter = (n * 7919 % 9) * 1_000_000;
            let Some(t) = snapper.snap(EPOCH_2026 + n * SECOND / 30 + jitter) else {
                continue;
            };
            match splitter.split_before(t, true) {
                Split::Fragment => fragments.push(n),
                Split::Chunk => chunks += 1,
                Split::None | Split::AwaitKeyframe => {}
            }
        }
        assert_eq!(fragments, [60, 120, 180, 240]);
        // Six parts per segment: five chunk cuts inside each of the five segments.
        assert_eq!(chunks, 5 * 5);
    }

    /// 30 fps frames from `from` for `frames` frames, keyframes where `keyframe` says, through
    /// a splitter: the frame indexes where each kind of cut falls.
    fn cuts(from: u64, frames: u64, keyframe: impl Fn(u64) -> bool) -> Vec<(u64, Split)> {
        let mut snapper = FrameSnapper::new(30, 1);
        let mut splitter = Splitter::new(grid());
        (0..frames)
            .filter_map(|n| {
                let t = snapper.snap(from + n * SECOND / 30)?;
                match splitter.split_before(t, keyframe(n)) {
                    Split::None | Split::Chunk => None,
                    split => Some((n, split)),
                }
            })
            .collect()
    }

    #[test]
    fn a_segment_waits_one_frame_for_a_keyframe_that_was_late() {
        // Frame 60 is on the 2 s boundary but the encoder made frame 61 the keyframe.
        let cuts = cuts(EPOCH_2026, 150, |n| n == 0 || n == 61 || n == 120);
        assert_eq!(
            cuts,
            [
                (60, Split::AwaitKeyframe),
                (61, Split::Fragment),
                (120, Split::Fragment)
            ]
        );
    }

    #[test]
    fn a_segment_is_cut_within_a_part_even_without_a_keyframe() {
        // An encoder that ignores the request: the segment is cut at the next part boundary,
        // so the one before is never longer than its duration plus a part.
        let cuts = cuts(EPOCH_2026, 100, |n| n == 0);
        assert_eq!(cuts, [(60, Split::AwaitKeyframe), (70, Split::Fragment)]);
    }

    #[test]
    fn chunks_are_not_cut_while_a_segment_waits_for_its_keyframe() {
        let mut splitter = Splitter::new(grid());
        let frame = SECOND / 30;
        assert_eq!(splitter.split_before(EPOCH_2026, true), Split::None);
        let boundary = EPOCH_2026 + 2 * SECOND;
        assert_eq!(splitter.split_before(boundary - frame, false), Split::Chunk);
        assert_eq!(splitter.split_before(boundary, false), Split::AwaitKeyframe);
        assert_eq!(splitter.split_before(boundary + frame, false), Split::None);
        assert_eq!(
            splitter.split_before(boundary + 2 * frame, true),
            Split::Fragment
        );
        assert_eq!(
            splitter.split_before(boundary + 3 * frame, false),
            Split::None
        );
    }

    /// The video timing of one track as the pipeline runs it, with the forced keyframes honoured:
    /// 30 fps frames captured at `captured`, snapped, placed and split. Returns where each
    /// segment starts.
    fn segment_starts(captured: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut snapper = FrameSnapper::new(30, 1);
        let mut opener = SegmentOpener::new(grid());
        let mut splitter = Splitter::new(grid());
        let mut starts = Vec::new();
        for time in captured {
            let Some(snapped) = snapper.snap(time) else {
                continue;
            };
            let placed = opener.place(snapped);
            if starts.is_empty()
                || splitter.split_before(placed.utc_ns, placed.opens_segment) == Split::Fragment
            {
                starts.push(placed.utc_ns);
            }
        }
        starts
    }

    #[test]
    fn a_boundary_is_cut_however_many_frames_before_it_were_lost() {
        let boundary = EPOCH_2026 + 2 * SECOND;
        // From none to 59 frames lost from the boundary on. A segment whose first part (10
        // frames) or more was lost used to start at part 1, where the output cannot open a
        // segment, and joined the one before: 4 s and 110 samples long.
        for lost in 0..60 {
            let captured = (0..180)
                .filter(|n| !(60..60 + lost).contains(n))
                .map(|n| EPOCH_2026 + n * SECOND / 30);
            assert_eq!(
                segment_starts(captured),
                [EPOCH_2026, boundary, boundary + 2 * SECOND],
                "{lost} frames lost"
            );
        }
    }

    #[test]
    fn only_a_frame_that_opens_a_segment_is_moved() {
        let mut opener = SegmentOpener::new(grid());
        let boundary = EPOCH_2026 + 2 * SECOND;
        let frame = SECOND / 30;
        let opening = opener.place(boundary + 2 * frame);
        assert_eq!((opening.utc_ns, opening.opens_segment), (boundary, true));
        let next = opener.place(boundary + 3 * frame);
        assert_eq!(
            (next.utc_ns, next.opens_segment),
            (boundary + 3 * frame, false)
        );
        // A frame a hair below the next boundary (rounding) counts as on it.
        let next_boundary = boundary + 2 * SECOND;
        assert_eq!(
            opener.place(next_boundary - 10),
            Placed {
                utc_ns: next_boundary,
                opens_segment: true
            }
        );
    }

    #[test]
    fn stopping_ends_every_track_on_the_same_part_boundary() {
        let mut end = EndPoint::new(grid());
        assert!(!end.is_past(EPOCH_2026 + SECOND));
        end.request();
        // The first track to look after the request fixes the end at the next part boundary.
        assert!(!end.is_past(EPOCH_2026 + SECOND + 1_000_000));
        let boundary = EPOCH_2026 + SECOND + SECOND / 3;
        assert!(!end.is_past(boundary - 20_000_000));
        assert!(end.is_past(boundary + 1));
        assert!(end.is_past(boundary - 1));
        assert_eq!(
            grid().next_part_start(EPOCH_2026 + 2 * SECOND - 1),
            EPOCH_2026 + 2 * SECOND
        );
        assert_eq!(grid().next_part_start(EPOCH_2026), EPOCH_2026);
    }

    #[test]
    fn the_end_is_past_everything_any_track_let_through() {
        let mut end = EndPoint::new(grid());
        // One rendition's encoder is ahead (10.05 s), another's lags (9.2 s) when the stop
        // comes, and the lagging one asks first: the end must not fall behind the other, which
        // would keep a segment its sibling lacks.
        assert!(!end.is_past(EPOCH_2026 + 9_200_000_000));
        assert!(!end.is_past(EPOCH_2026 + 10_050_000_000));
        end.request();
        assert!(!end.is_past(EPOCH_2026 + 9_233_333_334));
        assert!(!end.is_past(EPOCH_2026 + 10_050_000_000));
        assert!(end.is_past(EPOCH_2026 + 10_333_333_333));
    }

    #[test]
    fn gate_starts_all_tracks_on_one_boundary() {
        let mut gate = StartGate::new(grid(), true, true);
        let video_first = EPOCH_2026 + SECOND / 2;
        assert_eq!(gate.admit(Kind::Video, video_first, 33), Admission::Drop);
        // Audio arrives after the next boundary: the start moves to the boundary after it.
        let audio_first = EPOCH_2026 + 2 * SECOND + 5;
        assert_eq!(gate.admit(Kind::Audio, audio_first, 21), Admission::Drop);
        let start = EPOCH_2026 + 4 * SECOND;
        assert_eq!(gate.admit(Kind::Video, start - 1, 33), Admission::Drop);
        assert_eq!(
            gate.admit(Kind::Video, start, 33),
            Admission::Pass { start }
        );
        // An audio buffer straddling the start passes, to be clipped.
        assert_eq!(
            gate.admit(Kind::Audio, start - 10, 21),
            Admission::Pass { start }
        );
        assert_eq!(gate.admit(Kind::Audio, start - 21, 21), Admission::Drop);
    }

    #[test]
    fn gate_starts_after_everything_it_dropped_while_waiting() {
        let mut gate = StartGate::new(grid(), true, true);
        // Audio runs ahead: 1.9 s of it is dropped before video's first frame arrives.
        let mut t = EPOCH_2026 + SECOND / 2;
        while t < EPOCH_2026 + 2 * SECOND + SECOND / 3 {
            assert_eq!(gate.admit(Kind::Audio, t, 21_333_333), Admission::Drop);
            t += 21_333_333;
        }
        // Video's first frame is early in time; starting at 2 s would lose audio already gone.
        let start = EPOCH_2026 + 4 * SECOND;
        assert_eq!(
            gate.admit(Kind::Video, EPOCH_2026 + SECOND / 2, 33),
            Admission::Drop
        );
        assert_eq!(
            gate.admit(Kind::Video, start, 33),
            Admission::Pass { start }
        );
        assert_eq!(
            gate.admit(Kind::Audio, start - 5, 21),
            Admission::Pass { start }
        );
    }

    #[test]
    fn gate_with_one_kind_does_not_wait_for_the_other() {
        let mut gate = StartGate::new(grid(), false, true);
        assert_eq!(gate.admit(Kind::Audio, EPOCH_2026 + 1, 10), Admission::Drop);
        let start = EPOCH_2026 + 2 * SECOND;
        assert_eq!(
            gate.admit(Kind::Audio, start, 10),
            Admission::Pass { start }
        );
    }

    #[test]
    fn gate_stops_waiting_for_a_kind_that_never_comes() {
        let mut gate = StartGate::new(grid(), true, true);
        let first = EPOCH_2026 + SECOND / 2;
        assert_eq!(gate.admit(Kind::Video, first, 33), Admission::Drop);
        assert_eq!(
            gate.admit(Kind::Video, first + 4 * SECOND, 33),
            Admission::Drop
        );
        let late = first + GIVE_UP_WAITING_NS;
        let start = EPOCH_2026 + 6 * SECOND;
        assert_eq!(gate.admit(Kind::Video, late, 33), Admission::Drop);
        assert_eq!(
            gate.admit(Kind::Video, start, 33),
            Admission::Pass { start }
        );
        // Audio turns up at last: it starts on the boundary after its first buffer.
        let audio_first = start + 3 * SECOND;
        assert_eq!(gate.admit(Kind::Audio, audio_first, 21), Admission::Drop);
        let audio_start = EPOCH_2026 + 10 * SECOND;
        assert_eq!(
            gate.admit(Kind::Audio, audio_start, 21),
            Admission::Pass { start: audio_start }
        );
    }

    #[test]
    fn snapper_drops_frames_that_land_in_a_taken_slot() {
        let mut snapper = FrameSnapper::new(30, 1);
        assert_eq!(snapper.snap(EPOCH_2026), Some(EPOCH_2026));
        assert_eq!(snapper.snap(EPOCH_2026 + 10_000_000), None);
        assert_eq!(
            snapper.snap(EPOCH_2026 + 30_000_000),
            Some(EPOCH_2026 + 33_333_334)
        );
    }

    proptest! {
        #[test]
        fn snapped_times_are_on_the_grid_and_increasing(
            start in 0u64..1 << 62,
            steps in proptest::collection::vec(0u64..100_000_000, 1..50),
            (num, den) in prop_oneof![Just((30, 1)), Just((25, 1)), Just((30000, 1001)), Just((60, 1))],
        ) {
            let mut snapper = FrameSnapper::new(num, den);
            let mut t = start;
            let mut last = None;
            for step in steps {
                t += step;
                if let Some(snapped) = snapper.snap(t) {
                    prop_assert!(last.is_none_or(|last| snapped > last));
                    prop_assert!(snapped.abs_diff(t) <= snapper.frame_duration_ns() / 2 + 1);
                    last = Some(snapped);
                }
            }
        }

        #[test]
        fn splitter_cuts_once_per_boundary(start in 0u64..1 << 50, step in 1_000_000u64..500_000_000) {
            let grid = grid();
            let mut splitter = Splitter::new(grid);
            let mut t = start;
            let mut fragments = 0;
            for _ in 0..100 {
                t += step;
                if splitter.split_before(t, true) == Split::Fragment { fragments += 1; }
            }
            let crossed = grid.position(t).segment - grid.position(start + step).segment;
            prop_assert_eq!(fragments, crossed);
        }
    }
}
