//! The ring of one continuous stream (sans IO): the stream's header and its recent chunks, each
//! numbered, shared by every viewer, with one cursor (a chunk number) per viewer kept by the
//! viewer. A new viewer starts on the newest chunk a decoder can start from, or earlier for a
//! burst; a viewer whose cursor fell out of the ring, or lags by more than its policy allows,
//! is moved or dropped by the caller.

use std::collections::VecDeque;

use bytes::Bytes;

/// How much a ring keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of chunks.
    pub bytes: usize,
    /// Media time between the oldest chunk and the newest, in microseconds.
    pub micros: u64,
}

/// One chunk of the stream.
#[derive(Clone, Debug)]
pub struct Entry {
    pub bytes: Bytes,
    /// A decoder can start here.
    pub join: bool,
    /// When its first sample was captured, in UTC microseconds.
    pub capture_micros: u64,
}

/// What a viewer at a cursor has to catch up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    pub bytes: usize,
    /// From the capture of the viewer's next chunk to the newest chunk's.
    pub micros: u64,
}

/// What a read at a cursor gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Chunks were added to the output; the cursor to read at next.
    Chunks { next: u64 },
    /// Nothing new yet.
    Nothing,
    /// The cursor's chunk left the ring: the viewer fell too far behind.
    Lost,
}

/// Where a viewer handed over from another process goes on ([`Ring::after`]).
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// At this chunk (the ring's end when the viewer had the newest one).
    At(u64),
    /// The viewer's chunk has not reached this ring yet.
    NotYet,
    /// The ring no longer holds the viewer's chunk: what followed it is lost.
    Gone,
}

pub struct Ring {
    header: Bytes,
    chunks: VecDeque<Entry>,
    /// The number of `chunks[0]`.
    first: u64,
    /// Bytes in `chunks`.
    bytes: usize,
    limits: Limits,
}

impl Ring {
    pub fn new(header: Bytes, limits: Limits) -> Ring {
        Ring::starting_at(header, limits, 0)
    }

    /// An empty ring whose first chunk will be number `first`.
    pub fn starting_at(header: Bytes, limits: Limits, first: u64) -> Ring {
        Ring {
            header,
            chunks: VecDeque::new(),
            first,
            bytes: 0,
            limits,
        }
    }

    pub fn header(&self) -> &Bytes {
        &self.header
    }

    /// The number the next chunk pushed will get.
    pub fn end(&self) -> u64 {
        self.first + self.chunks.len() as u64
    }

    /// Bytes held in chunks.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds the newest chunk, and lets go of the oldest ones beyond the limits (always keeping
    /// the newest join point, so that a new viewer can start).
    pub fn push(&mut self, entry: Entry) {
        self.bytes += entry.bytes.len();
        self.chunks.push_back(entry);
        let newest_capture = self.chunks.back().map_or(0, |e| e.capture_micros);
        let keep_from = self.newest_join().unwrap_or(self.end() - 1);
        while self.first < keep_from
            && let Some(oldest) = self.chunks.front()
            && (self.bytes > self.limits.bytes
                || newest_capture.saturating_sub(oldest.capture_micros) > self.limits.micros)
        {
            self.bytes -= oldest.bytes.len();
            self.chunks.pop_front();
            self.first += 1;
        }
    }

    /// The number of the newest chunk a decoder can start from.
    pub fn newest_join(&self) -> Option<u64> {
        self.chunks
            .iter()
            .rposition(|entry| entry.join)
            .map(|index| self.first + index as u64)
    }

    /// Where a new viewer starts: the newest join point that leaves at least `burst` bytes
    /// to send at once (the newest one when `burst` is 0), or `None` before the first join
    /// point.
    pub fn start(&self, burst: usize) -> Option<u64> {
        let mut after = 0;
        let mut found = None;
        for (index, entry) in self.chunks.iter().enumerate().rev() {
            after += entry.bytes.len();
            if entry.join {
                found = Some(self.first + index as u64);
                if after >= burst {
                    break;
                }
            }
        }
        found
    }

    /// How far behind a viewer at `cursor` is.
    pub fn lag(&self, cursor: u64) -> Lag {
        let Some(index) = cursor.checked_sub(self.first) else {
            return Lag {
                bytes: self.bytes,
                micros: u64::MAX,
            };
        };
        let behind = self.chunks.range(index as usize..);
        let newest = self.chunks.back().map_or(0, |e| e.capture_micros);
        let mut lag = Lag {
            bytes: 0,
            micros: 0,
        };
        for (position, entry) in behind.enumerate() {
            if position == 0 {
                lag.micros = newest.saturating_sub(entry.capture_micros);
            }
            lag.bytes += entry.bytes.len();
        }
        lag
    }

    /// When the newest chunk was captured (0 for an empty ring).
    pub fn newest_capture(&self) -> u64 {
        self.chunks.back().map_or(0, |entry| entry.capture_micros)
    }

    /// Adds the chunks from `cursor` on to `out`, up to about `budget` bytes (at least one
    /// chunk when there is one).
    pub fn read(&self, cursor: u64, budget: usize, out: &mut Vec<Entry>) -> Read {
        let Some(index) = cursor.checked_sub(self.first) else {
            return Read::Lost;
        };
        let mut next = cursor;
        let mut taken = 0;
        for entry in self.chunks.range((index as usize).min(self.chunks.len())..) {
            if taken > 0 && taken + entry.bytes.len() > budget {
                break;
            }
            taken += entry.bytes.len();
            out.push(entry.clone());
            next += 1;
        }
        if next == cursor {
            Read::Nothing
        } else {
            Read::Chunks { next }
        }
    }

    /// Where a viewer goes on that has had every chunk up to the one captured at `capture`
    /// (from another process reading the same upstream: chunks are told apart by their
    /// capture times, not their numbers).
    pub fn after(&self, capture: u64) -> After {
        match self.chunks.back() {
            None => return After::NotYet,
            Some(newest) if newest.capture_micros < capture => return After::NotYet,
            Some(_) => {}
        }
        match self.chunks.front() {
            Some(oldest) if oldest.capture_micros > capture => After::Gone,
            _ => {
                // The first chunk captured after it: the next one, when the ring holds that
                // chunk (one with its exact time, as both processes were sent the same).
                let next = self
                    .chunks
                    .iter()
                    .position(|entry| entry.capture_micros > capture)
                    .map_or(self.end(), |index| self.first + index as u64);
                After::At(next)
            }
        }
    }

    /// The capture time of chunk `cursor`, if the ring holds it.
    pub fn capture_micros(&self, cursor: u64) -> Option<u64> {
        let index = cursor.checked_sub(self.first)?;
        self.chunks
            .get(index as usize)
            .map(|entry| entry.capture_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn entry(size: usize, join: bool, capture_micros: u64) -> Entry {
        Entry {
            bytes: Bytes::from(vec![0u8; size]),
            join,
            capture_micros,
        }
    }

    /// Three parts a second, a join point every two seconds, 100 bytes a chunk.
    fn ring_with(seconds: u64, limits: Limits) -> Ring {
        let mut ring = Ring::new(Bytes::from_static(b"init"), limits);
        for part in 0..seconds * 3 {
            ring.push(entry(100, part % 6 == 0, part * SECOND / 3));
        }
        ring
    }

    const ROOMY: Limits = Limits {
        bytes: 1 << 20,
        micros: 60 * SECOND,
    };

    #[test]
    fn a_new_viewer_starts_on_the_newest_join_point_or_earlier_for_a_burst() {
        let ring = ring_with(5, ROOMY); // chunks 0..15, join points at 0, 6, 12
        assert_eq!(ring.start(0), Some(12));
        assert_eq!(ring.start(300), Some(12), "chunks 12 to 14 are 300 bytes");
        assert_eq!(ring.start(301), Some(6));
        assert_eq!(
            ring.start(1_000_000),
            Some(0),
            "the oldest join point at most"
        );
        let mut waiting = Ring::new(Bytes::new(), ROOMY);
        waiting.push(entry(100, false, 0));
        assert_eq!(waiting.start(0), None);
    }

    #[test]
    fn reads_take_chunks_in_order_within_a_budget() {
        let ring = ring_with(2, ROOMY); // chunks 0..6
        let mut out = Vec::new();
        assert_eq!(ring.read(1, 250, &mut out), Read::Chunks { next: 3 });
        assert_eq!(out.len(), 2);
        out.clear();
        assert_eq!(
            ring.read(5, 10, &mut out),
            Read::Chunks { next: 6 },
            "one chunk at least"
        );
        assert_eq!(ring.read(6, 1000, &mut out), Read::Nothing);
    }

    #[test]
    fn old_chunks_go_beyond_the_limits_but_the_newest_join_point_stays() {
        let limits = Limits {
            bytes: 1 << 20,
            micros: 3 * SECOND,
        };
        let ring = ring_with(10, limits); // 30 chunks, 10 s
        assert!(ring.first > 0);
        let mut out = Vec::new();
        assert_eq!(ring.read(0, 1000, &mut out), Read::Lost);
        assert!(ring.lag(ring.first).micros <= 3 * SECOND);

        // By bytes: however small the budget, the newest join point stays.
        let tight = Limits {
            bytes: 150,
            micros: 60 * SECOND,
        };
        let ring = ring_with(5, tight);
        assert_eq!(ring.newest_join(), Some(12));
        assert_eq!(ring.start(0), Some(12));
        assert_eq!(ring.bytes(), 300);
    }

    #[test]
    fn a_viewer_from_another_process_goes_on_after_its_chunk_by_capture_time() {
        let ring = ring_with(2, ROOMY); // chunks 0..6, captured every third of a second
        assert_eq!(ring.after(0), After::At(1));
        assert_eq!(ring.after(2 * SECOND / 3), After::At(3));
        assert_eq!(
            ring.after(5 * SECOND / 3),
            After::At(6),
            "the newest: the end"
        );
        assert_eq!(ring.after(2 * SECOND), After::NotYet, "not here yet");
        let late = Ring::new(Bytes::new(), ROOMY);
        assert_eq!(late.after(0), After::NotYet);
        let limits = Limits {
            bytes: 1 << 20,
            micros: SECOND,
        };
        let short = ring_with(5, limits);
        assert_eq!(short.after(0), After::Gone);
    }

    #[test]
    fn lag_is_counted_in_bytes_and_media_time() {
        let ring = ring_with(4, ROOMY); // chunks 0..12, the newest captured at 11/3 s
        assert_eq!(
            ring.lag(9),
            Lag {
                bytes: 300,
                micros: 11 * SECOND / 3 - 3 * SECOND
            }
        );
        assert_eq!(ring.lag(12).bytes, 0);
        assert_eq!(ring.capture_micros(3), Some(SECOND));
        assert_eq!(ring.capture_micros(12), None);
    }
}
