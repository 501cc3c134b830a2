//! `stream.mp4`: fragmented MP4 with one header holding both tracks (video as track 1, audio
//! as track 2) and then every chunk of either as `moof` + `mdat`, as MSE plays from one
//! SourceBuffer and ffmpeg reads from a pipe. The ingest's boxes are kept byte for byte: only
//! the track ids and the fragment sequence numbers are rewritten, in a copy of the small
//! `moof`, while the `mdat` is the window's shared bytes.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{ContinuousError, Role};
use crate::cmaf::{Chunk, TrackHeader};

/// `tfhd` flag: base-data-offset-present (an absolute offset into the ingest's stream, which
/// means nothing in another one).
const BASE_DATA_OFFSET_PRESENT: u32 = 0x00_0001;

pub struct Mp4Stream {
    init: Bytes,
    /// Track ids in the stream, per role (absent when the role is not carried).
    ids: [Option<u32>; 2],
    codecs: Vec<String>,
    sequence: u32,
}

/// A box found in a buffer: its type and where it is, header included.
#[derive(Clone, Debug)]
struct Found {
    kind: [u8; 4],
    range: Range<usize>,
    /// Where its body begins.
    body: usize,
}

/// Why a header or a chunk cannot be taken apart into the boxes `stream.mp4` rewrites.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BoxError {
    #[error("a box header is cut short at byte {at}")]
    HeaderCutShort { at: usize },
    #[error("a large box header is cut short at byte {at}")]
    LargeHeaderCutShort { at: usize },
    #[error("box {kind:?} at byte {at} claims {size} bytes")]
    BadSize {
        kind: String,
        at: usize,
        size: usize,
    },
    #[error("a field at byte {at} is past the box's end")]
    FieldPastEnd { at: usize },
    #[error("no {0}")]
    Missing(&'static str),
    #[error("an empty {0}")]
    Empty(&'static str),
    #[error("its tfhd has an absolute base data offset; CMAF chunks are relative to their moof")]
    AbsoluteOffset,
}

/// The boxes one after another in `data[range]`.
fn boxes(data: &[u8], range: Range<usize>) -> Result<Vec<Found>, BoxError> {
    let mut found = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let header = data
            .get(at..at + 8)
            .ok_or(BoxError::HeaderCutShort { at })?;
        let kind = [header[4], header[5], header[6], header[7]];
        let (size, body) = match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
            0 => (range.end - at, at + 8),
            1 => {
                let large = data
                    .get(at + 8..at + 16)
                    .ok_or(BoxError::LargeHeaderCutShort { at })?;
                let size = u64::from_be_bytes(large.try_into().unwrap_or_default());
                (usize::try_from(size).unwrap_or(usize::MAX), at + 16)
            }
            size => (size as usize, at + 8),
        };
        let end = at.checked_add(size).filter(|end| *end <= range.end);
        let end = match end {
            Some(end) if size >= body - at => end,
            _ => {
                return Err(BoxError::BadSize {
                    kind: String::from_utf8_lossy(&kind).into_owned(),
                    at,
                    size,
                });
            }
        };
        found.push(Found {
            kind,
            range: at..end,
            body,
        });
        at = end;
    }
    Ok(found)
}

fn find<'a>(found: &'a [Found], kind: &[u8; 4]) -> Option<&'a Found> {
    found.iter().find(|b| &b.kind == kind)
}

/// A box with this `kind` around `body`.
fn wrap(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn put_u32(data: &mut [u8], at: usize, value: u32) -> Result<(), BoxError> {
    data.get_mut(at..at + 4)
        .ok_or(BoxError::FieldPastEnd { at })?
        .copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// What one track's header brings to the combined one: its `trak` and `trex` with `id`.
struct TrackBoxes {
    ftyp: Vec<u8>,
    mvhd: Vec<u8>,
    trak: Vec<u8>,
    trex: Vec<u8>,
}

fn track_boxes(header: &[u8], id: u32) -> Result<TrackBoxes, BoxError> {
    let top = boxes(header, 0..header.len())?;
    let ftyp = find(&top, b"ftyp").ok_or(BoxError::Missing("ftyp"))?;
    let moov = find(&top, b"moov").ok_or(BoxError::Missing("moov"))?;
    let inside = boxes(header, moov.body..moov.range.end)?;
    let mvhd = find(&inside, b"mvhd").ok_or(BoxError::Missing("mvhd"))?;
    let trak = find(&inside, b"trak").ok_or(BoxError::Missing("trak"))?;

    let mut trak_bytes = header[trak.range.clone()].to_vec();
    let in_trak = boxes(header, trak.body..trak.range.end)?;
    let tkhd = find(&in_trak, b"tkhd").ok_or(BoxError::Missing("tkhd"))?;
    // tkhd: version, flags, then creation and modification times (4 or 8 bytes each).
    let version = header
        .get(tkhd.body)
        .copied()
        .ok_or(BoxError::Empty("tkhd"))?;
    let id_at = tkhd.body - trak.range.start + if version == 1 { 20 } else { 12 };
    put_u32(&mut trak_bytes, id_at, id)?;

    let trex = inside
        .iter()
        .find(|b| &b.kind == b"mvex")
        .map(|mvex| boxes(header, mvex.body..mvex.range.end))
        .transpose()?
        .and_then(|in_mvex| find(&in_mvex, b"trex").cloned());
    let trex = match trex {
        Some(trex) => {
            let mut bytes = header[trex.range.clone()].to_vec();
            put_u32(&mut bytes, trex.body - trex.range.start + 4, id)?;
            bytes
        }
        // No defaults: every fragment says what it needs; sample description 1.
        None => {
            let mut body = vec![0; 4];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&1u32.to_be_bytes());
            body.extend_from_slice(&[0; 12]);
            wrap(b"trex", &body)
        }
    };
    Ok(TrackBoxes {
        ftyp: header[ftyp.range.clone()].to_vec(),
        mvhd: header[mvhd.range.clone()].to_vec(),
        trak: trak_bytes,
        trex,
    })
}

impl Mp4Stream {
    pub fn new(
        video: Option<&TrackHeader>,
        audio: Option<&TrackHeader>,
    ) -> Result<Mp4Stream, ContinuousError> {
        let mut tracks = Vec::new();
        let mut ids = [None, None];
        let mut codecs = Vec::new();
        for (role, header) in [(Role::Video, video), (Role::Audio, audio)] {
            let Some(header) = header else { continue };
            let id = tracks.len() as u32 + 1;
            let boxes = track_boxes(&header.bytes, id)
                .map_err(|error| ContinuousError::BadHeader { role, error })?;
            tracks.push(boxes);
            ids[role.index()] = Some(id);
            codecs.push(header.media.codec().to_owned());
        }
        let Some(first) = tracks.first() else {
            return Err(ContinuousError::NothingToCarry {
                format: super::StreamFormat::Mp4,
                what: "a video or audio track",
            });
        };
        // mvhd ends with next_track_id.
        let mut mvhd = first.mvhd.clone();
        let next_id = tracks.len() as u32 + 1;
        let end = mvhd.len();
        put_u32(&mut mvhd, end.saturating_sub(4), next_id).map_err(|error| {
            ContinuousError::BadHeader {
                role: Role::Video,
                error,
            }
        })?;
        let mut moov = mvhd;
        for track in &tracks {
            moov.extend_from_slice(&track.trak);
        }
        let mvex: Vec<u8> = tracks.iter().flat_map(|t| t.trex.iter().copied()).collect();
        moov.extend(wrap(b"mvex", &mvex));
        let mut init = first.ftyp.clone();
        init.extend(wrap(b"moov", &moov));
        Ok(Mp4Stream {
            init: Bytes::from(init),
            ids,
            codecs,
            sequence: 0,
        })
    }

    /// `ftyp` + `moov`, sent first to every viewer.
    pub fn init(&self) -> Bytes {
        self.init.clone()
    }

    pub fn has_video(&self) -> bool {
        self.ids[Role::Video.index()].is_some()
    }

    pub fn carries(&self, role: Role) -> bool {
        self.ids[role.index()].is_some()
    }

    pub fn mime(&self) -> String {
        let kind = if self.has_video() { "video" } else { "audio" };
        format!("{kind}/mp4; codecs=\"{}\"", self.codecs.join(","))
    }

    /// The chunk as this stream's next fragment: a rewritten copy of its `moof`, then the rest
    /// of it (the `mdat`) shared. A `styp` before the `moof` is left out: the stream is one
    /// long fragmented file, not a run of segments.
    pub fn push(&mut self, role: Role, chunk: &Chunk) -> Result<Vec<Bytes>, ContinuousError> {
        let id = self.ids[role.index()].ok_or_else(|| ContinuousError::Unsupported {
            format: super::StreamFormat::Mp4,
            what: format!("a {role:?} track it was not opened with"),
        })?;
        let bad = |error: BoxError| ContinuousError::BadFragment { role, error };
        let bytes = &chunk.bytes;
        let top = boxes(bytes, 0..bytes.len()).map_err(bad)?;
        let moof = find(&top, b"moof").ok_or_else(|| bad(BoxError::Missing("moof")))?;
        let mut copy = BytesMut::from(&bytes[moof.range.clone()]);
        let offset = moof.range.start;
        self.sequence = self.sequence.wrapping_add(1);
        for inside in boxes(bytes, moof.body..moof.range.end).map_err(bad)? {
            match &inside.kind {
                // mfhd: version and flags, then sequence_number.
                b"mfhd" => {
                    put_u32(&mut copy, inside.body - offset + 4, self.sequence).map_err(bad)?
                }
                b"traf" => {
                    let in_traf = boxes(bytes, inside.body..inside.range.end).map_err(bad)?;
                    let tfhd =
                        find(&in_traf, b"tfhd").ok_or_else(|| bad(BoxError::Missing("tfhd")))?;
                    let flags = bytes
                        .get(tfhd.body..tfhd.body + 4)
                        .map(|f| u32::from_be_bytes([0, f[1], f[2], f[3]]))
                        .ok_or_else(|| bad(BoxError::Empty("tfhd")))?;
                    if flags & BASE_DATA_OFFSET_PRESENT != 0 {
                        return Err(bad(BoxError::AbsoluteOffset));
                    }
                    put_u32(&mut copy, tfhd.body - offset + 4, id).map_err(bad)?;
                }
                _ => {}
            }
        }
        Ok(vec![copy.freeze(), bytes.slice(moof.range.end..)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf;
    use crate::testing::{self, TrackSpec, parsed_header as header};
    use mp4_atom::{Any, Decode};

    fn decode_all(bytes: &[u8]) -> Vec<Any> {
        let mut cursor = bytes;
        let mut atoms = Vec::new();
        while !cursor.is_empty() {
            atoms.push(Any::decode(&mut cursor).unwrap());
        }
        atoms
    }

    #[test]
    fn one_header_with_both_tracks_then_their_fragments() {
        let (video_spec, audio_spec) = (TrackSpec::video(), TrackSpec::audio());
        let (video, audio) = (header(&video_spec), header(&audio_spec));
        let mut stream = Mp4Stream::new(Some(&video), Some(&audio)).unwrap();
        assert_eq!(stream.mime(), "video/mp4; codecs=\"avc1.64001f,mp4a.40.2\"");

        let mut out = vec![stream.init()];
        let start = testing::DAY_START_SECONDS;
        for index in 0..3u64 {
            for (role, spec, header) in [
                (Role::Video, &video_spec, &video),
                (Role::Audio, &audio_spec, &audio),
            ] {
                let at = start * u64::from(spec.timescale) + index * spec.chunk_ticks();
                let bytes = testing::chunk(spec, 40 + index as u32, at, spec.samples_per_chunk);
                let chunk = cmaf::parse_chunk(Bytes::from(bytes), header).unwrap();
                let pieces = stream.push(role, &chunk).unwrap();
                // The mdat is the chunk's own memory, not a copy.
                let mdat = &pieces[1];
                assert!(chunk.bytes.as_ptr_range().contains(&mdat.as_ptr()));
                out.extend(pieces);
            }
        }
        let all: Vec<u8> = out.concat();
        let atoms = decode_all(&all);
        let Any::Ftyp(_) = &atoms[0] else {
            panic!("ftyp first, not {:?}", atoms[0])
        };
        let Any::Moov(moov) = &atoms[1] else {
            panic!("moov second")
        };
        let ids: Vec<u32> = moov.trak.iter().map(|t| t.tkhd.track_id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(moov.mvhd.next_track_id, 3);
        let handlers: Vec<_> = moov
            .trak
            .iter()
            .map(|t| t.mdia.hdlr.handler.to_string())
            .collect();
        assert_eq!(handlers, ["vide", "soun"]);
        let trex: Vec<u32> = moov
            .mvex
            .as_ref()
            .unwrap()
            .trex
            .iter()
            .map(|t| t.track_id)
            .collect();
        assert_eq!(trex, [1, 2]);

        // Six fragments, no styp, sequence numbers 1.., alternating tracks, data intact.
        let fragments: Vec<&Any> = atoms[2..].iter().collect();
        assert_eq!(fragments.len(), 12);
        let mut sequence = 0;
        for pair in fragments.chunks(2) {
            let (Any::Moof(moof), Any::Mdat(mdat)) = (pair[0], pair[1]) else {
                panic!("moof then mdat, not {pair:?}")
            };
            sequence += 1;
            assert_eq!(moof.mfhd.sequence_number, sequence);
            let expected_id = if sequence % 2 == 1 { 1 } else { 2 };
            assert_eq!(moof.traf[0].tfhd.track_id, expected_id);
            // Audio samples are all filler naming their chunk; video ones after their NAL
            // unit header.
            let index = (sequence - 1) / 2;
            let filler = mdat.data.iter().filter(|b| **b == 40 + index as u8).count();
            let samples = if expected_id == 1 { 10 } else { 16 };
            assert!(filler >= samples * 45, "{filler} bytes of filler");
        }
        // The data offsets still point into the mdat: read the samples back from the stream.
        let moof_at = stream.init().len();
        let first = Bytes::from(all[moof_at..].to_vec());
        let first_len = out[1].len() + out[2].len();
        let samples = cmaf::samples(&first.slice(..first_len), &video).unwrap();
        assert_eq!(samples.len(), 10);
        assert_eq!(samples[0].data[4], 0x65);
    }

    #[test]
    fn audio_alone() {
        let audio = header(&TrackSpec::audio());
        let stream = Mp4Stream::new(None, Some(&audio)).unwrap();
        assert_eq!(stream.mime(), "audio/mp4; codecs=\"mp4a.40.2\"");
        assert!(!stream.has_video() && stream.carries(Role::Audio));
        let atoms = decode_all(&stream.init());
        let Any::Moov(moov) = &atoms[1] else {
            panic!("moov")
        };
        assert_eq!(moov.trak.len(), 1);
        assert_eq!(moov.trak[0].tkhd.track_id, 1);
    }
}
