//! Hand-made CMAF for the packager's tests, written with mp4-atom's encoder: headers and chunks
//! with known timing, so the core is tested from bytes alone, with no encoder running.

use std::time::Duration;

use bytes::Bytes;
use estuary_proto::url::{ChannelName, TrackName};
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Audio, Avc1, Avcc, Codec, Dops, Encode, Esds, FixedPoint, FourCC, Ftyp, Hdlr, Mdat, Mfhd, Moof,
    Moov, Mp4a, Mvex, Opus, Styp, Tfdt, Tfhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples,
    Visual, Vp08, Vp09, VpcC,
};

use crate::cmaf::{self, Chunk, CmafReader, Piece, TrackHeader};
use crate::window::{Accepted, Window, WindowConfig};

/// Sample flags of a sync sample (depends on nothing) and of any other sample.
const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

/// The codec a fixture track's sample entry names. The samples are filler either way, except
/// that H.264 ones are shaped as one NAL unit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixtureCodec {
    H264,
    Vp8,
    Vp9,
    Aac,
    /// MP3 (the ingest's `--audio aac,mp3`).
    Mp3,
    Opus,
}

impl FixtureCodec {
    pub fn is_video(self) -> bool {
        matches!(
            self,
            FixtureCodec::H264 | FixtureCodec::Vp8 | FixtureCodec::Vp9
        )
    }
}

/// A track's codec and timing: sample duration, samples per chunk, chunks per segment.
#[derive(Clone, Debug)]
pub struct TrackSpec {
    pub codec: FixtureCodec,
    pub timescale: u32,
    pub sample_duration: u32,
    pub samples_per_chunk: u32,
    pub chunks_per_segment: u32,
}

impl TrackSpec {
    /// 30 fps in a 3000 timescale, 10 frames a part, 6 parts a 2 s segment (as the ingest makes).
    pub fn video() -> Self {
        Self {
            codec: FixtureCodec::H264,
            timescale: 3000,
            sample_duration: 100,
            samples_per_chunk: 10,
            chunks_per_segment: 6,
        }
    }

    /// AAC at 48 kHz: 1024-sample frames, 16 frames a chunk.
    pub fn audio() -> Self {
        Self {
            codec: FixtureCodec::Aac,
            timescale: 48_000,
            sample_duration: 1024,
            samples_per_chunk: 16,
            chunks_per_segment: 6,
        }
    }

    /// MP3 at 48 kHz: 1152-sample frames, 14 frames a chunk.
    pub fn mp3() -> Self {
        Self {
            codec: FixtureCodec::Mp3,
            timescale: 48_000,
            sample_duration: 1152,
            samples_per_chunk: 14,
            chunks_per_segment: 6,
        }
    }

    /// VP8 with the timing of [`TrackSpec::video`].
    pub fn vp8() -> Self {
        Self {
            codec: FixtureCodec::Vp8,
            ..Self::video()
        }
    }

    /// VP9 with the timing of [`TrackSpec::video`].
    pub fn vp9() -> Self {
        Self {
            codec: FixtureCodec::Vp9,
            ..Self::video()
        }
    }

    /// Opus at 48 kHz: 20 ms frames, 16 frames a chunk.
    pub fn opus() -> Self {
        Self {
            codec: FixtureCodec::Opus,
            timescale: 48_000,
            sample_duration: 960,
            samples_per_chunk: 16,
            chunks_per_segment: 6,
        }
    }

    pub fn chunk_ticks(&self) -> u64 {
        u64::from(self.sample_duration * self.samples_per_chunk)
    }

    /// Ticks of a whole segment.
    pub fn segment_ticks(&self) -> u64 {
        self.chunk_ticks() * u64::from(self.chunks_per_segment)
    }
}

fn encode(atom: &impl Encode, out: &mut Vec<u8>) {
    atom.encode(out).expect("test boxes encode");
}

pub fn header(spec: &TrackSpec) -> Vec<u8> {
    let mut out = Vec::new();
    encode(
        &Ftyp {
            major_brand: FourCC::new(b"cmf2"),
            minor_version: 0,
            compatible_brands: vec![FourCC::new(b"cmfc"), FourCC::new(b"iso6")],
        },
        &mut out,
    );
    let mut trak = Trak::default();
    trak.tkhd.track_id = 1;
    trak.mdia.mdhd.timescale = spec.timescale;
    let (handler, name) = if spec.codec.is_video() {
        (b"vide", "video")
    } else {
        (b"soun", "audio")
    };
    trak.mdia.hdlr = Hdlr {
        handler: FourCC::new(handler),
        name: name.into(),
    };
    let visual = Visual {
        width: 1280,
        height: 720,
        ..Default::default()
    };
    let audio = Audio {
        data_reference_index: 1,
        channel_count: 2,
        sample_size: 16,
        sample_rate: FixedPoint::new(48_000, 0),
    };
    // Profile 0, level 1.0, 8 bits, 4:2:0 with the first luma sample, BT.709.
    let vpcc = VpcC {
        profile: 0,
        level: 10,
        bit_depth: 8,
        chroma_subsampling: 1,
        ..Default::default()
    };
    let codec = match spec.codec {
        FixtureCodec::H264 => Codec::Avc1(Avc1 {
            visual,
            avcc: Avcc {
                configuration_version: 1,
                avc_profile_indication: 0x64,
                profile_compatibility: 0,
                avc_level_indication: 0x1f,
                length_size: 4,
                sequence_parameter_sets: vec![vec![0x67, 0x64, 0x00, 0x1f]],
                picture_parameter_sets: vec![vec![0x68, 0xee]],
                ext: None,
            },
            ..Default::default()
        }),
        FixtureCodec::Vp8 => Codec::Vp08(Vp08 {
            visual,
            vpcc,
            ..Default::default()
        }),
        FixtureCodec::Vp9 => Codec::Vp09(Vp09 {
            visual,
            vpcc,
            ..Default::default()
        }),
        FixtureCodec::Opus => Codec::Opus(Opus {
            audio,
            dops: Dops {
                output_channel_count: 2,
                pre_skip: 312,
                input_sample_rate: 48_000,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        }),
        FixtureCodec::Aac | FixtureCodec::Mp3 => {
            let mp3 = spec.codec == FixtureCodec::Mp3;
            Codec::Mp4a(Mp4a {
                audio,
                esds: Esds {
                    es_desc: EsDescriptor {
                        es_id: 1,
                        depends_on_es_id: None,
                        url: None,
                        ocr_es_id: None,
                        stream_priority: 0,
                        dec_config: DecoderConfig {
                            // MPEG-1 audio, or MPEG-4 audio (AAC).
                            object_type_indication: if mp3 { 0x6b } else { 0x40 },
                            stream_type: 5,
                            up_stream: 0,
                            buffer_size_db: Default::default(),
                            max_bitrate: 128_000,
                            avg_bitrate: 128_000,
                            // MP3 frames carry their own headers.
                            dec_specific: (!mp3).then(|| DecoderSpecific {
                                profile: 2,
                                freq_index: 3,
                                chan_conf: 2,
                                raw: Vec::new(),
                            }),
                        },
                        sl_config: SLConfig {},
                    },
                },
                btrt: None,
                taic: None,
            })
        }
    };
    trak.mdia.minf.stbl.stsd.codecs = vec![codec];
    let mut moov = Moov::default();
    moov.mvhd.timescale = 1000;
    moov.mvhd.next_track_id = 2;
    moov.trak.push(trak);
    moov.mvex = Some(Mvex {
        mehd: None,
        trex: vec![Trex {
            track_id: 1,
            default_sample_description_index: 1,
            ..Default::default()
        }],
    });
    encode(&moov, &mut out);
    out
}

/// One chunk starting at `start` ticks with `samples` samples; `styp` and a sync first sample
/// when it begins a segment.
pub fn chunk(spec: &TrackSpec, sequence: u32, start: u64, samples: u32) -> Vec<u8> {
    let begins_segment = start.is_multiple_of(spec.segment_ticks());
    let mut out = Vec::new();
    if begins_segment {
        encode(
            &Styp {
                major_brand: FourCC::new(b"cmfs"),
                minor_version: 0,
                compatible_brands: vec![FourCC::new(b"cmfs")],
            },
            &mut out,
        );
    }
    let sample_size = 50u32;
    let sync = |index: u32| (index == 0 && begins_segment) || !spec.codec.is_video();
    let entries = (0..samples)
        .map(|index| TrunEntry {
            duration: Some(spec.sample_duration),
            size: Some(sample_size),
            flags: Some(if sync(index) { SYNC } else { NON_SYNC }),
            cts: None,
        })
        .collect::<Vec<_>>();
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: 1,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: start,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: entries.into(),
            }],
            ..Default::default()
        }],
    };
    // The samples start after the moof and the mdat's 8-byte header.
    let mut sized = Vec::new();
    encode(&moof, &mut sized);
    moof.traf[0].trun[0].data_offset = Some(sized.len() as i32 + 8);
    encode(&moof, &mut out);
    // H.264 samples are one NAL unit each (a 4-byte length, then an IDR or non-IDR slice
    // header byte, then filler that names the chunk); other samples are filler.
    let mut data = Vec::with_capacity((sample_size * samples) as usize);
    for index in 0..samples {
        let mut sample = vec![sequence as u8; sample_size as usize];
        if spec.codec == FixtureCodec::H264 {
            sample[..4].copy_from_slice(&(sample_size - 4).to_be_bytes());
            sample[4] = if sync(index) { 0x65 } else { 0x41 };
        }
        data.extend(sample);
    }
    encode(&Mdat { data }, &mut out);
    out
}

/// A chunk as a hostile sender may write one: a `moof` whose only run is `samples` (its data
/// offset pointing at the mdat's payload), sample defaults from `tfhd`, and an `mdat` of
/// `mdat_bytes` filler bytes.
pub fn crafted_chunk(start: u64, tfhd: Tfhd, samples: TrunSamples, mdat_bytes: usize) -> Vec<u8> {
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number: 1 },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: 1,
                default_base_is_moof: true,
                ..tfhd
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: start,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples,
            }],
            ..Default::default()
        }],
    };
    let mut sized = Vec::new();
    encode(&moof, &mut sized);
    moof.traf[0].trun[0].data_offset = Some(sized.len() as i32 + 8);
    let mut out = Vec::new();
    encode(&moof, &mut out);
    encode(
        &Mdat {
            data: vec![7; mdat_bytes],
        },
        &mut out,
    );
    out
}

/// An `sgpd` box (version 0, an unknown grouping type) that declares 2^32-1 entries and has
/// none: what mp4-atom 0.17 reads as entries of no bytes, one after another, without end.
pub fn endless_sgpd() -> Vec<u8> {
    let mut sgpd = 20u32.to_be_bytes().to_vec();
    sgpd.extend_from_slice(b"sgpd");
    sgpd.extend_from_slice(&[0, 0, 0, 0]);
    sgpd.extend_from_slice(b"goom");
    sgpd.extend_from_slice(&u32::MAX.to_be_bytes());
    sgpd
}

/// Puts `inserted` at the end of the box found by following `path` (box types, from the top
/// level of `data`), growing the sizes of every box on the path.
pub fn insert_box(data: &mut Vec<u8>, path: &[&[u8; 4]], inserted: &[u8]) {
    let (mut start, mut end) = (0, data.len());
    let mut containers = Vec::new();
    for kind in path {
        let mut at = start;
        loop {
            assert!(at + 8 <= end, "no {kind:?} on the path");
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            if &data[at + 4..at + 8] == *kind {
                containers.push(at);
                start = at + 8;
                end = at + size;
                break;
            }
            at += size;
        }
    }
    data.splice(end..end, inserted.iter().copied());
    for at in containers {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        data[at..at + 4].copy_from_slice(&((size + inserted.len()) as u32).to_be_bytes());
    }
}

/// The fixture header of `spec`, parsed.
pub fn parsed_header(spec: &TrackSpec) -> TrackHeader {
    cmaf::parse_header(Bytes::from(header(spec))).expect("fixture headers parse")
}

/// Chunk `index` of a fixture track whose chunk 0 starts on [`DAY_START_SECONDS`], parsed.
pub fn parsed_chunk(spec: &TrackSpec, header: &TrackHeader, index: u64) -> Chunk {
    let start = DAY_START_SECONDS * u64::from(spec.timescale) + index * spec.chunk_ticks();
    let bytes = chunk(spec, index as u32, start, spec.samples_per_chunk);
    cmaf::parse_chunk(Bytes::from(bytes), header).expect("fixture chunks parse")
}

/// The header, then `chunks` whole chunks from `first_chunk` (counted from tick 0).
pub fn stream(spec: &TrackSpec, first_chunk: u64, chunks: u64) -> Vec<u8> {
    let mut out = header(spec);
    for index in first_chunk..first_chunk + chunks {
        out.extend(chunk(
            spec,
            index as u32,
            index * spec.chunk_ticks(),
            spec.samples_per_chunk,
        ));
    }
    out
}

/// The header, then `chunks` whole chunks from the segment that begins at `utc_seconds`
/// (rounded down to a segment boundary): a track as an ingest would send it then.
pub fn stream_at(spec: &TrackSpec, utc_seconds: u64, chunks: u64) -> Vec<u8> {
    let segment_seconds = spec.segment_ticks() / u64::from(spec.timescale);
    let first = utc_seconds / segment_seconds * spec.segment_ticks() / spec.chunk_ticks();
    stream(spec, first, chunks)
}

/// Segments of the fixtures begin on this day (2026-11-21, UTC), in seconds since the epoch.
pub const DAY_START_SECONDS: u64 = 1_795_219_200;

/// A channel's window fed with fixture tracks, as the receiver would feed it.
pub struct Channel {
    pub window: Window,
    pub name: ChannelName,
}

impl Channel {
    pub fn new(window_seconds: u64) -> Self {
        let config = WindowConfig {
            segment: Duration::from_secs(2),
            window: Duration::from_secs(window_seconds),
            ..Default::default()
        };
        Channel {
            window: Window::new(config),
            name: ChannelName::new("demo").unwrap(),
        }
    }

    pub fn feed(&mut self, track: &str, spec: &TrackSpec, chunks: impl IntoIterator<Item = u64>) {
        let track = TrackName::new(track).unwrap();
        let pieces = CmafReader::new().push(&header(spec)).unwrap();
        let Piece::Header(bytes) = &pieces[0] else {
            panic!("a header")
        };
        let header = cmaf::parse_header(bytes.clone()).unwrap();
        let day = Duration::from_secs(DAY_START_SECONDS);
        self.window
            .push_header(&self.name, &track, header.clone(), day)
            .unwrap();
        for index in chunks {
            let start = DAY_START_SECONDS * u64::from(spec.timescale) + index * spec.chunk_ticks();
            let bytes = chunk(spec, index as u32, start, spec.samples_per_chunk);
            let chunk = cmaf::parse_chunk(Bytes::from(bytes), &header).unwrap();
            // Each chunk arrives live: the packager's clock reads its end.
            let now = Duration::from_nanos(
                ((start + chunk.duration) as u128 * 1_000_000_000 / u128::from(spec.timescale))
                    as u64,
            );
            let _: Accepted = self
                .window
                .push_chunk(&self.name, &track, chunk, now)
                .unwrap();
        }
    }
}
