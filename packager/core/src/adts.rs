//! ADTS framing of AAC (ISO/IEC 14496-3 1.A.2): a 7-byte header before each raw AAC frame,
//! which is all a decoder needs to start at any frame. Written once, for the audio of MPEG-TS
//! (segments and `stream.ts`, through [`crate::mpegts`]) and for `stream.aac`.

use crate::cmaf::{CodecConfig, Sample};

/// What an ADTS header says of a track: its AAC object type, sampling frequency index and
/// channel configuration, from the track's `esds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adts {
    object_type: u8,
    frequency_index: u8,
    channel_configuration: u8,
}

/// Bytes of an ADTS header without a CRC.
pub const HEADER_LEN: usize = 7;

impl Adts {
    /// The framing of an AAC track; `None` for any other codec.
    pub fn of(config: &CodecConfig) -> Option<Adts> {
        match *config {
            CodecConfig::Aac {
                object_type,
                frequency_index,
                channel_configuration,
            } => Some(Adts {
                object_type,
                frequency_index,
                channel_configuration,
            }),
            _ => None,
        }
    }

    /// The header (no CRC) of a frame of `length` bytes.
    pub fn header(&self, length: usize) -> [u8; HEADER_LEN] {
        let frame_length = length + HEADER_LEN;
        let profile = self.object_type.saturating_sub(1) & 0x03;
        let channels = self.channel_configuration;
        [
            0xff,
            0xf1, // MPEG-4, layer 0, no CRC
            (profile << 6) | ((self.frequency_index & 0x0f) << 2) | ((channels >> 2) & 0x01),
            ((channels & 0x03) << 6) | ((frame_length >> 11) as u8 & 0x03),
            (frame_length >> 3) as u8,
            ((frame_length as u8 & 0x07) << 5) | 0x1f, // buffer fullness 0x7ff: variable rate
            0xfc,
        ]
    }

    /// `frames`, each behind its header, one after another.
    pub fn frames(&self, frames: &[Sample]) -> Vec<u8> {
        let length = frames.iter().map(|f| f.data.len() + HEADER_LEN).sum();
        let mut out = Vec::with_capacity(length);
        for frame in frames {
            out.extend(self.header(frame.data.len()));
            out.extend_from_slice(&frame.data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn the_header_says_profile_rate_channels_and_length() {
        let adts = Adts::of(&CodecConfig::Aac {
            object_type: 2,
            frequency_index: 3,
            channel_configuration: 2,
        })
        .unwrap();
        let frame = Sample {
            decode: 0,
            composition_offset: 0,
            duration: 1024,
            sync: true,
            data: Bytes::from(vec![9; 300]),
        };
        let out = adts.frames(&[frame.clone(), frame]);
        assert_eq!(out.len(), 2 * 307);
        let header = &out[..HEADER_LEN];
        assert_eq!(&header[..2], &[0xff, 0xf1]);
        assert_eq!(header[2] >> 6, 1, "AAC LC is profile 1");
        assert_eq!((header[2] >> 2) & 0x0f, 3, "48 kHz");
        assert_eq!(((header[2] & 1) << 2) | (header[3] >> 6), 2, "stereo");
        let length = (usize::from(header[3] & 3) << 11)
            | (usize::from(header[4]) << 3)
            | usize::from(header[5] >> 5);
        assert_eq!(length, 307);
        assert_eq!(Adts::of(&CodecConfig::Mp3), None);
    }
}
