//! The MP3 track (`--audio aac,mp3`), for radio listeners of `stream.mp3`: MPEG audio frames
//! from lamemp3enc in, CMAF-shaped fragmented MP4 out, sans IO. cmafmux takes no MP3, so the
//! track is written here: a header with an `mp4a` sample entry whose `esds` names MPEG-1/2
//! audio (object type 0x6B/0x69, no decoder-specific info: every frame carries its own header),
//! then one `moof` + `mdat` per part of the UTC grid, with `styp` before the first part of a
//! segment, exactly where the other tracks cut theirs. Every MP3 frame is a sync sample.

use bytes::Bytes;
use mp4_atom::esds::{DecoderConfig, EsDescriptor, SLConfig};
use mp4_atom::{
    Audio, Codec, Encode, Esds, FixedPoint, FourCC, Ftyp, Hdlr, Mdat, Mfhd, Moof, Moov, Mp4a, Mvex,
    Styp, Tfdt, Tfhd, Traf, Trak, Trex, Trun, TrunEntry,
};

use crate::output::TrackEvent;
use crate::timing::{GridPosition, UtcGrid};

/// `sample_depends_on` = 2 (depends on no other sample): every MP3 frame is a sync sample.
const SYNC_SAMPLE: u32 = 0x0200_0000;

/// What an MPEG audio frame header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// MPEG-1 (true) or MPEG-2/2.5 (false): the `esds` object type differs.
    pub mpeg1: bool,
    pub sample_rate: u32,
    pub channels: u16,
    pub samples_per_frame: u32,
    pub bitrate_kbps: u32,
}

impl FrameHeader {
    /// The header of the Layer III frame at the start of `frame`, if it is one.
    pub fn parse(frame: &[u8]) -> Option<FrameHeader> {
        let header = u32::from_be_bytes(frame.get(..4)?.try_into().ok()?);
        if header >> 21 != 0x7ff {
            return None;
        }
        let version = (header >> 19) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        let layer = (header >> 17) & 3; // 1: Layer III
        let bitrate_index = ((header >> 12) & 0xf) as usize;
        let rate_index = ((header >> 10) & 3) as usize;
        let mode = (header >> 6) & 3; // 3: mono
        if version == 1 || layer != 1 || rate_index == 3 || !(1..15).contains(&bitrate_index) {
            return None;
        }
        let (rates, samples_per_frame, bitrates): (_, _, &[u32; 15]) = match version {
            3 => (
                [44_100, 48_000, 32_000],
                1152,
                &[
                    0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
                ],
            ),
            2 => (
                [22_050, 24_000, 16_000],
                576,
                &[0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
            ),
            _ => (
                [11_025, 12_000, 8_000],
                576,
                &[0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
            ),
        };
        Some(FrameHeader {
            mpeg1: version == 3,
            sample_rate: rates[rate_index],
            channels: if mode == 3 { 1 } else { 2 },
            samples_per_frame,
            bitrate_kbps: bitrates[bitrate_index],
        })
    }
}

/// Cuts a stream of MP3 frames into the track's header and chunks on the UTC grid.
pub struct Mp3Fragmenter {
    grid: UtcGrid,
    /// The stream's format, from its first frame; `None` until then.
    format: Option<FrameHeader>,
    /// The chunk being gathered: its grid position, its first frame's decode time, its frames.
    pending: Option<(GridPosition, u64, Vec<Bytes>)>,
    /// The decode time (in samples) of the next frame, counted on from the first frame so that
    /// the track's timeline has no rounding holes.
    next_decode: Option<u64>,
    sequence: u32,
}

impl Mp3Fragmenter {
    pub fn new(grid: UtcGrid) -> Self {
        Mp3Fragmenter {
            grid,
            format: None,
            pending: None,
            next_decode: None,
            sequence: 0,
        }
    }

    /// Takes one frame that starts at `utc_ns` (its running time, which is UTC). Gives the
    /// header before the first chunk, and a chunk whenever a frame starts a new part. A frame
    /// that is not a Layer III frame of the stream's format is left out.
    pub fn push(&mut self, frame: Bytes, utc_ns: u64) -> Vec<TrackEvent> {
        let mut events = Vec::new();
        let Some(header) = FrameHeader::parse(&frame) else {
            tracing::warn!(bytes = frame.len(), "not an MP3 frame: left out");
            return events;
        };
        let format = *self.format.get_or_insert_with(|| {
            events.push(TrackEvent::Header(init_segment(&header)));
            header
        });
        if (header.sample_rate, header.channels) != (format.sample_rate, format.channels) {
            tracing::warn!(?header, ?format, "MP3 frame of another format: left out");
            return events;
        }
        let rate = u64::from(format.sample_rate);
        let stamped = (u128::from(utc_ns) * u128::from(rate) / 1_000_000_000) as u64;
        // Follow the frames' own count, unless the timestamps say a frame's worth or more
        // went missing (or came twice): then start again from the timestamp.
        let decode = match self.next_decode {
            Some(next) if next.abs_diff(stamped) < u64::from(format.samples_per_frame) => next,
            _ => stamped,
        };
        self.next_decode = Some(decode + u64::from(format.samples_per_frame));
        let position = self
            .grid
            .position((u128::from(decode) * 1_000_000_000 / u128::from(rate)) as u64);
        if self
            .pending
            .as_ref()
            .is_some_and(|(at, ..)| *at != position)
        {
            events.extend(self.flush());
        }
        self.pending
            .get_or_insert_with(|| (position, decode, Vec::new()))
            .2
            .push(frame);
        events
    }

    /// The chunk still being gathered, at the end of the stream.
    pub fn flush(&mut self) -> Option<TrackEvent> {
        let (position, decode, frames) = self.pending.take()?;
        let format = self.format?;
        self.sequence += 1;
        let fragment_start = position.part == 0;
        Some(TrackEvent::Chunk {
            data: chunk(self.sequence, decode, &frames, &format, fragment_start),
            fragment_start,
        })
    }
}

fn encode(atom: &impl Encode, out: &mut Vec<u8>) {
    // Encoding into a Vec only fails on values out of a box's range, which these are not.
    atom.encode(out).expect("MP3 track boxes encode");
}

/// `ftyp` + `moov` of a one-track MP3 file whose samples are all in fragments.
fn init_segment(format: &FrameHeader) -> Bytes {
    let mut out = Vec::new();
    encode(
        &Ftyp {
            major_brand: FourCC::new(b"iso6"),
            minor_version: 0,
            compatible_brands: vec![FourCC::new(b"iso6"), FourCC::new(b"mp41")],
        },
        &mut out,
    );
    let mut trak = Trak::default();
    trak.tkhd.track_id = 1;
    trak.tkhd.volume = FixedPoint::new(1, 0);
    trak.mdia.mdhd.timescale = format.sample_rate;
    trak.mdia.hdlr = Hdlr {
        handler: FourCC::new(b"soun"),
        name: "MP3".into(),
    };
    let bits = format.bitrate_kbps * 1000;
    trak.mdia.minf.stbl.stsd.codecs = vec![Codec::Mp4a(Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: format.channels,
            sample_size: 16,
            sample_rate: FixedPoint::new(format.sample_rate.min(65_535) as u16, 0),
        },
        esds: Esds {
            es_desc: EsDescriptor {
                es_id: 1,
                depends_on_es_id: None,
                url: None,
                ocr_es_id: None,
                stream_priority: 0,
                dec_config: DecoderConfig {
                    // ISO/IEC 14496-1 object types: 0x6B MPEG-1 audio, 0x69 MPEG-2 audio.
                    object_type_indication: if format.mpeg1 { 0x6b } else { 0x69 },
                    stream_type: 5,
                    up_stream: 0,
                    buffer_size_db: Default::default(),
                    max_bitrate: bits,
                    avg_bitrate: bits,
                    dec_specific: None,
                },
                sl_config: SLConfig {},
            },
        },
        btrt: None,
        taic: None,
    })];
    let mut moov = Moov::default();
    moov.mvhd.timescale = 1000;
    moov.mvhd.next_track_id = 2;
    moov.trak.push(trak);
    moov.mvex = Some(Mvex {
        mehd: None,
        trex: vec![Trex {
            track_id: 1,
            default_sample_description_index: 1,
            default_sample_duration: format.samples_per_frame,
            default_sample_flags: SYNC_SAMPLE,
            ..Default::default()
        }],
    });
    encode(&moov, &mut out);
    Bytes::from(out)
}

/// `[styp] moof mdat` for `frames` starting at `decode` (in samples).
fn chunk(
    sequence: u32,
    decode: u64,
    frames: &[Bytes],
    format: &FrameHeader,
    fragment_start: bool,
) -> Bytes {
    let mut out = Vec::new();
    if fragment_start {
        encode(
            &Styp {
                major_brand: FourCC::new(b"msdh"),
                minor_version: 0,
                compatible_brands: vec![FourCC::new(b"msdh"), FourCC::new(b"msix")],
            },
            &mut out,
        );
    }
    let entries: Vec<TrunEntry> = frames
        .iter()
        .map(|frame| TrunEntry {
            duration: None,
            size: Some(frame.len() as u32),
            flags: None,
            cts: None,
        })
        .collect();
    let moof = |data_offset: i32| Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: 1,
                default_base_is_moof: true,
                default_sample_duration: Some(format.samples_per_frame),
                default_sample_flags: Some(SYNC_SAMPLE),
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: decode,
            }),
            trun: vec![Trun {
                data_offset: Some(data_offset),
                samples: entries.clone().into(),
            }],
            ..Default::default()
        }],
    };
    // The data offset counts from the moof's first byte to the first sample, past the mdat's
    // own 8-byte head: the moof's size does not depend on the offset's value.
    let mut sized = Vec::new();
    encode(&moof(0), &mut sized);
    encode(&moof(sized.len() as i32 + 8), &mut out);
    encode(
        &Mdat {
            data: frames.concat(),
        },
        &mut out,
    );
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, DecodeMaybe};
    use std::time::Duration;

    /// A 128 kbit/s, 48 kHz, stereo MPEG-1 Layer III frame (384 bytes: 144 × 128000 / 48000),
    /// its payload filled with `fill`.
    fn frame(fill: u8) -> Bytes {
        let mut frame = vec![fill; 384];
        frame[..4].copy_from_slice(&[0xff, 0xfb, 0x94, 0x04]);
        Bytes::from(frame)
    }

    fn atoms(bytes: &[u8]) -> Vec<Any> {
        let mut cursor = std::io::Cursor::new(bytes);
        let mut atoms = Vec::new();
        while let Some(atom) = Any::decode_maybe(&mut cursor).unwrap() {
            atoms.push(atom);
        }
        atoms
    }

    #[test]
    fn frame_headers_are_read() {
        let header = FrameHeader::parse(&frame(0)).unwrap();
        assert_eq!(
            header,
            FrameHeader {
                mpeg1: true,
                sample_rate: 48_000,
                channels: 2,
                samples_per_frame: 1152,
                bitrate_kbps: 128,
            }
        );
        // MPEG-2, 24 kHz, mono, 64 kbit/s.
        let header = FrameHeader::parse(&[0xff, 0xf3, 0x84, 0xc4]).unwrap();
        assert_eq!(
            (header.mpeg1, header.sample_rate, header.channels),
            (false, 24_000, 1)
        );
        assert_eq!(header.samples_per_frame, 576);
        // ADTS (layer 0), a free-format bitrate, and noise are not MP3 frames.
        for bytes in [
            &[0xff, 0xf1, 0x50, 0x80][..],
            &[0xff, 0xfb, 0x04, 0x04],
            b"ID3\x04",
        ] {
            assert_eq!(FrameHeader::parse(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn frames_are_cut_into_chunks_on_the_utc_grid() {
        // 2 s segments of 6 parts; 24 ms frames from 10.000 s of UTC on.
        let grid = UtcGrid::new(Duration::from_secs(2), 6);
        let mut fragmenter = Mp3Fragmenter::new(grid);
        let mut events = Vec::new();
        // 2026-11-21 00:00:10 UTC: times of today's size, which overflow nanoseconds × rate in
        // 64 bits.
        const T0: u64 = 1_795_219_210_000_000_000;
        for index in 0..100u64 {
            let utc_ns = T0 + index * 24_000_000 + 3_000; // a little jitter
            events.extend(fragmenter.push(frame(index as u8), utc_ns));
        }
        events.extend(fragmenter.flush());

        let TrackEvent::Header(header) = &events[0] else {
            panic!("the header comes first")
        };
        let atoms_of_header = atoms(header);
        let Any::Moov(moov) = &atoms_of_header[1] else {
            panic!("ftyp then moov")
        };
        let trak = &moov.trak[0];
        assert_eq!(trak.mdia.mdhd.timescale, 48_000);
        let Codec::Mp4a(mp4a) = &trak.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("an mp4a sample entry")
        };
        assert_eq!(mp4a.esds.es_desc.dec_config.object_type_indication, 0x6b);
        assert!(mp4a.esds.es_desc.dec_config.dec_specific.is_none());

        // 2.4 s of frames: parts start every 333 ms; a frame belongs to the part it starts in.
        let chunks: Vec<(bool, Bytes)> = events[1..]
            .iter()
            .map(|event| match event {
                TrackEvent::Chunk {
                    data,
                    fragment_start,
                } => (*fragment_start, data.clone()),
                TrackEvent::Header(_) => panic!("one header"),
            })
            .collect();
        let mut next_decode = T0 / 1_000_000_000 * 48_000;
        let mut frames_seen = 0;
        for (index, (fragment_start, data)) in chunks.iter().enumerate() {
            let atoms = atoms(data);
            // Parts 0 and 6 begin segments 5 and 6 (10 s and 12 s).
            assert_eq!(*fragment_start, index % 6 == 0, "chunk {index}");
            assert_eq!(matches!(atoms[0], Any::Styp(_)), *fragment_start);
            let (moof, mdat) = match &atoms[atoms.len() - 2..] {
                [Any::Moof(moof), Any::Mdat(mdat)] => (moof, mdat),
                other => panic!("moof then mdat, not {other:?}"),
            };
            let traf = &moof.traf[0];
            assert_eq!(
                traf.tfdt.as_ref().unwrap().base_media_decode_time,
                next_decode
            );
            let entries = &traf.trun[0].samples;
            // The samples sit right after the moof's head and the mdat's.
            let moof_size = data.len() - mdat.data.len() - 8 - if *fragment_start { 24 } else { 0 };
            assert_eq!(traf.trun[0].data_offset, Some(moof_size as i32 + 8));
            assert_eq!(mdat.data.len(), entries.len() * 384);
            assert_eq!(mdat.data[4], frames_seen as u8, "frames in order");
            // Each chunk starts with the first frame starting in its part.
            let start_ns = (u128::from(next_decode) * 1_000_000_000 / 48_000) as u64;
            let part = grid.position(start_ns);
            assert!(
                start_ns - (part.segment * 2_000_000_000 + u64::from(part.part) * 333_333_333)
                    < 24_000_000 + 1,
                "chunk {index} starts {start_ns} ns, not the first frame of its part"
            );
            next_decode += 1152 * entries.len() as u64;
            frames_seen += entries.len();
        }
        assert_eq!(frames_seen, 100);
        assert_eq!(
            chunks.len(),
            8,
            "2.4 s from a segment start: 7 parts and a piece"
        );
    }

    #[test]
    fn a_gap_in_the_timestamps_starts_the_count_again() {
        let grid = UtcGrid::new(Duration::from_secs(2), 6);
        let mut fragmenter = Mp3Fragmenter::new(grid);
        fragmenter.push(frame(0), 10_000_000_000);
        // The next frame a whole second later: not the 24 ms the count expects.
        let events = fragmenter.push(frame(1), 11_000_000_000);
        let Some(TrackEvent::Chunk { data, .. }) = events.first() else {
            panic!("the first part is done")
        };
        let moof = moof_of(data);
        assert_eq!(moof.traf[0].trun[0].samples.len(), 1);
        let Some(TrackEvent::Chunk { data, .. }) = fragmenter.flush() else {
            panic!("the second frame's chunk")
        };
        let decode = moof_of(&data).traf[0]
            .tfdt
            .as_ref()
            .unwrap()
            .base_media_decode_time;
        assert_eq!(decode, 528_000, "11 s at 48 kHz");
    }

    fn moof_of(data: &[u8]) -> Moof {
        atoms(data)
            .into_iter()
            .find_map(|atom| match atom {
                Any::Moof(moof) => Some(moof),
                _ => None,
            })
            .expect("a moof")
    }
}
