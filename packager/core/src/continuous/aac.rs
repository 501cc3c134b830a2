//! `stream.aac`: the channel's AAC track as ADTS frames, each with its 7-byte header, which is
//! all a player needs to start at any frame (the radio format Icecast serves).

use bytes::Bytes;

use super::{ContinuousError, Role, StreamFormat};
use crate::adts::Adts;
use crate::cmaf::{Chunk, TrackHeader};

pub struct AdtsStream {
    header: TrackHeader,
    adts: Adts,
}

impl AdtsStream {
    pub fn new(audio: &TrackHeader) -> Result<AdtsStream, ContinuousError> {
        let adts = Adts::of(&audio.config).ok_or_else(|| ContinuousError::Unsupported {
            format: StreamFormat::Aac,
            what: format!("audio in {}", audio.media.codec()),
        })?;
        Ok(AdtsStream {
            header: audio.clone(),
            adts,
        })
    }

    /// The frames of one chunk.
    pub fn push(&mut self, chunk: &Chunk) -> Result<Bytes, ContinuousError> {
        let samples = super::samples(chunk, &self.header, Role::Audio)?;
        Ok(Bytes::from(self.adts.frames(&samples)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, TrackSpec};

    #[test]
    fn every_frame_gets_its_header() {
        let spec = TrackSpec::audio();
        let header = testing::parsed_header(&spec);
        let mut stream = AdtsStream::new(&header).unwrap();
        let chunk = testing::parsed_chunk(&spec, &header, 7);
        let out = stream.push(&chunk).unwrap();
        // 16 frames of 50 bytes, each after a 7-byte header.
        assert_eq!(out.len(), 16 * 57);
        for frame in out.chunks(57) {
            assert_eq!(&frame[..2], &[0xff, 0xf1]);
            // AAC LC (profile 1), 48 kHz (index 3), stereo.
            assert_eq!(frame[2] >> 6, 1);
            assert_eq!((frame[2] >> 2) & 0x0f, 3);
            let channels = ((frame[2] & 1) << 2) | (frame[3] >> 6);
            assert_eq!(channels, 2);
            let length = (usize::from(frame[3] & 3) << 11)
                | (usize::from(frame[4]) << 3)
                | usize::from(frame[5] >> 5);
            assert_eq!(length, 57);
            assert!(frame[7..].iter().all(|byte| *byte == 7));
        }
        let opus = testing::parsed_header(&TrackSpec::opus());
        assert!(AdtsStream::new(&opus).is_err());
    }
}
