//! Hand-made CMAF for the packager's tests, written with mp4-atom's encoder: headers and chunks
//! with known timing, so the core is tested from bytes alone, with no encoder running.

use std::time::Duration;

use bytes::Bytes;
use estuary_proto::url::{ChannelName, TrackName};
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Audio, Avc1, Avcc, Codec, Encode, Esds, FixedPoint, FourCC, Ftyp, Hdlr, Mdat, Mfhd, Moof, Moov,
    Mp4a, Mvex, Styp, Tfdt, Tfhd, Traf, Trak, Trex, Trun, TrunEntry, Visual,
};

use crate::cmaf::{self, CmafReader, Piece};
use crate::window::{Accepted, Window, WindowConfig};

/// Sample flags of a sync sample (depends on nothing) and of any other sample.
const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

/// A track's timing: sample duration, samples per chunk, chunks per segment.
#[derive(Clone, Debug)]
pub struct TrackSpec {
    pub video: bool,
    /// An MP3 audio track (the ingest's `--audio aac,mp3`) rather than AAC.
    pub mp3: bool,
    pub timescale: u32,
    pub sample_duration: u32,
    pub samples_per_chunk: u32,
    pub chunks_per_segment: u32,
}

impl TrackSpec {
    /// 30 fps in a 3000 timescale, 10 frames a part, 6 parts a 2 s segment (as the ingest makes).
    pub fn video() -> Self {
        Self {
            video: true,
            mp3: false,
            timescale: 3000,
            sample_duration: 100,
            samples_per_chunk: 10,
            chunks_per_segment: 6,
        }
    }

    /// AAC at 48 kHz: 1024-sample frames, 16 frames a chunk.
    pub fn audio() -> Self {
        Self {
            video: false,
            mp3: false,
            timescale: 48_000,
            sample_duration: 1024,
            samples_per_chunk: 16,
            chunks_per_segment: 6,
        }
    }

    /// MP3 at 48 kHz: 1152-sample frames, 14 frames a chunk.
    pub fn mp3() -> Self {
        Self {
            video: false,
            mp3: true,
            timescale: 48_000,
            sample_duration: 1152,
            samples_per_chunk: 14,
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
    let codec = if spec.video {
        trak.mdia.hdlr = Hdlr {
            handler: FourCC::new(b"vide"),
            name: "video".into(),
        };
        Codec::Avc1(Avc1 {
            visual: Visual {
                width: 1280,
                height: 720,
                ..Default::default()
            },
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
        })
    } else {
        trak.mdia.hdlr = Hdlr {
            handler: FourCC::new(b"soun"),
            name: "audio".into(),
        };
        Codec::Mp4a(Mp4a {
            audio: Audio {
                data_reference_index: 1,
                channel_count: 2,
                sample_size: 16,
                sample_rate: FixedPoint::new(48_000, 0),
            },
            esds: Esds {
                es_desc: EsDescriptor {
                    es_id: 1,
                    depends_on_es_id: None,
                    url: None,
                    ocr_es_id: None,
                    stream_priority: 0,
                    dec_config: DecoderConfig {
                        // MPEG-1 audio, or MPEG-4 audio (AAC).
                        object_type_indication: if spec.mp3 { 0x6b } else { 0x40 },
                        stream_type: 5,
                        up_stream: 0,
                        buffer_size_db: Default::default(),
                        max_bitrate: 128_000,
                        avg_bitrate: 128_000,
                        // MP3 frames carry their own headers.
                        dec_specific: (!spec.mp3).then(|| DecoderSpecific {
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
    let sync = |index: u32| (index == 0 && begins_segment) || !spec.video;
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
    // Video samples are one H.264 NAL unit each (a 4-byte length, then an IDR or non-IDR slice
    // header byte, then filler that names the chunk); audio samples are filler.
    let mut data = Vec::with_capacity((sample_size * samples) as usize);
    for index in 0..samples {
        let mut sample = vec![sequence as u8; sample_size as usize];
        if spec.video {
            sample[..4].copy_from_slice(&(sample_size - 4).to_be_bytes());
            sample[4] = if sync(index) { 0x65 } else { 0x41 };
        }
        data.extend(sample);
    }
    encode(&Mdat { data }, &mut out);
    out
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
        self.window.push_header(&self.name, &track, header.clone());
        for index in chunks {
            let start = DAY_START_SECONDS * u64::from(spec.timescale) + index * spec.chunk_ticks();
            let bytes = chunk(spec, index as u32, start, spec.samples_per_chunk);
            let chunk = cmaf::parse_chunk(Bytes::from(bytes), &header).unwrap();
            let _: Accepted = self.window.push_chunk(&self.name, &track, chunk).unwrap();
        }
    }
}
