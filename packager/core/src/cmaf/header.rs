//! A track's header (`ftyp` + `moov`): what the track is (timescale, codec, picture or sound)
//! and what a remuxer needs to write its samples in another container.

use bytes::Bytes;
use mp4_atom::{Codec, Mdhd, Stsd, Trex};

use super::reader::find;
use super::{CmafError, MAX_HEADER_BYTES, Media};

/// What a track is, from its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackHeader {
    /// The header's bytes, as received: served as `init.mp4`.
    pub bytes: Bytes,
    pub timescale: u32,
    pub media: Media,
    /// What a remuxer needs to write the samples in another container.
    pub config: CodecConfig,
    /// The `trex` defaults of the track's samples, for chunks that do not give their own.
    pub(super) default_duration: Option<u32>,
    pub(super) default_size: Option<u32>,
    pub(super) default_flags: Option<u32>,
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

/// Parses a header cut by [`CmafReader`].
pub fn parse_header(bytes: Bytes) -> Result<TrackHeader, CmafError> {
    if bytes.len() > MAX_HEADER_BYTES {
        return Err(CmafError::UnitTooLarge {
            unit: "header",
            kind: "moov".into(),
            size: bytes.len() as u64,
            limit: MAX_HEADER_BYTES,
        });
    }
    // Down the path to what is needed, by box headers; only those boxes are decoded.
    let missing = CmafError::MissingInHeader;
    let moov = find(&bytes, b"moov")?.ok_or(missing("moov"))?;
    let trak = find(moov.body, b"trak")?.ok_or(missing("trak"))?;
    let mdia = find(trak.body, b"mdia")?.ok_or(missing("mdia"))?;
    let mdhd: Mdhd = find(mdia.body, b"mdhd")?
        .ok_or(missing("mdhd"))?
        .decode("mdhd")?;
    let minf = find(mdia.body, b"minf")?.ok_or(missing("minf"))?;
    let stbl = find(minf.body, b"stbl")?.ok_or(missing("stbl"))?;
    let stsd: Stsd = find(stbl.body, b"stsd")?
        .ok_or(missing("stsd"))?
        .decode("stsd")?;
    let trex: Option<Trex> = match find(moov.body, b"mvex")? {
        Some(mvex) => find(mvex.body, b"trex")?
            .map(|trex| trex.decode("trex"))
            .transpose()?,
        None => None,
    };
    let trex = trex.as_ref();
    let (timescale, media, config) = describe_track(&mdhd, &stsd)?;
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

fn describe_track(mdhd: &Mdhd, stsd: &Stsd) -> Result<(u32, Media, CodecConfig), CmafError> {
    let timescale = mdhd.timescale;
    if timescale == 0 {
        return Err(CmafError::MissingInHeader(
            "timescale (mdhd timescale is 0)",
        ));
    }
    let codec = stsd
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::{CmafReader, Piece, samples};
    use crate::testing::{self, TrackSpec};

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
        assert_eq!(
            header.config,
            CodecConfig::Aac {
                object_type: 2,
                frequency_index: 3,
                channel_configuration: 2
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

    /// An `sgpd` with 2^32-1 entries of no bytes each: mp4-atom 0.17 would push entries until
    /// memory runs out (the fuzzer found it in 746 bytes). Boxes the packager has no use for
    /// are never decoded, wherever they are in the header.
    #[test]
    fn boxes_the_packager_does_not_need_are_never_decoded() {
        let sgpd = testing::endless_sgpd();
        let spec = TrackSpec::video();
        let mut header = testing::header(&spec);
        let moov = header.windows(4).position(|w| w == b"moov").unwrap() - 4;
        header.splice(moov..moov, sgpd.iter().copied());
        let parsed = parse_header(Bytes::from(header)).unwrap();
        assert_eq!(parsed.timescale, spec.timescale);
        // Inside the moov's stbl too: the sizes of the boxes around it grow with it.
        let mut header = testing::header(&spec);
        testing::insert_box(
            &mut header,
            &[b"moov", b"trak", b"mdia", b"minf", b"stbl"],
            &sgpd,
        );
        assert_eq!(
            parse_header(Bytes::from(header)).unwrap().timescale,
            spec.timescale
        );
    }

    #[test]
    fn bad_headers_are_refused_with_a_reason() {
        let spec = TrackSpec::video();
        let mut garbage_moov = testing::header(&spec);
        let moov_at = garbage_moov.windows(4).position(|w| w == b"moov").unwrap() + 4;
        garbage_moov[moov_at..moov_at + 16].fill(0xAB);
        assert!(parse_header(Bytes::from(garbage_moov)).is_err());

        let mut padded = testing::header(&spec);
        padded.resize(MAX_HEADER_BYTES + 1, 0);
        assert!(matches!(
            parse_header(Bytes::from(padded)),
            Err(CmafError::UnitTooLarge { unit: "header", .. })
        ));
    }
}
