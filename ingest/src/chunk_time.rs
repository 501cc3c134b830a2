//! Reads back the times the muxer wrote into a track: the timescale from its CMAF header and,
//! from each chunk's `moof`, when its first sample is presented on the UTC timeline.
//!
//! Whether a chunk begins a segment is decided from these times, which are the chunk's own,
//! rather than from the GStreamer segment it was delivered in: across a looped file's seam the
//! muxer hands out its last chunk of one loop under the next loop's segment, and a running time
//! computed from that pairing lands a whole loop away.

use mp4_atom::{Any, DecodeMaybe};

/// The track's timescale (`moov/trak/mdia/mdhd`), from a CMAF header.
pub fn header_timescale(header: &[u8]) -> Option<u32> {
    top_level(header).find_map(|atom| match atom {
        Any::Moov(moov) => moov.trak.first().map(|trak| trak.mdia.mdhd.timescale),
        _ => None,
    })
}

/// When the first sample of a chunk (`[styp] moof mdat`) is presented, in nanoseconds on the
/// UTC timeline: its `tfdt` plus the first sample's composition offset, in `timescale` ticks.
pub fn chunk_start_ns(chunk: &[u8], timescale: u32) -> Option<u64> {
    if timescale == 0 {
        return None;
    }
    let moof = top_level(chunk).find_map(|atom| match atom {
        Any::Moof(moof) => Some(moof),
        _ => None,
    })?;
    let traf = moof.traf.first()?;
    let decode = traf.tfdt.as_ref()?.base_media_decode_time;
    let offset = traf
        .trun
        .first()
        .and_then(|trun| trun.samples.get(0))
        .and_then(|sample| sample.cts)
        .unwrap_or(0);
    let ticks = i128::from(decode) + i128::from(offset);
    let ns = ticks.max(0) * 1_000_000_000 / i128::from(timescale);
    u64::try_from(ns).ok()
}

/// The boxes at the top level of `bytes`, decoded one at a time up to the first that does not
/// decode; callers stop at the box they look for, before a chunk's `mdat`.
fn top_level(bytes: &[u8]) -> impl Iterator<Item = Any> + '_ {
    let mut cursor = std::io::Cursor::new(bytes);
    std::iter::from_fn(move || Any::decode_maybe(&mut cursor).ok().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp3::Mp3Fragmenter;
    use crate::output::TrackEvent;
    use crate::timing::UtcGrid;
    use bytes::Bytes;
    use std::time::Duration;

    const SECOND: u64 = 1_000_000_000;
    /// 2026-11-21 00:00:00 UTC, a multiple of 2 s.
    const EPOCH_2026: u64 = 1_795_219_200 * SECOND;

    /// A 128 kbit/s, 48 kHz, stereo MPEG-1 Layer III frame: 1152 samples, 24 ms.
    fn mp3_frame() -> Bytes {
        let mut frame = vec![0u8; 384];
        frame[..4].copy_from_slice(&[0xff, 0xfb, 0x94, 0x04]);
        Bytes::from(frame)
    }

    /// A real header and the chunks (from the MP3 fragmenter) of 3.6 s of frames from `from`.
    fn track(from: u64) -> (Bytes, Vec<Bytes>) {
        let mut fragmenter = Mp3Fragmenter::new(UtcGrid::new(Duration::from_secs(2), 6));
        let mut events = Vec::new();
        for n in 0..150u64 {
            events.extend(fragmenter.push(mp3_frame(), from + n * 24_000_000));
        }
        let mut header = None;
        let mut chunks = Vec::new();
        for event in events {
            match event {
                TrackEvent::Header(bytes) => header = Some(bytes),
                TrackEvent::Chunk { data, .. } => chunks.push(data),
            }
        }
        (header.expect("a header"), chunks)
    }

    #[test]
    fn chunks_start_where_their_tfdt_says() {
        let (header, chunks) = track(EPOCH_2026);
        let timescale = header_timescale(&header).unwrap();
        assert_eq!(timescale, 48_000);
        let starts: Vec<u64> = chunks
            .iter()
            .map(|chunk| chunk_start_ns(chunk, timescale).unwrap())
            .collect();
        // The first chunk starts on the boundary; each later one with the first frame of its
        // part (frames are 24 ms, parts 333.3 ms).
        assert_eq!(starts[0], EPOCH_2026);
        let grid = UtcGrid::new(Duration::from_secs(2), 6);
        for (index, start) in starts.iter().enumerate() {
            assert_eq!(
                grid.position(*start).part,
                (index % 6) as u32,
                "chunk {index}"
            );
            let part_start = EPOCH_2026 + index as u64 * 2 * SECOND / 6;
            assert!(start - part_start < 24_000_000, "chunk {index} at {start}");
        }
    }

    /// The loop seam: the muxer delivers a chunk that begins a segment under the next loop's
    /// GStreamer segment. Read from the chunk, its start is on the boundary all the same.
    #[test]
    fn a_segment_start_is_read_from_the_chunk_not_from_the_delivery() {
        let (header, chunks) = track(EPOCH_2026 - 2 * SECOND / 3);
        let timescale = header_timescale(&header).unwrap();
        let grid = UtcGrid::new(Duration::from_secs(2), 6);
        let segment_starts: Vec<usize> = chunks
            .iter()
            .enumerate()
            .filter(|(_, chunk)| {
                grid.position(chunk_start_ns(chunk, timescale).unwrap())
                    .part
                    == 0
            })
            .map(|(index, _)| index)
            .collect();
        // Two parts of the segment before, then a whole segment from chunk 2 on: chunk 8
        // starts the next one.
        assert_eq!(segment_starts, [2, 8]);
    }

    #[test]
    fn what_is_not_cmaf_has_no_time() {
        assert_eq!(header_timescale(b"not a box"), None);
        assert_eq!(chunk_start_ns(b"\0\0\0\x08free", 48_000), None);
        let (header, chunks) = track(EPOCH_2026);
        assert_eq!(chunk_start_ns(&chunks[0], 0), None);
        assert_eq!(chunk_start_ns(&header, 48_000), None);
        // A chunk cut short inside its moof.
        assert_eq!(chunk_start_ns(&chunks[0][..40], 48_000), None);
    }
}
