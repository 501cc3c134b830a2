//! `stream.mp3`: the channel's MP3 track as plain MPEG audio frames, one after another, which
//! is all a radio player (or Icecast's listeners) expects: every frame starts with its own
//! header, so a player can start at any of them.

use bytes::{Bytes, BytesMut};

use super::{ContinuousError, Role, StreamFormat};
use crate::cmaf::{Chunk, CodecConfig, TrackHeader};

pub struct Mp3Stream {
    header: TrackHeader,
}

impl Mp3Stream {
    pub fn new(audio: &TrackHeader) -> Result<Mp3Stream, ContinuousError> {
        if audio.config != CodecConfig::Mp3 {
            return Err(ContinuousError::Unsupported {
                format: StreamFormat::Mp3,
                what: format!("audio in {}", audio.media.codec()),
            });
        }
        Ok(Mp3Stream {
            header: audio.clone(),
        })
    }

    /// The frames of one chunk.
    pub fn push(&mut self, chunk: &Chunk) -> Result<Bytes, ContinuousError> {
        let samples = super::samples(chunk, &self.header, Role::Audio)?;
        let mut out = BytesMut::with_capacity(samples.iter().map(|s| s.data.len()).sum());
        for frame in &samples {
            out.extend_from_slice(&frame.data);
        }
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, TrackSpec};

    #[test]
    fn the_frames_go_out_as_they_are() {
        let spec = TrackSpec::mp3();
        let header = testing::parsed_header(&spec);
        assert!(header.is_mp3());
        assert_eq!(header.media.codec(), "mp4a.6b");
        let mut stream = Mp3Stream::new(&header).unwrap();
        let chunk = testing::parsed_chunk(&spec, &header, 3);
        let out = stream.push(&chunk).unwrap();
        // The test chunks' samples are 50 bytes of the sequence number.
        assert_eq!(out.len(), 50 * spec.samples_per_chunk as usize);
        assert!(out.iter().all(|byte| *byte == 3));

        let aac = testing::parsed_header(&TrackSpec::audio());
        assert!(Mp3Stream::new(&aac).is_err());
    }
}
