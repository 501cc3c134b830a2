//! How a packager hands a continuous stream to an edge: the same bytes a viewer gets, cut into
//! frames that say what each piece is. The edge's fan-out engine needs to know where a new
//! viewer may start (the stream's header, then a chunk a decoder can start from) and when each
//! chunk's media was captured; those are the packager's knowledge, so the packager says them
//! rather than each edge parsing every container again.
//!
//! An edge asks for the framing with `Accept: application/vnd.estuary.chunks` on the stream's
//! own URL; the answer gives the stream's own media type in `X-Estuary-Stream-Type`. Each frame is a 13-byte head, then `length` bytes of the stream:
//!
//! ```text
//! kind      u8   'H' the stream's header (sent again to every new viewer; may be empty)
//!                'J' a chunk a decoder can start from (a join point)
//!                'C' any other chunk
//!                'M' the stream's title (UTF-8), for ICY metadata: after the header, and
//!                    whenever it changes; not part of the stream's bytes
//! capture   u64  big-endian: the UTC time of the chunk's first sample, in microseconds since
//!                1970 (0 for a header or a title)
//! length    u32  big-endian: the bytes that follow
//! ```
//!
//! The first frame is a header; a header later on means the stream changed (a new encoder
//! setting, say) and viewers must start again from it.

use bytes::{Buf, Bytes, BytesMut};

/// The media type of a framed continuous stream.
pub const CONTENT_TYPE: &str = "application/vnd.estuary.chunks";
/// The response header that gives the media type of the stream inside the frames.
pub const STREAM_TYPE: &str = "x-estuary-stream-type";
/// The bytes of a frame's head.
pub const HEAD_LENGTH: usize = 13;
/// The largest frame accepted: a chunk of a third of a second at 50 Mbit/s is 2 MB.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Header,
    Chunk { join: bool },
    Title,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Header => b'H',
            Kind::Chunk { join: true } => b'J',
            Kind::Chunk { join: false } => b'C',
            Kind::Title => b'M',
        }
    }

    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            b'H' => Some(Kind::Header),
            b'J' => Some(Kind::Chunk { join: true }),
            b'C' => Some(Kind::Chunk { join: false }),
            b'M' => Some(Kind::Title),
            _ => None,
        }
    }
}

/// One frame: what it is, when its media was captured, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub capture_micros: u64,
    pub bytes: Bytes,
}

/// The head to write before `length` bytes of a frame.
pub fn head(kind: Kind, capture_micros: u64, length: usize) -> [u8; HEAD_LENGTH] {
    let mut head = [0u8; HEAD_LENGTH];
    head[0] = kind.byte();
    head[1..9].copy_from_slice(&capture_micros.to_be_bytes());
    head[9..].copy_from_slice(&(length.min(u32::MAX as usize) as u32).to_be_bytes());
    head
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of kind {0:#04x}, which is none of H, J, C and M")]
    UnknownKind(u8),
    #[error("a frame of {0} bytes, more than the {MAX_FRAME} accepted")]
    TooLarge(usize),
    #[error("the stream does not start with its header")]
    NoHeader,
}

/// Cuts frames out of the bytes of a framed stream as they arrive, in any split (sans IO).
#[derive(Default)]
pub struct Decoder {
    buffer: BytesMut,
    seen_header: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds bytes read off the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` while more bytes are needed. After an error the stream
    /// cannot be read further.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(head) = self.buffer.get(..HEAD_LENGTH) else {
            return Ok(None);
        };
        let kind = Kind::from_byte(head[0]).ok_or(FrameError::UnknownKind(head[0]))?;
        let length = u32::from_be_bytes([head[9], head[10], head[11], head[12]]) as usize;
        if length > MAX_FRAME {
            return Err(FrameError::TooLarge(length));
        }
        if !self.seen_header && kind != Kind::Header {
            return Err(FrameError::NoHeader);
        }
        if self.buffer.len() < HEAD_LENGTH + length {
            // Room for the whole frame at once, rather than growing piece by piece.
            self.buffer
                .reserve(HEAD_LENGTH + length - self.buffer.len());
            return Ok(None);
        }
        let capture_micros = u64::from_be_bytes(head[1..9].try_into().unwrap_or_default());
        self.buffer.advance(HEAD_LENGTH);
        let bytes = self.buffer.split_to(length).freeze();
        self.seen_header = true;
        Ok(Some(Frame {
            kind,
            capture_micros,
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            out.extend_from_slice(&head(frame.kind, frame.capture_micros, frame.bytes.len()));
            out.extend_from_slice(&frame.bytes);
        }
        out
    }

    fn frame(kind: Kind, capture_micros: u64, bytes: &'static [u8]) -> Frame {
        Frame {
            kind,
            capture_micros,
            bytes: Bytes::from_static(bytes),
        }
    }

    #[test]
    fn frames_come_out_as_they_went_in_whatever_the_split() {
        let frames = vec![
            frame(Kind::Header, 0, b"ftyp moov"),
            frame(Kind::Title, 0, "Morning show – live".as_bytes()),
            frame(
                Kind::Chunk { join: true },
                1_796_000_000_000_000,
                b"keyframe",
            ),
            frame(Kind::Chunk { join: false }, 1_796_000_000_333_333, b""),
            frame(Kind::Chunk { join: false }, 1_796_000_000_666_666, b"more"),
        ];
        let bytes = encode(&frames);
        for step in [1, 2, 5, 13, 14, bytes.len()] {
            let mut decoder = Decoder::new();
            let mut out = Vec::new();
            for piece in bytes.chunks(step) {
                decoder.extend(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            assert_eq!(out, frames, "in pieces of {step}");
        }
    }

    #[test]
    fn bad_streams_are_named() {
        let mut decoder = Decoder::new();
        decoder.extend(&encode(&[frame(Kind::Chunk { join: true }, 1, b"x")]));
        assert_eq!(decoder.next_frame(), Err(FrameError::NoHeader));

        let mut decoder = Decoder::new();
        decoder.extend(b"GET / HTTP/1.1\r\n");
        assert_eq!(decoder.next_frame(), Err(FrameError::UnknownKind(b'G')));

        let mut decoder = Decoder::new();
        decoder.extend(&head(Kind::Header, 0, MAX_FRAME + 1));
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
    }

    proptest! {
        #[test]
        fn any_bytes_give_frames_or_an_error_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let mut decoder = Decoder::new();
            decoder.extend(&bytes);
            while let Ok(Some(_)) = decoder.next_frame() {}
        }
    }
}
