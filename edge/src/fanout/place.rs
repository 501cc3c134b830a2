//! What one viewer of a continuous stream has been given and what is queued for it, sans IO:
//! its cursor into the stream's ring, the chunks taken and not yet written, and the judgement
//! of a viewer that has fallen behind (moved on to the newest join point, once the chunk it is
//! part-way through is out, so that its decoder only ever sees whole chunks; or dropped). A
//! radio player that asked for ICY metadata gets the stream's title in its audio; an edge
//! behind this one gets it in title frames. The engines that write the queue out (tokio's
//! epoll reactor, io_uring) share it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use estuary_proto::chunks::{self, Kind};
use estuary_proto::icy;

use super::ring::{After, Entry, Read, Ring};
use super::{SlowPolicy, Stream};

/// Bytes of chunks a viewer takes from the ring at once.
const QUEUE_BUDGET: usize = 256 * 1024;

/// What a viewer has been given and what is queued for it.
pub(super) struct Place {
    /// The next chunk to take from the ring; `None` until the viewer has had the header and a
    /// join point.
    pub(super) cursor: Option<u64>,
    /// Chunks taken from the ring and not yet written, each with its capture time (an ICY
    /// listener's chunk may be in several pieces, around a metadata block); the first may be
    /// partly written.
    pub(super) queue: VecDeque<(Bytes, u64)>,
    queued_bytes: usize,
    partly_written: bool,
    /// Another edge: each chunk goes in a frame (a copy, head and chunk in one piece, so that
    /// a skip never cuts a frame).
    framed: bool,
    /// The title last put in a frame for the edge behind (`framed` only).
    title_sent: Arc<str>,
    /// A radio player that asked for ICY metadata.
    icy: Option<Icy>,
    /// Pieces of the header still queued (the header is at the front until written).
    header_left: usize,
    /// Anything has been written.
    written: bool,
    /// The capture time of the last chunk written whole.
    last_written: Option<u64>,
    /// A viewer handed over by another process, until its cursor is found in this ring.
    resume: Option<Next>,
}

/// Where a viewer goes on in its stream, from what it has been given (carried from one
/// process to another when an edge is upgraded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Next {
    /// Nothing of the stream yet: it starts as a new viewer (header, then a join point).
    Fresh,
    /// The header and no chunk: it starts on a join point.
    Join,
    /// Every chunk up to the one captured at this time (UTC microseconds).
    After(u64),
}

/// A viewer's place as another process needs it to go on with no byte lost or repeated.
#[derive(Clone, Debug, PartialEq)]
pub struct Position {
    pub next: Next,
    /// The rest of the chunk part-way out (with any ICY block in it), to write first.
    pub pending: Bytes,
    /// An ICY listener's count: audio bytes to its next block, and the title of its last
    /// block.
    pub icy: Option<(usize, Option<Arc<str>>)>,
    /// For an edge behind: the title last framed for it.
    pub title_sent: Arc<str>,
}

/// An ICY listener's metadata: where its next block goes, and, for each queued piece, where
/// it went before the piece's chunk (`None` for a chunk's later pieces): a skip drops queued
/// chunks, and the count must not include them.
struct Icy {
    inserter: icy::Inserter,
    before: VecDeque<Option<icy::Inserter>>,
}

impl Place {
    pub(super) fn new(framed: bool, icy: bool) -> Place {
        Place {
            cursor: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            partly_written: false,
            framed,
            title_sent: "".into(),
            icy: icy.then(|| Icy {
                inserter: icy::Inserter::default(),
                before: VecDeque::new(),
            }),
            header_left: 0,
            written: false,
            last_written: None,
            resume: None,
        }
    }

    /// A viewer handed over at `position`: the pending bytes go first, then the stream from
    /// where the position says, once this process's ring holds it.
    pub(super) fn resumed(framed: bool, icy: bool, position: Position) -> Place {
        let mut place = Place::new(framed, icy);
        if position.next == Next::Fresh {
            return place;
        }
        if let (Some(icy), Some((until_block, sent))) = (&mut place.icy, position.icy) {
            icy.inserter = icy::Inserter::resumed(until_block, sent);
        }
        place.title_sent = position.title_sent;
        place.written = true;
        place.resume = Some(position.next);
        if !position.pending.is_empty() {
            let capture = match position.next {
                Next::After(capture) => capture,
                _ => 0,
            };
            place.push(position.pending, capture);
            place.partly_written = true;
            if let Some(icy) = &mut place.icy {
                icy.before.push_back(None);
            }
        }
        place
    }

    /// Whether [`Place::position`] can say where the viewer stands (not while its header is
    /// part-way out).
    pub(super) fn can_hand_over(&self) -> bool {
        !self.written || self.header_left == 0
    }

    /// Where the viewer stands, for another process to go on from; `None` while its header is
    /// part-way out (a moment: it is small).
    pub(super) fn position(&self) -> Option<Position> {
        if !self.written {
            return Some(Position {
                next: Next::Fresh,
                pending: Bytes::new(),
                icy: None,
                title_sent: "".into(),
            });
        }
        if self.header_left > 0 {
            return None;
        }
        let in_flight = self.in_flight();
        let pending = match in_flight {
            0 => Bytes::new(),
            1 => self.queue[0].0.clone(),
            _ => {
                let mut joined = BytesMut::new();
                for (piece, _) in self.queue.iter().take(in_flight) {
                    joined.extend_from_slice(piece);
                }
                joined.freeze()
            }
        };
        let next = match (self.queue.front(), in_flight) {
            (Some((_, capture)), 1..) => Next::After(*capture),
            _ => self.last_written.map_or(Next::Join, Next::After),
        };
        // The count where the pending bytes end: before the next queued chunk, or now.
        let icy = self.icy.as_ref().map(|icy| {
            let inserter = match icy.before.get(in_flight) {
                Some(Some(before)) => before,
                _ => &icy.inserter,
            };
            (inserter.until_block(), inserter.sent().cloned())
        });
        Some(Position {
            next,
            pending,
            icy,
            title_sent: self.title_sent.clone(),
        })
    }

    /// For an edge behind: the stream's title in a frame, whenever it is new to that edge.
    fn relay_title(&mut self, stream: &Stream) {
        if !self.framed {
            return;
        }
        let title = stream.title();
        if title != self.title_sent {
            let framed = frame(Kind::Title, 0, &Bytes::copy_from_slice(title.as_bytes()));
            // A title has no capture time: it goes with the chunk after it.
            let capture = self.queue.back().map_or(0, |(_, capture)| *capture);
            self.push(framed, capture);
            self.title_sent = title;
        }
    }

    /// Queues the stream's header, for a viewer starting on the chunk captured at `capture`.
    fn push_header(&mut self, header: &Bytes, capture: u64) {
        if self.framed {
            // Sent even when empty: it says where the stream starts.
            let framed = frame(Kind::Header, 0, header);
            self.push(framed, capture);
        } else if !header.is_empty() {
            // TS, ADTS and MP3 have no header of their own. An ICY listener's blocks count
            // every byte of the body.
            let before = self.queue.len();
            self.push_audio(header, capture, &Arc::default());
            self.header_left += self.queue.len() - before;
            return;
        }
        if self.framed {
            self.header_left += 1;
        }
    }

    fn push_chunk(&mut self, entry: Entry, title: &Arc<str>) {
        if self.framed {
            let framed = frame(
                Kind::Chunk { join: entry.join },
                entry.capture_micros,
                &entry.bytes,
            );
            self.push(framed, entry.capture_micros);
        } else {
            self.push_audio(&entry.bytes, entry.capture_micros, title);
        }
    }

    /// Queues a chunk of the stream as the viewer gets it: shared, or for an ICY listener
    /// sliced around the metadata blocks due in it (the stream's bytes are not copied), with
    /// the listener's count before the chunk kept beside its first piece.
    fn push_audio(&mut self, bytes: &Bytes, capture: u64, title: &Arc<str>) {
        let Some(icy) = &mut self.icy else {
            self.push(bytes.clone(), capture);
            return;
        };
        let before = icy.inserter.clone();
        let pieces = icy.inserter.insert(bytes, title);
        icy.before.push_back(Some(before));
        icy.before
            .extend(std::iter::repeat_n(None, pieces.len().saturating_sub(1)));
        for piece in pieces {
            self.push(piece, capture);
        }
    }

    /// The queue's leading pieces that belong to the chunk being written: they all go out
    /// before a skip, so that the decoder only sees whole chunks.
    fn in_flight(&self) -> usize {
        let continues = |index: usize| {
            self.icy
                .as_ref()
                .is_some_and(|icy| matches!(icy.before.get(index), Some(None)))
        };
        let mut count = usize::from(self.partly_written || continues(0)).min(self.queue.len());
        while count > 0 && continues(count) {
            count += 1;
        }
        count
    }

    /// Judges the viewer against `ring` and tops its queue up. `Err` when it is to be dropped.
    pub(super) fn top_up(&mut self, ring: &Ring, stream: &Stream) -> Result<(), ()> {
        let config = &stream.policy;
        let Some(at) = self.cursor else {
            match self.resume {
                None | Some(Next::Fresh) => {}
                Some(Next::Join) => {
                    if let Some(start) = ring.start(config.burst_bytes) {
                        self.resume = None;
                        self.cursor = Some(start);
                        self.take(ring, stream)?;
                    }
                    return Ok(());
                }
                Some(Next::After(capture)) => {
                    let at = match ring.after(capture) {
                        After::At(at) => Some(at),
                        After::NotYet => None,
                        After::Gone => {
                            // Behind by more than this ring holds: on from a join point.
                            stream.counters.skips.fetch_add(1, Ordering::Relaxed);
                            ring.start(0)
                        }
                    };
                    if let Some(at) = at {
                        self.resume = None;
                        self.cursor = Some(at);
                        self.take(ring, stream)?;
                    }
                    return Ok(());
                }
            }
            if let Some(start) = ring.start(config.burst_bytes) {
                let capture = ring.capture_micros(start).unwrap_or_default();
                self.push_header(ring.header(), capture);
                self.relay_title(stream);
                self.cursor = Some(start);
                self.take(ring, stream)?;
            }
            return Ok(());
        };
        let unread = ring.lag(at);
        // How far behind: from the oldest chunk not yet begun (the one part-way out is the
        // socket's), queued or still in the ring.
        let oldest = self
            .queue
            .get(self.in_flight())
            .map(|(_, capture)| *capture)
            .or_else(|| ring.capture_micros(at));
        let behind_micros = oldest.map_or(0, |oldest| ring.newest_capture().saturating_sub(oldest));
        let behind_bytes = self.queued_bytes + unread.bytes;
        if behind_micros > config.max_lag.as_micros() as u64 || behind_bytes > config.max_lag_bytes
        {
            match (config.slow, ring.newest_join()) {
                (SlowPolicy::Skip, Some(join)) if join > at => {
                    stream.counters.skips.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        path = stream.key,
                        behind_bytes,
                        "slow viewer moved to the newest join point"
                    );
                    self.skip_to(join);
                }
                // Nothing newer to start from yet: it waits for the next join point.
                (SlowPolicy::Skip, _) => {}
                _ => {
                    stream.counters.drops.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(path = stream.key, behind_bytes, "slow viewer dropped");
                    return Err(());
                }
            }
        }
        self.read(ring, stream)
    }

    /// Takes chunks from the ring once the queue holds no whole chunk: the cursor stays where
    /// the viewer is, so that a viewer behind has chunks to skip.
    fn read(&mut self, ring: &Ring, stream: &Stream) -> Result<(), ()> {
        if self.queue.len() > self.in_flight() {
            return Ok(());
        }
        self.take(ring, stream)
    }

    /// Takes the chunks from the cursor on (up to [`QUEUE_BUDGET`]) into the queue.
    fn take(&mut self, ring: &Ring, stream: &Stream) -> Result<(), ()> {
        let Some(at) = self.cursor else {
            return Ok(());
        };
        let mut taken = Vec::new();
        match ring.read(at, QUEUE_BUDGET, &mut taken) {
            Read::Chunks { next } => {
                self.cursor = Some(next);
                self.relay_title(stream);
                let title = if self.icy.is_some() {
                    stream.title()
                } else {
                    Arc::default()
                };
                for entry in taken {
                    self.push_chunk(entry, &title);
                }
            }
            Read::Nothing => {}
            // The lag checks catch a viewer before the ring lets go of its chunk, unless the
            // ring's limits are tighter than the lag allowed.
            Read::Lost => match (stream.policy.slow, ring.newest_join()) {
                (SlowPolicy::Skip, Some(join)) => {
                    stream.counters.skips.fetch_add(1, Ordering::Relaxed);
                    self.skip_to(join);
                    return self.read(ring, stream);
                }
                _ => {
                    stream.counters.drops.fetch_add(1, Ordering::Relaxed);
                    return Err(());
                }
            },
        }
        Ok(())
    }

    /// Drops what is queued but the chunk being written (all its pieces), and goes on from
    /// chunk `join`.
    fn skip_to(&mut self, join: u64) {
        let keep = self.in_flight();
        if let Some(icy) = &mut self.icy
            && let Some(Some(before)) = icy.before.get(keep)
        {
            // The blocks are counted from the audio this listener will actually get.
            icy.inserter = before.clone();
            icy.before.truncate(keep);
        }
        if self.queue.len() > keep {
            // A title frame may be among what goes: the edge behind gets the title again.
            self.title_sent = "".into();
        }
        self.queue.truncate(keep);
        self.header_left = self.header_left.min(self.queue.len());
        self.queued_bytes = self.queue.iter().map(|(bytes, _)| bytes.len()).sum();
        self.cursor = Some(join);
    }

    fn push(&mut self, bytes: Bytes, capture: u64) {
        self.queued_bytes += bytes.len();
        self.queue.push_back((bytes, capture));
    }

    /// `written` bytes of the queue went out.
    pub(super) fn wrote(&mut self, mut written: usize) {
        self.queued_bytes -= written;
        self.written |= written > 0;
        while written > 0 {
            let Some((front, capture)) = self.queue.front_mut() else {
                break;
            };
            let capture = *capture;
            if written < front.len() {
                front.advance(written);
                self.partly_written = true;
                return;
            }
            written -= front.len();
            self.queue.pop_front();
            if self.header_left > 0 {
                self.header_left -= 1;
            } else {
                self.last_written = Some(capture);
            }
            if let Some(icy) = &mut self.icy {
                icy.before.pop_front();
            }
            self.partly_written = false;
        }
    }
}

/// `bytes` behind the head of a frame of `kind`, in one piece.
fn frame(kind: Kind, capture_micros: u64, bytes: &Bytes) -> Bytes {
    let mut framed = BytesMut::with_capacity(chunks::HEAD_LENGTH + bytes.len());
    framed.extend_from_slice(&chunks::head(kind, capture_micros, bytes.len()));
    framed.extend_from_slice(bytes);
    framed.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::MountPolicy;
    use crate::fanout::ring::Limits;
    use std::time::Duration;

    const SECOND: u64 = 1_000_000;

    /// A stream whose viewers are slow 2 s behind.
    fn stream(slow: SlowPolicy) -> Stream {
        let policy = MountPolicy {
            slow,
            max_lag: Duration::from_secs(2),
            max_lag_bytes: 1 << 30,
            ..MountPolicy::default()
        };
        Stream::new("/live/demo/stream.ts", policy, Default::default())
    }

    /// Three 10 kB chunks a second, a join point every two seconds, for `seconds`.
    fn ring(seconds: u64) -> Ring {
        let mut ring = Ring::new(
            Bytes::from_static(b"head"),
            Limits {
                bytes: 1 << 30,
                micros: 60 * SECOND,
            },
        );
        for part in 0..seconds * 3 {
            ring.push(Entry {
                bytes: Bytes::from(vec![0u8; 10_000]),
                join: part % 6 == 0,
                capture_micros: part * SECOND / 3,
            });
        }
        ring
    }

    fn place() -> Place {
        Place::new(false, false)
    }

    #[test]
    fn a_new_viewer_gets_the_header_then_the_newest_join_point_on() {
        let (ring, stream) = (ring(5), stream(SlowPolicy::Skip));
        let mut place = place();
        place.top_up(&ring, &stream).unwrap();
        // Join points at chunks 0, 6 and 12; 15 chunks.
        assert_eq!(place.queue.len(), 1 + 3);
        assert_eq!(&place.queue[0].0[..], b"head");
        assert_eq!(place.cursor, Some(15));
    }

    #[test]
    fn a_viewer_that_falls_behind_skips_after_the_chunk_it_is_writing() {
        let (mut ring, stream) = (ring(2), stream(SlowPolicy::Skip));
        let mut place = place();
        place.top_up(&ring, &stream).unwrap(); // header + chunk 0..6
        place.wrote(4 + 5_000); // the header and half of chunk 0
        assert!(place.partly_written);
        // Four seconds more land while the viewer reads nothing.
        for part in 6..18 {
            ring.push(Entry {
                bytes: Bytes::from(vec![1u8; 10_000]),
                join: part % 6 == 0,
                capture_micros: part * SECOND / 3,
            });
        }
        place.top_up(&ring, &stream).unwrap();
        assert_eq!(stream.counters.skips.load(Ordering::Relaxed), 1);
        // The rest of chunk 0, then the newest join point (chunk 12) on.
        assert_eq!(place.queue[0].0.len(), 5_000);
        assert_eq!(place.queue[1].0[0], 1);
        assert_eq!(place.queue.len(), 1 + 6);
        assert_eq!(place.cursor, Some(18));
    }

    #[test]
    fn a_viewer_that_falls_behind_is_dropped_by_the_drop_policy() {
        let (mut ring, stream) = (ring(2), stream(SlowPolicy::Drop));
        let mut place = place();
        place.top_up(&ring, &stream).unwrap();
        for part in 6..18 {
            ring.push(Entry {
                bytes: Bytes::from(vec![1u8; 10_000]),
                join: part % 6 == 0,
                capture_micros: part * SECOND / 3,
            });
        }
        assert!(place.top_up(&ring, &stream).is_err());
        assert_eq!(stream.counters.drops.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn another_edge_gets_the_stream_in_frames() {
        let (ring, stream) = (ring(5), stream(SlowPolicy::Skip));
        let mut place = Place::new(true, false);
        place.top_up(&ring, &stream).unwrap();
        let mut decoder = chunks::Decoder::new();
        for (bytes, _) in &place.queue {
            decoder.extend(bytes);
        }
        let header = decoder.next_frame().unwrap().unwrap();
        assert_eq!(
            (header.kind, &header.bytes[..]),
            (Kind::Header, &b"head"[..])
        );
        let first = decoder.next_frame().unwrap().unwrap();
        assert_eq!(first.kind, Kind::Chunk { join: true });
        assert_eq!(first.capture_micros, 4 * SECOND, "chunk 12, at 4 s");
        assert_eq!(first.bytes.len(), 10_000);
        let second = decoder.next_frame().unwrap().unwrap();
        assert_eq!(second.kind, Kind::Chunk { join: false });
    }

    /// Copies up to `budget` bytes from the front of the queue to `out`, as a socket would
    /// take them.
    fn write_out(place: &mut Place, budget: usize, out: &mut Vec<u8>) {
        let mut taken = 0;
        for (piece, _) in &place.queue {
            let take = piece.len().min(budget - taken);
            out.extend_from_slice(&piece[..take]);
            taken += take;
            if taken == budget {
                break;
            }
        }
        place.wrote(taken);
    }

    /// What a viewer writing `pace` bytes per chunk landed gets over 30 chunks, handed over at
    /// chunk `handover` (if any) to a process whose ring began at the join point of chunk 6.
    fn watched(framed: bool, icy: bool, pace: usize, handover: Option<u64>) -> Vec<u8> {
        let policy = MountPolicy {
            max_lag: Duration::from_secs(3600),
            max_lag_bytes: 1 << 30,
            ..MountPolicy::default()
        };
        let stream = Stream::new("/live/demo/stream.mp3", policy, Default::default());
        set_title(&stream, "Song A");
        let limits = Limits {
            bytes: 1 << 30,
            micros: 3600 * SECOND,
        };
        let chunk = |part: u64| Entry {
            bytes: Bytes::from(vec![part as u8; 10_000 + part as usize * 7]),
            join: part.is_multiple_of(6),
            capture_micros: part * SECOND / 3,
        };
        let (mut old, mut new) = (
            Ring::new(Bytes::from_static(b"head"), limits),
            Ring::new(Bytes::from_static(b"head"), limits),
        );
        old.push(chunk(0));
        let (mut place, mut handed, mut out) = (Place::new(framed, icy), false, Vec::new());
        for part in 1..30 {
            old.push(chunk(part));
            if part >= 6 {
                new.push(chunk(part));
            }
            if part == 12 {
                set_title(&stream, "Song B");
            }
            place
                .top_up(if handed { &new } else { &old }, &stream)
                .unwrap();
            write_out(&mut place, pace, &mut out);
            if handover == Some(part) {
                let position = place.position().expect("past the header");
                place = Place::resumed(framed, icy, position);
                handed = true;
            }
        }
        out
    }

    #[test]
    fn a_viewer_handed_over_gets_every_byte_once() {
        for (framed, icy) in [(false, false), (false, true), (true, false)] {
            for pace in [6_999, 9_001, 16_000, 25_013] {
                let whole = watched(framed, icy, pace, None);
                for handover in 8..29 {
                    let mut handed = watched(framed, icy, pace, Some(handover));
                    let mut whole = whole.clone();
                    if icy {
                        // A block's title is the stream's when its chunk was queued, which
                        // the new process does again: the audio and where the blocks fall are
                        // what must not change.
                        (whole, handed) = (icy_audio(&whole), icy_audio(&handed));
                    }
                    if framed {
                        // Likewise where a title frame falls: every other frame must be the
                        // same, whole.
                        (whole, handed) = (untitled(&whole), untitled(&handed));
                    }
                    assert!(
                        handed == whole,
                        "framed {framed}, icy {icy}, {pace} bytes a chunk, handed over at \
                         chunk {handover}: {} bytes instead of {}, first difference at {:?}",
                        handed.len(),
                        whole.len(),
                        handed.iter().zip(&whole).position(|(a, b)| a != b)
                    );
                }
            }
        }
    }

    /// A framed stream without its title frames, re-encoded; panics where a frame is not one.
    fn untitled(bytes: &[u8]) -> Vec<u8> {
        let mut decoder = chunks::Decoder::new();
        decoder.extend(bytes);
        let mut out = Vec::new();
        while let Some(next) = decoder.next_frame().unwrap() {
            if next.kind != Kind::Title {
                out.extend_from_slice(&frame(next.kind, next.capture_micros, &next.bytes));
            }
        }
        assert!(decoder.next_frame().unwrap().is_none());
        out
    }

    /// The audio of an ICY stream, its blocks taken out; panics where a block is not one.
    fn icy_audio(mut bytes: &[u8]) -> Vec<u8> {
        let mut audio = Vec::new();
        loop {
            let take = bytes.len().min(icy::INTERVAL);
            audio.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let Some((&length, rest)) = bytes.split_first() else {
                return audio;
            };
            let length = usize::from(length) * 16;
            assert!(
                length == 0 || rest[..length].starts_with(b"StreamTitle='"),
                "no block where one is due, {} bytes into the audio",
                audio.len()
            );
            bytes = &rest[length.min(rest.len())..];
        }
    }

    #[test]
    fn a_viewer_is_handed_over_fresh_before_anything_is_written_and_not_mid_header() {
        let (ring, stream) = (ring(2), stream(SlowPolicy::Skip));
        let mut place = Place::new(true, false);
        place.top_up(&ring, &stream).unwrap();
        assert_eq!(place.position().unwrap().next, Next::Fresh);
        place.wrote(3);
        assert_eq!(place.position(), None, "the header frame is part-way out");
        let header_frame = chunks::HEAD_LENGTH + 4;
        place.wrote(header_frame - 3);
        let position = place.position().unwrap();
        assert_eq!((position.next, position.pending.len()), (Next::Join, 0));
        // A viewer that is far behind the new ring goes on from its newest join point.
        let mut far = Place::resumed(
            false,
            false,
            Position {
                next: Next::After(0),
                pending: Bytes::from_static(b"rest"),
                icy: None,
                title_sent: "".into(),
            },
        );
        let short = {
            let mut short = Ring::new(
                Bytes::from_static(b"head"),
                Limits {
                    bytes: 1 << 30,
                    micros: SECOND,
                },
            );
            for part in 0..15 {
                short.push(Entry {
                    bytes: Bytes::from(vec![0u8; 10]),
                    join: part % 6 == 0,
                    capture_micros: part * SECOND / 3,
                });
            }
            short
        };
        far.top_up(&short, &stream).unwrap();
        assert_eq!(&far.queue[0].0[..], b"rest", "the pending bytes first");
        assert_eq!(far.cursor, Some(15), "from chunk 12 on");
        assert_eq!(stream.counters.skips.load(Ordering::Relaxed), 1);
    }

    fn set_title(stream: &Stream, title: &str) {
        *stream.title.lock().unwrap() = title.into();
    }

    #[test]
    fn a_radio_listener_gets_the_title_every_interval_and_a_skip_keeps_the_count() {
        let (mut ring, stream) = (ring(2), stream(SlowPolicy::Skip));
        set_title(&stream, "Song A");
        let mut place = Place::new(false, true);
        place.top_up(&ring, &stream).unwrap(); // header + chunks 0..6: 60,000 bytes of audio
        let sent: Vec<u8> = place.queue.iter().flat_map(|(b, _)| b.to_vec()).collect();
        // "head", then audio; a block after every 16,000 bytes of audio (the header counts
        // as the stream's bytes too).
        let block = icy::block("Song A");
        let at = 16_000;
        assert_eq!(&sent[at..at + block.len()], &block[..]);
        assert_eq!(sent[2 * at + block.len()], 0, "no change: one zero byte");

        // The header, chunk 0 and part of chunk 1 out: chunk 1 is in three pieces (audio, the
        // block at 16,000, audio), the first part-way written. Then the listener falls behind
        // and skips to chunk 12.
        let written = 4 + 10_000 + 3_000;
        place.wrote(written);
        assert_eq!(
            place.queue[1].0, block,
            "the block is a piece of its own: no copy"
        );
        for part in 6..18 {
            ring.push(Entry {
                bytes: Bytes::from(vec![1u8; 10_000]),
                join: part % 6 == 0,
                capture_micros: part * SECOND / 3,
            });
        }
        set_title(&stream, "Song B");
        place.top_up(&ring, &stream).unwrap();
        assert_eq!(stream.counters.skips.load(Ordering::Relaxed), 1);
        // What the listener gets from here: the rest of chunk 1, its block included, then
        // chunks 12 to 17; its blocks fall every 16,000 bytes of what it actually got.
        let mut heard = written;
        let mut titles = Vec::new();
        let rest: Vec<u8> = place.queue.iter().flat_map(|(b, _)| b.to_vec()).collect();
        let mut bytes = &rest[..];
        while !bytes.is_empty() {
            let take = (16_000 - heard % 16_000).min(bytes.len());
            heard += take;
            bytes = &bytes[take..];
            if heard % 16_000 == 0 && !bytes.is_empty() {
                let length = usize::from(bytes[0]) * 16;
                titles.push(String::from_utf8_lossy(&bytes[1..1 + length]).into_owned());
                bytes = &bytes[1 + length..];
            }
        }
        assert_eq!(heard, 4 + 2 * 10_000 + 6 * 10_000, "{titles:?}");
        assert!(titles[0].starts_with("StreamTitle='Song A';"), "{titles:?}");
        assert!(titles[1].starts_with("StreamTitle='Song B';"), "{titles:?}");
        assert!(titles[2..].iter().all(String::is_empty), "{titles:?}");
    }

    #[test]
    fn an_edge_behind_gets_the_title_in_frames_when_it_changes() {
        let (mut ring, stream) = (ring(2), stream(SlowPolicy::Skip));
        set_title(&stream, "Morning show");
        let mut place = Place::new(true, false);
        place.top_up(&ring, &stream).unwrap();
        let mut decoder = chunks::Decoder::new();
        let mut frames = |place: &mut Place| {
            for (bytes, _) in place.queue.drain(..) {
                decoder.extend(&bytes);
            }
            let mut out = Vec::new();
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push((frame.kind, frame.bytes));
            }
            out
        };
        let first = frames(&mut place);
        assert_eq!(first[0].0, Kind::Header);
        assert_eq!(first[1], (Kind::Title, Bytes::from_static(b"Morning show")));
        assert_eq!(first[2].0, Kind::Chunk { join: true });
        ring.push(Entry {
            bytes: Bytes::from(vec![1u8; 10_000]),
            join: false,
            capture_micros: 2 * SECOND,
        });
        set_title(&stream, "News");
        place.top_up(&ring, &stream).unwrap();
        let next = frames(&mut place);
        assert_eq!(next[0], (Kind::Title, Bytes::from_static(b"News")));
        assert_eq!(next[1].0, Kind::Chunk { join: false });
    }
}
