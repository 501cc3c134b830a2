//! Reading CMAF as it arrives: a byte stream (an ingest POST's body, in whatever pieces the
//! network delivers) is cut into the track's header (`ftyp` + `moov`) and its chunks
//! (`[styp] moof mdat`), without copying the bytes, and each is parsed for what the packager
//! needs: timescale and codec from the header; start, duration and whether it starts with a
//! sync sample from each chunk.

use bytes::{Buf, Bytes, BytesMut};
use mp4_atom::{Any, Codec, Decode, Moof, Moov};

/// Boxes larger than this are refused: a chunk of a live track is a fraction of a second.
pub const MAX_BOX_SIZE: u64 = 64 << 20;

/// ISO/IEC 14496-12 sample flags: `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE: u32 = 0x1_0000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CmafError {
    #[error("box {kind:?} claims {size} bytes; the largest accepted is {MAX_BOX_SIZE}")]
    BoxTooLarge { kind: String, size: u64 },
    #[error("box header is invalid: size {size} for a {kind:?} box")]
    BadBoxSize { kind: String, size: u64 },
    #[error("this is not CMAF: {0:02x?} is not a box type (four printable characters)")]
    NotABox([u8; 4]),
    #[error("a {kind:?} box came before the CMAF header (ftyp + moov)")]
    NoHeader { kind: String },
    #[error("an mdat box came without a moof before it")]
    MdatWithoutMoof,
    #[error("the {0} box does not parse: {1}")]
    Unparsable(&'static str, String),
    #[error("the header has no {0}")]
    MissingInHeader(&'static str),
    #[error("the chunk has no {0}")]
    MissingInChunk(&'static str),
    #[error("codec {0:?} is not supported (H.264, VP8, VP9, AAC, MP3 and Opus are)")]
    UnsupportedCodec(String),
    #[error("the stream ended inside a {kind:?} box ({missing} bytes missing)")]
    Truncated { kind: String, missing: u64 },
}

/// What a track is, from its header.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackHeader {
    /// The header's bytes, as received: served as `init.mp4`.
    pub bytes: Bytes,
    pub timescale: u32,
    pub media: Media,
    /// What a remuxer needs to write the samples in another container.
    pub config: CodecConfig,
    default_duration: Option<u32>,
    default_size: Option<u32>,
    default_flags: Option<u32>,
}

impl TrackHeader {
    /// MP3 tracks are for `stream.mp3` alone: HLS and DASH players, and the other streams,
    /// take the channel's AAC or Opus.
    pub fn is_mp3(&self) -> bool {
        self.config == CodecConfig::Mp3
    }
}

/// The decoder configuration from the sample entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecConfig {
    /// H.264: NAL unit length field size, and the parameter sets (SPS then PPS).
    Avc {
        length_size: u8,
        parameter_sets: Vec<Bytes>,
    },
    /// AAC: the AudioSpecificConfig's object type, sampling frequency index and channel
    /// configuration (what an ADTS header repeats).
    Aac {
        object_type: u8,
        frequency_index: u8,
        channel_configuration: u8,
    },
    /// VP8 and VP9: their `vpcC`, whose fields a WebM track repeats.
    Vp8(VpConfig),
    Vp9(VpConfig),
    /// Opus: its `dOps`, which WebM repeats as the OpusHead of its CodecPrivate.
    Opus(OpusConfig),
    /// MPEG-1/2 Layer III: every frame carries its own header, so nothing else is needed.
    Mp3,
}

/// The VP codec configuration record (`vpcC`, "VP Codec ISO Media File Format Binding"),
/// shared by VP8 and VP9.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpConfig {
    pub profile: u8,
    pub level: u8,
    pub bit_depth: u8,
    /// 0 and 1 are 4:2:0 (chroma sited vertically between luma rows, or with the first luma
    /// sample), 2 is 4:2:2, 3 is 4:4:4.
    pub chroma_subsampling: u8,
    pub full_range: bool,
    /// ISO/IEC 23091-4 (ITU-T H.273) code points.
    pub colour_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
}

/// The Opus decoder configuration (`dOps`, from "Encapsulation of Opus in ISO Base Media File
/// Format"): what an Ogg or WebM OpusHead carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusConfig {
    pub channels: u8,
    /// Samples (at 48 kHz) to drop at the start of decoding.
    pub pre_skip: u16,
    /// The encoder's input sample rate, for information: Opus always decodes at 48 kHz.
    pub input_sample_rate: u32,
    /// Q7.8 dB to apply to the decoded output.
    pub output_gain: i16,
    pub mapping_family: u8,
    /// For families other than 0: stream count, coupled count, then one channel mapping entry
    /// per output channel, as OpusHead lays them out. Empty for family 0.
    pub mapping_table: Vec<u8>,
}

/// One sample of a chunk, with its data cut from the `mdat` (shared, not copied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Decode time in the track's timescale.
    pub decode: u64,
    /// Presentation time minus decode time.
    pub composition_offset: i64,
    pub duration: u32,
    pub sync: bool,
    pub data: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Media {
    /// `codec` is the RFC 6381 string for CODECS attributes, e.g. `avc1.64001f`.
    Video {
        codec: String,
        width: u16,
        height: u16,
    },
    Audio {
        codec: String,
        sample_rate: u32,
        channels: u16,
    },
}

impl Media {
    pub fn codec(&self) -> &str {
        match self {
            Media::Video { codec, .. } | Media::Audio { codec, .. } => codec,
        }
    }
}

/// One CMAF chunk: an LL-HLS part, and the building block of segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// `[styp] moof mdat`, as received.
    pub bytes: Bytes,
    /// `tfdt`: the decode time of the first sample, in the track's timescale.
    pub start: u64,
    pub duration: u64,
    pub samples: u32,
    /// The first sample is a sync sample (a keyframe): a player can start here.
    pub independent: bool,
}

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
}

impl CmafReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next piece of the stream and returns every header or chunk it completes.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Piece>, CmafError> {
        self.buffer.extend_from_slice(data);
        let mut pieces = Vec::new();
        while let Some((kind, size)) = self.next_box()? {
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
                _ if self.in_header => {}
                _ => self.require_header(&kind)?,
            }
        }
        Ok(pieces)
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
                Ok(Some((_, size))) => (size - rest.len()) as u64,
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
            Err(CmafError::NoHeader {
                kind: String::from_utf8_lossy(kind).into_owned(),
            })
        }
    }

    fn next_box(&self) -> Result<Option<([u8; 4], usize)>, CmafError> {
        box_header(&self.buffer[self.scanned..])
    }

    fn take(&mut self) -> Bytes {
        let unit = self.buffer.split_to(self.scanned).freeze();
        self.scanned = 0;
        unit
    }
}

/// The type and total size of the box at the start of `data`, once its header is there.
fn box_header(data: &[u8]) -> Result<Option<([u8; 4], usize)>, CmafError> {
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
    let name = || String::from_utf8_lossy(&kind).into_owned();
    let (size, header_size) = match u32::from_be_bytes([data[0], data[1], data[2], data[3]]) {
        1 => {
            let Some(large) = data.get(8..16) else {
                return Ok(None);
            };
            let mut large = large;
            (large.get_u64(), 16)
        }
        // Size 0 means "to the end of the file", which a stream never has.
        size => (u64::from(size), 8),
    };
    if size < header_size {
        return Err(CmafError::BadBoxSize { kind: name(), size });
    }
    if size > MAX_BOX_SIZE {
        return Err(CmafError::BoxTooLarge { kind: name(), size });
    }
    Ok(Some((kind, size as usize)))
}

/// Parses a header cut by [`CmafReader`].
pub fn parse_header(bytes: Bytes) -> Result<TrackHeader, CmafError> {
    let moov = top_level_boxes(&bytes)?
        .into_iter()
        .find_map(|atom| match atom {
            Any::Moov(moov) => Some(moov),
            _ => None,
        })
        .ok_or(CmafError::MissingInHeader("moov"))?;
    let (timescale, media, config) = describe_track(&moov)?;
    let trex = moov.mvex.as_ref().and_then(|mvex| mvex.trex.first());
    Ok(TrackHeader {
        bytes,
        timescale,
        media,
        config,
        default_duration: trex.map(|t| t.default_sample_duration).filter(|d| *d > 0),
        default_size: trex.map(|t| t.default_sample_size).filter(|s| *s > 0),
        default_flags: trex.map(|t| t.default_sample_flags),
    })
}

/// `esds` object types (ISO/IEC 14496-1) of MPEG-1 and MPEG-2 audio: MP3 in MP4.
const MPEG1_AUDIO: u8 = 0x6b;
const MPEG2_AUDIO: u8 = 0x69;

fn describe_track(moov: &Moov) -> Result<(u32, Media, CodecConfig), CmafError> {
    let trak = moov
        .trak
        .first()
        .ok_or(CmafError::MissingInHeader("trak"))?;
    let timescale = trak.mdia.mdhd.timescale;
    if timescale == 0 {
        return Err(CmafError::MissingInHeader(
            "timescale (mdhd timescale is 0)",
        ));
    }
    let codec = trak
        .mdia
        .minf
        .stbl
        .stsd
        .codecs
        .first()
        .ok_or(CmafError::MissingInHeader("sample entry (stsd is empty)"))?;
    let media = match codec {
        Codec::Avc1(avc1) => (
            Media::Video {
                codec: format!(
                    "avc1.{:02x}{:02x}{:02x}",
                    avc1.avcc.avc_profile_indication,
                    avc1.avcc.profile_compatibility,
                    avc1.avcc.avc_level_indication
                ),
                width: avc1.visual.width,
                height: avc1.visual.height,
            },
            CodecConfig::Avc {
                length_size: avc1.avcc.length_size,
                parameter_sets: avc1
                    .avcc
                    .sequence_parameter_sets
                    .iter()
                    .chain(&avc1.avcc.picture_parameter_sets)
                    .map(|set| Bytes::copy_from_slice(set))
                    .collect(),
            },
        ),
        Codec::Mp4a(mp4a)
            if matches!(
                mp4a.esds.es_desc.dec_config.object_type_indication,
                MPEG1_AUDIO | MPEG2_AUDIO
            ) =>
        {
            (
                Media::Audio {
                    codec: format!(
                        "mp4a.{:02x}",
                        mp4a.esds.es_desc.dec_config.object_type_indication
                    ),
                    sample_rate: u32::from(mp4a.audio.sample_rate.integer()),
                    channels: mp4a.audio.channel_count,
                },
                CodecConfig::Mp3,
            )
        }
        Codec::Mp4a(mp4a) => {
            let config = &mp4a.esds.es_desc.dec_config;
            let specific = config
                .dec_specific
                .as_ref()
                .ok_or(CmafError::MissingInHeader("AudioSpecificConfig"))?;
            let object_type = specific.profile;
            (
                Media::Audio {
                    codec: format!("mp4a.{:02x}.{object_type}", config.object_type_indication),
                    sample_rate: u32::from(mp4a.audio.sample_rate.integer()),
                    channels: mp4a.audio.channel_count,
                },
                CodecConfig::Aac {
                    object_type,
                    frequency_index: specific.freq_index,
                    channel_configuration: specific.chan_conf,
                },
            )
        }
        Codec::Vp08(vp08) => vp_track("vp08", &vp08.vpcc, &vp08.visual, CodecConfig::Vp8),
        Codec::Vp09(vp09) => vp_track("vp09", &vp09.vpcc, &vp09.visual, CodecConfig::Vp9),
        Codec::Opus(opus) => {
            let dops = &opus.dops;
            let (mapping_family, mapping_table) = match &dops.channel_mapping {
                None => (0, Vec::new()),
                Some(mapping) => {
                    let mut table = vec![mapping.stream_count, mapping.coupled_count];
                    table.extend_from_slice(&mapping.channel_mapping);
                    (mapping.family, table)
                }
            };
            (
                Media::Audio {
                    codec: "opus".into(),
                    sample_rate: u32::from(opus.audio.sample_rate.integer()),
                    channels: opus.audio.channel_count,
                },
                CodecConfig::Opus(OpusConfig {
                    channels: dops.output_channel_count,
                    pre_skip: dops.pre_skip,
                    input_sample_rate: dops.input_sample_rate,
                    output_gain: dops.output_gain,
                    mapping_family,
                    mapping_table,
                }),
            )
        }
        other => {
            return Err(CmafError::UnsupportedCodec(
                format!("{other:?}").chars().take(24).collect(),
            ));
        }
    };
    let (media, config) = media;
    Ok((timescale, media, config))
}

/// A VP8 or VP9 track (`fourcc`) from its sample entry's `vpcC` and picture size.
fn vp_track(
    fourcc: &str,
    vpcc: &mp4_atom::VpcC,
    visual: &mp4_atom::Visual,
    config: fn(VpConfig) -> CodecConfig,
) -> (Media, CodecConfig) {
    let vp = vp_config(vpcc);
    let media = Media::Video {
        codec: vp_codec(fourcc, &vp),
        width: visual.width,
        height: visual.height,
    };
    (media, config(vp))
}

fn vp_config(vpcc: &mp4_atom::VpcC) -> VpConfig {
    VpConfig {
        profile: vpcc.profile,
        level: vpcc.level,
        bit_depth: vpcc.bit_depth,
        chroma_subsampling: vpcc.chroma_subsampling,
        full_range: vpcc.video_full_range_flag,
        colour_primaries: vpcc.color_primaries,
        transfer_characteristics: vpcc.transfer_characteristics,
        matrix_coefficients: vpcc.matrix_coefficients,
    }
}

/// The codec string of the VP binding's "Codecs Parameter String" section, short form:
/// `vp09.PP.LL.DD` (profile, level, bit depth), e.g. `vp09.00.10.08`.
fn vp_codec(fourcc: &str, config: &VpConfig) -> String {
    format!(
        "{fourcc}.{:02}.{:02}.{:02}",
        config.profile, config.level, config.bit_depth
    )
}

/// Parses a chunk cut by [`CmafReader`], with its track's header for sample defaults.
pub fn parse_chunk(bytes: Bytes, header: &TrackHeader) -> Result<Chunk, CmafError> {
    let moof: Moof = top_level_boxes(&bytes)?
        .into_iter()
        .find_map(|atom| match atom {
            Any::Moof(moof) => Some(moof),
            _ => None,
        })
        .ok_or(CmafError::MissingInChunk("moof"))?;
    let traf = moof.traf.first().ok_or(CmafError::MissingInChunk("traf"))?;
    let start = traf
        .tfdt
        .as_ref()
        .ok_or(CmafError::MissingInChunk("tfdt"))?
        .base_media_decode_time;
    let default_duration = traf
        .tfhd
        .default_sample_duration
        .or(header.default_duration);
    let default_flags = traf
        .tfhd
        .default_sample_flags
        .or(header.default_flags)
        .unwrap_or(0);
    let mut duration = 0u64;
    let mut samples = 0u32;
    let mut first_flags = None;
    for trun in &traf.trun {
        for entry in trun.samples.iter() {
            let sample_duration =
                entry
                    .duration
                    .or(default_duration)
                    .ok_or(CmafError::MissingInChunk(
                        "sample duration (trun, tfhd or trex)",
                    ))?;
            duration += u64::from(sample_duration);
            first_flags.get_or_insert(entry.flags.unwrap_or(default_flags));
            samples += 1;
        }
    }
    if samples == 0 {
        return Err(CmafError::MissingInChunk("samples"));
    }
    Ok(Chunk {
        bytes,
        start,
        duration,
        samples,
        independent: first_flags.is_some_and(|flags| flags & NON_SYNC_SAMPLE == 0),
    })
}

/// The samples of a chunk (`[styp] moof mdat`, one track), their timing and their data.
pub fn samples(bytes: &Bytes, header: &TrackHeader) -> Result<Vec<Sample>, CmafError> {
    let mut cursor: &[u8] = bytes;
    let mut moof = None;
    while !cursor.is_empty() {
        let offset = bytes.len() - cursor.len();
        match Any::decode(&mut cursor) {
            Ok(Any::Moof(found)) => {
                moof = Some((offset, found));
                break;
            }
            Ok(_) => {}
            Err(error) => return Err(CmafError::Unparsable("top-level", error.to_string())),
        }
    }
    let (moof_offset, moof) = moof.ok_or(CmafError::MissingInChunk("moof"))?;
    let traf = moof.traf.first().ok_or(CmafError::MissingInChunk("traf"))?;
    let mut decode = traf
        .tfdt
        .as_ref()
        .ok_or(CmafError::MissingInChunk("tfdt"))?
        .base_media_decode_time;
    let tfhd = &traf.tfhd;
    let base = match tfhd.base_data_offset {
        Some(offset) => usize::try_from(offset).unwrap_or(usize::MAX),
        None => moof_offset,
    };
    let mut position = base;
    let mut samples = Vec::new();
    for trun in &traf.trun {
        if let Some(offset) = trun.data_offset {
            position = base.saturating_add_signed(offset as isize);
        }
        for entry in trun.samples.iter() {
            let duration = entry
                .duration
                .or(tfhd.default_sample_duration)
                .or(header.default_duration)
                .ok_or(CmafError::MissingInChunk("sample duration"))?;
            let size = entry
                .size
                .or(tfhd.default_sample_size)
                .or(header.default_size)
                .ok_or(CmafError::MissingInChunk("sample size"))? as usize;
            let flags = entry
                .flags
                .or(tfhd.default_sample_flags)
                .or(header.default_flags)
                .unwrap_or(0);
            let data = bytes
                .get(position..position.saturating_add(size))
                .ok_or(CmafError::MissingInChunk("sample data inside the chunk"))?;
            samples.push(Sample {
                decode,
                composition_offset: entry.cts.unwrap_or(0),
                duration,
                sync: flags & NON_SYNC_SAMPLE == 0,
                data: bytes.slice_ref(data),
            });
            position += size;
            decode += u64::from(duration);
        }
    }
    Ok(samples)
}

fn top_level_boxes(bytes: &Bytes) -> Result<Vec<Any>, CmafError> {
    let mut cursor: &[u8] = bytes;
    let mut atoms = Vec::new();
    while !cursor.is_empty() {
        let kind = cursor
            .get(4..8)
            .map(|k| String::from_utf8_lossy(k).into_owned());
        match Any::decode(&mut cursor) {
            Ok(atom) => atoms.push(atom),
            Err(error) => {
                let name = match kind.as_deref() {
                    Some("moov") => "moov",
                    Some("moof") => "moof",
                    Some("ftyp") => "ftyp",
                    Some("styp") => "styp",
                    Some("mdat") => "mdat",
                    _ => "top-level",
                };
                return Err(CmafError::Unparsable(name, error.to_string()));
            }
        }
    }
    Ok(atoms)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{self, TrackSpec};
    use proptest::prelude::*;

    #[test]
    fn samples_are_cut_from_the_mdat_with_their_timing() {
        let spec = TrackSpec::video();
        let header = parse_header(Bytes::from(testing::header(&spec))).unwrap();
        assert!(matches!(
            &header.config,
            CodecConfig::Avc { length_size: 4, parameter_sets } if parameter_sets.len() == 2
        ));
        let start = spec.segment_ticks() * 7;
        let bytes = Bytes::from(testing::chunk(&spec, 3, start, spec.samples_per_chunk));
        let samples = samples(&bytes, &header).unwrap();
        assert_eq!(samples.len(), spec.samples_per_chunk as usize);
        for (index, sample) in samples.iter().enumerate() {
            assert_eq!(
                sample.decode,
                start + index as u64 * u64::from(spec.sample_duration)
            );
            assert_eq!(sample.sync, index == 0);
            assert_eq!(sample.data.len(), 50);
            assert_eq!(
                &sample.data[..5],
                &[0, 0, 0, 46, if index == 0 { 0x65 } else { 0x41 }]
            );
            assert!(sample.data[5..].iter().all(|byte| *byte == 3));
        }
        let audio = parse_header(Bytes::from(testing::header(&TrackSpec::audio()))).unwrap();
        assert_eq!(
            audio.config,
            CodecConfig::Aac {
                object_type: 2,
                frequency_index: 3,
                channel_configuration: 2
            }
        );
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
    fn audio_headers_give_their_codec() {
        let spec = TrackSpec::audio();
        let Piece::Header(bytes) = &CmafReader::new().push(&testing::header(&spec)).unwrap()[0]
        else {
            panic!("a header")
        };
        let header = parse_header(bytes.clone()).unwrap();
        assert_eq!(
            header.media,
            Media::Audio {
                codec: "mp4a.40.2".into(),
                sample_rate: 48_000,
                channels: 2
            }
        );
    }

    #[test]
    fn vp8_vp9_and_opus_headers_give_what_webm_needs() {
        let parse = |spec: &TrackSpec| parse_header(Bytes::from(testing::header(spec))).unwrap();
        let vp = VpConfig {
            profile: 0,
            level: 10,
            bit_depth: 8,
            chroma_subsampling: 1,
            full_range: false,
            colour_primaries: 1,
            transfer_characteristics: 1,
            matrix_coefficients: 1,
        };
        for (spec, codec, config) in [
            (TrackSpec::vp8(), "vp08.00.10.08", CodecConfig::Vp8(vp)),
            (TrackSpec::vp9(), "vp09.00.10.08", CodecConfig::Vp9(vp)),
        ] {
            let header = parse(&spec);
            assert_eq!(
                header.media,
                Media::Video {
                    codec: codec.into(),
                    width: 1280,
                    height: 720
                }
            );
            assert_eq!(header.config, config);
            let bytes = Bytes::from(testing::chunk(&spec, 0, 0, spec.samples_per_chunk));
            let samples = samples(&bytes, &header).unwrap();
            assert_eq!(samples.len(), 10);
            assert!(samples[0].sync && !samples[1].sync);
        }
        let opus = parse(&TrackSpec::opus());
        assert_eq!(opus.media.codec(), "opus");
        assert_eq!(
            opus.config,
            CodecConfig::Opus(OpusConfig {
                channels: 2,
                pre_skip: 312,
                input_sample_rate: 48_000,
                output_gain: 0,
                mapping_family: 0,
                mapping_table: Vec::new(),
            })
        );
    }

    #[test]
    fn bad_streams_are_refused_with_a_reason() {
        let spec = TrackSpec::video();
        let chunk_only = testing::chunk(&spec, 0, 0, 10);
        let error = CmafReader::new().push(&chunk_only).unwrap_err();
        assert!(matches!(error, CmafError::NoHeader { .. }), "{error}");

        let mut huge = vec![0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(b"moof");
        assert!(matches!(
            CmafReader::new().push(&huge),
            Err(CmafError::BoxTooLarge { .. })
        ));

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

        let mut garbage_moov = testing::header(&spec);
        let moov_at = garbage_moov.windows(4).position(|w| w == b"moov").unwrap() + 4;
        garbage_moov[moov_at..moov_at + 16].fill(0xAB);
        let pieces = CmafReader::new().push(&garbage_moov).unwrap();
        let Piece::Header(bytes) = &pieces[0] else {
            panic!("a header")
        };
        assert!(parse_header(bytes.clone()).is_err());
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
