//! Cutting a CMAF byte stream into its header and chunks as the pieces arrive. Only box
//! headers are read here; the buffer holds at most one unit (a header or a chunk, with the
//! few boxes allowed beside it), so what a sender can make it hold is bounded by
//! [`MAX_CHUNK_BYTES`] whatever it sends.

use bytes::{Buf, Bytes, BytesMut};

use super::{CmafError, MAX_CHUNK_BYTES, MAX_HEADER_BYTES, MAX_SIDE_BOXES, MAX_SIDE_BYTES};

/// A piece of a track as cut from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Header(Bytes),
    Chunk(Bytes),
}

/// Cuts a stream into header and chunks. Feed it the body's pieces as they come.
#[derive(Debug, Default)]
pub struct CmafReader {
    buffer: BytesMut,
    /// Bytes of the buffer that belong to the unit being assembled (boxes already scanned).
    scanned: usize,
    in_header: bool,
    seen_header: bool,
    seen_moof: bool,
    /// Boxes of the unit being assembled other than its ftyp, moov, moof and mdat, and their
    /// bytes.
    side_boxes: usize,
    side_bytes: usize,
}

impl CmafReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next piece of the stream and returns every header or chunk it completes.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Piece>, CmafError> {
        self.buffer.extend_from_slice(data);
        let mut pieces = Vec::new();
        while let Some((kind, size, _)) = box_header(&self.buffer[self.scanned..])? {
            // Checked on the box's header, before its body is waited for: a box that would
            // make its unit too large is refused without buffering it.
            self.check_room(&kind, size)?;
            let end = self.scanned + size;
            if end > self.buffer.len() {
                break;
            }
            self.scanned = end;
            match &kind {
                b"ftyp" => {
                    self.in_header = true;
                }
                b"moov" => {
                    if !self.in_header {
                        return Err(CmafError::NoHeader {
                            kind: "moov without ftyp".into(),
                        });
                    }
                    pieces.push(Piece::Header(self.take()));
                    self.in_header = false;
                    self.seen_header = true;
                }
                b"moof" => {
                    self.require_header(&kind)?;
                    if self.seen_moof {
                        return Err(CmafError::MoofWithoutMdat);
                    }
                    self.seen_moof = true;
                }
                b"mdat" => {
                    self.require_header(&kind)?;
                    if !self.seen_moof {
                        return Err(CmafError::MdatWithoutMoof);
                    }
                    pieces.push(Piece::Chunk(self.take()));
                    self.seen_moof = false;
                }
                // styp, prft, emsg, sidx, free…: part of the unit being assembled.
                _ => {
                    if !self.in_header {
                        self.require_header(&kind)?;
                    }
                    self.side_boxes += 1;
                    self.side_bytes += size;
                    if self.side_boxes > MAX_SIDE_BOXES {
                        return Err(CmafError::TooManySideBoxes { kind: name(&kind) });
                    }
                }
            }
        }
        Ok(pieces)
    }

    /// Refuses the box `kind` of `size` bytes if its unit, or the side boxes in it, would
    /// outgrow their bounds.
    fn check_room(&self, kind: &[u8; 4], size: usize) -> Result<(), CmafError> {
        let (unit, limit) = if self.in_header || kind == b"ftyp" || kind == b"moov" {
            ("header", MAX_HEADER_BYTES)
        } else {
            ("chunk", MAX_CHUNK_BYTES)
        };
        // `size` may be anything a 64-bit box size says: nothing here may overflow.
        let unit_size = (self.scanned as u64).saturating_add(size as u64);
        if unit_size > limit as u64 {
            return Err(CmafError::UnitTooLarge {
                unit,
                kind: name(kind),
                size: unit_size,
                limit,
            });
        }
        let side = !matches!(kind, b"ftyp" | b"moov" | b"moof" | b"mdat");
        if side && self.side_bytes.saturating_add(size) > MAX_SIDE_BYTES {
            return Err(CmafError::TooManySideBoxes { kind: name(kind) });
        }
        Ok(())
    }

    /// Says whether the stream ended between units, as a complete stream does. Whole boxes
    /// after the last chunk (an `mfra` index, `free`) are allowed and ignored.
    pub fn finish(&self) -> Result<(), CmafError> {
        if self.scanned < self.buffer.len() {
            let rest = &self.buffer[self.scanned..];
            let kind = rest.get(4..8).map_or_else(
                || "box header".to_owned(),
                |k| String::from_utf8_lossy(k).into_owned(),
            );
            let missing = match box_header(rest) {
                Ok(Some((_, size, _))) => size.saturating_sub(rest.len()) as u64,
                _ => 8u64.saturating_sub(rest.len() as u64),
            };
            return Err(CmafError::Truncated { kind, missing });
        }
        if self.seen_moof {
            return Err(CmafError::Truncated {
                kind: "mdat after the last moof".into(),
                missing: 0,
            });
        }
        Ok(())
    }

    fn require_header(&self, kind: &[u8; 4]) -> Result<(), CmafError> {
        if self.seen_header {
            Ok(())
        } else {
            Err(CmafError::NoHeader { kind: name(kind) })
        }
    }

    fn take(&mut self) -> Bytes {
        let unit = self.buffer.split_to(self.scanned).freeze();
        self.scanned = 0;
        self.side_boxes = 0;
        self.side_bytes = 0;
        unit
    }
}

fn name(kind: &[u8; 4]) -> String {
    String::from_utf8_lossy(kind).into_owned()
}

/// A box found in a buffer by its header alone: its type, all its bytes (header included, as
/// mp4-atom decodes a box) and its body.
pub(super) struct RawBox<'a> {
    pub kind: [u8; 4],
    pub bytes: &'a [u8],
    pub body: &'a [u8],
    /// Where it begins in the buffer it was found in.
    pub offset: usize,
}

impl RawBox<'_> {
    /// Decodes this box alone as `T`, with mp4-atom. Only the boxes the packager needs are
    /// ever decoded: a box it has no use for is never handed to a decoder, whatever it holds.
    pub fn decode<T: mp4_atom::Decode>(&self, name: &'static str) -> Result<T, CmafError> {
        let mut bytes = self.bytes;
        T::decode(&mut bytes).map_err(|error| CmafError::Unparsable(name, error.to_string()))
    }
}

/// The boxes one after another in `data`, which must hold them whole. There are at most
/// `data.len() / 8` of them.
pub(super) fn boxes(data: &[u8]) -> Result<Vec<RawBox<'_>>, CmafError> {
    let mut found = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let rest = &data[offset..];
        let (kind, size, header_size) = match box_header(rest)? {
            Some(header) if header.1 <= rest.len() => header,
            header => {
                let kind = header.map_or_else(|| "box header".to_owned(), |(kind, ..)| name(&kind));
                let missing = header
                    .map_or(8, |(_, size, _)| size)
                    .saturating_sub(rest.len());
                return Err(CmafError::Truncated {
                    kind,
                    missing: missing as u64,
                });
            }
        };
        found.push(RawBox {
            kind,
            bytes: &rest[..size],
            body: &rest[header_size..size],
            offset,
        });
        offset += size;
    }
    Ok(found)
}

/// The first box of type `kind` in `data`.
pub(super) fn find<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<RawBox<'a>>, CmafError> {
    Ok(boxes(data)?.into_iter().find(|found| &found.kind == kind))
}

/// The type, total size and header size of the box at the start of `data`, once its header
/// is there. Sizes beyond what any unit may hold are refused by the callers; here a size
/// only has to fit in memory's address space.
pub(super) fn box_header(data: &[u8]) -> Result<Option<([u8; 4], usize, usize)>, CmafError> {
    if data.len() < 8 {
        return Ok(None);
    }
    let kind: [u8; 4] = [data[4], data[5], data[6], data[7]];
    if !kind
        .iter()
        .all(|byte| byte.is_ascii_graphic() || *byte == b' ')
    {
        return Err(CmafError::NotABox(kind));
    }
    let (size, header_size) = match u32::from_be_bytes([data[0], data[1], data[2], data[3]]) {
        1 => {
            let Some(mut large) = data.get(8..16) else {
                return Ok(None);
            };
            (large.get_u64(), 16)
        }
        // Size 0 means "to the end of the file", which a stream never has.
        size => (u64::from(size), 8),
    };
    if size < header_size as u64 {
        return Err(CmafError::BadBoxSize {
            kind: name(&kind),
            size,
        });
    }
    // Anything larger than a chunk may be is refused by check_room; saturating keeps the
    // comparison honest on 32-bit targets.
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    Ok(Some((kind, size, header_size)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::{Chunk, Media, parse_chunk, parse_header};
    use crate::testing::{self, TrackSpec};
    use proptest::prelude::*;

    /// A box of `kind` with `body` bytes of filler.
    fn boxed(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut out = ((8 + body) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.resize(8 + body, 0);
        out
    }

    #[test]
    fn reads_header_and_chunks_from_any_split_of_the_stream() {
        let spec = TrackSpec::video();
        let stream = testing::stream(&spec, 0, 6);
        for piece_size in [1, 7, 100, 4096, stream.len()] {
            let mut reader = CmafReader::new();
            let mut pieces = Vec::new();
            for piece in stream.chunks(piece_size) {
                pieces.extend(reader.push(piece).unwrap());
            }
            reader.finish().unwrap();
            assert_eq!(pieces.len(), 7, "split into {piece_size}-byte pieces");
            let Piece::Header(header) = &pieces[0] else {
                panic!("the header comes first")
            };
            let header = parse_header(header.clone()).unwrap();
            assert_eq!(header.timescale, spec.timescale);
            assert_eq!(
                header.media,
                Media::Video {
                    codec: "avc1.64001f".into(),
                    width: 1280,
                    height: 720
                }
            );
            let chunks: Vec<Chunk> = pieces[1..]
                .iter()
                .map(|piece| match piece {
                    Piece::Chunk(bytes) => parse_chunk(bytes.clone(), &header).unwrap(),
                    Piece::Header(_) => panic!("one header only"),
                })
                .collect();
            assert_eq!(chunks[0].start, 0);
            assert_eq!(chunks[1].start, chunks[0].duration);
            assert!(chunks[0].independent && !chunks[1].independent);
            assert_eq!(chunks.iter().map(|c| c.samples).sum::<u32>(), 60);
        }
    }

    #[test]
    fn bad_streams_are_refused_with_a_reason() {
        let spec = TrackSpec::video();
        let chunk_only = testing::chunk(&spec, 0, 0, 10);
        let error = CmafReader::new().push(&chunk_only).unwrap_err();
        assert!(matches!(error, CmafError::NoHeader { .. }), "{error}");

        let noise = [0, 0, 1, 0, 0xf0, 0x66, 0x22, 0x01];
        assert!(matches!(
            CmafReader::new().push(&noise),
            Err(CmafError::NotABox(_))
        ));

        let tiny = [0, 0, 0, 4, b'f', b't', b'y', b'p'];
        assert!(matches!(
            CmafReader::new().push(&tiny),
            Err(CmafError::BadBoxSize { .. })
        ));

        let stream = testing::stream(&spec, 0, 2);
        let mut reader = CmafReader::new();
        reader.push(&stream[..stream.len() - 5]).unwrap();
        assert!(matches!(
            reader.finish(),
            Err(CmafError::Truncated { missing: 5, .. })
        ));

        let mut twice = testing::header(&spec);
        twice.extend(boxed(b"moof", 100));
        twice.extend(boxed(b"moof", 100));
        assert_eq!(
            CmafReader::new().push(&twice),
            Err(CmafError::MoofWithoutMdat)
        );
    }

    /// Sizes are refused from the box header, before a byte of the body is buffered.
    #[test]
    fn headers_and_chunks_are_bounded_before_they_are_buffered() {
        let mut huge = vec![0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(b"moov");
        let mut reader = CmafReader::new();
        reader.push(b"\0\0\0\x10ftypcmf2\0\0\0\0").unwrap();
        assert!(matches!(
            reader.push(&huge),
            Err(CmafError::UnitTooLarge {
                unit: "header",
                limit: MAX_HEADER_BYTES,
                ..
            })
        ));

        let mut after_header = CmafReader::new();
        after_header
            .push(&testing::header(&TrackSpec::video()))
            .unwrap();
        let mut large = 1u32.to_be_bytes().to_vec();
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&(MAX_CHUNK_BYTES as u64).to_be_bytes());
        after_header.push(&boxed(b"moof", 100)).unwrap();
        let error = after_header.push(&large).unwrap_err();
        assert!(
            matches!(
                error,
                CmafError::UnitTooLarge {
                    unit: "chunk",
                    limit: MAX_CHUNK_BYTES,
                    ..
                }
            ),
            "{error}"
        );
        assert!(after_header.buffer.len() < 200, "the mdat was not buffered");

        // The largest size a box header can write, after other boxes of the unit (the
        // fuzzer's find: the sum overflowed) is refused like any other.
        for (first, kind) in [(b"moof", b"mdat"), (b"free", b"free"), (b"styp", b"moof")] {
            let mut huge = 1u32.to_be_bytes().to_vec();
            huge.extend_from_slice(kind);
            huge.extend_from_slice(&u64::MAX.to_be_bytes());
            let mut reader = CmafReader::new();
            reader.push(&testing::header(&TrackSpec::video())).unwrap();
            reader.push(&boxed(first, 16)).unwrap();
            let error = reader.push(&huge).unwrap_err();
            assert!(
                matches!(error, CmafError::UnitTooLarge { .. }),
                "{kind:?} after {first:?}: {error}"
            );
        }
    }

    /// A header followed by boxes that are never a moof: the reader refuses the
    /// seventeenth, or the one that takes their bytes past the bound, and never holds more.
    #[test]
    fn boxes_that_never_reach_a_chunk_are_bounded() {
        let spec = TrackSpec::video();
        let mut reader = CmafReader::new();
        reader.push(&testing::header(&spec)).unwrap();
        for _ in 0..MAX_SIDE_BOXES {
            assert!(reader.push(&boxed(b"free", 100)).unwrap().is_empty());
        }
        assert_eq!(
            reader.push(&boxed(b"free", 100)),
            Err(CmafError::TooManySideBoxes {
                kind: "free".into()
            })
        );
        let mut reader = CmafReader::new();
        reader.push(&testing::header(&spec)).unwrap();
        reader.push(&boxed(b"emsg", MAX_SIDE_BYTES - 1000)).unwrap();
        assert_eq!(
            reader.push(&boxed(b"emsg", 2000)[..8]),
            Err(CmafError::TooManySideBoxes {
                kind: "emsg".into()
            })
        );
        assert!(reader.buffer.len() <= MAX_SIDE_BYTES + 1024);

        // The bound is per unit: a styp and a prft before every chunk is what encoders write.
        let mut reader = CmafReader::new();
        reader.push(&testing::header(&spec)).unwrap();
        for index in 0..(2 * MAX_SIDE_BOXES) as u64 {
            let mut unit = boxed(b"prft", 24);
            unit.extend(testing::chunk(&spec, index as u32, index * 1000, 10));
            assert_eq!(reader.push(&unit).unwrap().len(), 1);
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut reader = CmafReader::new();
            if let Ok(pieces) = reader.push(&data) {
                for piece in pieces {
                    let (Piece::Header(bytes) | Piece::Chunk(bytes)) = piece;
                    let _ = parse_header(bytes);
                }
                let _ = reader.finish();
            }
        }
    }
}
