//! `stream.webm`: WebM (a Matroska profile) with VP8 or VP9 video and Opus audio, which browsers
//! play in a `<video>` element or from one MSE SourceBuffer. One header (the EBML header, a
//! Segment of unknown size, its Info and Tracks), then a Cluster of unknown size at every chunk
//! of the lead track, with a SimpleBlock per sample: nothing is sized after the fact, so every
//! byte goes out as soon as its chunk is muxed.

use bytes::Bytes;

use super::{ContinuousError, Role, StreamFormat};
use crate::cmaf::{Chunk, CodecConfig, Media, OpusConfig, TrackHeader, VpConfig};

/// Element IDs, with their length marker bits, as written: the EBML header's from RFC 8794
/// (EBML), the others from RFC 9559 (Matroska).
mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;

    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;

    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const COLOUR: u32 = 0x55B0;
    pub const MATRIX_COEFFICIENTS: u32 = 0x55B1;
    pub const BITS_PER_CHANNEL: u32 = 0x55B2;
    pub const RANGE: u32 = 0x55B9;
    pub const TRANSFER_CHARACTERISTICS: u32 = 0x55BA;
    pub const PRIMARIES: u32 = 0x55BB;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;

    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// An element data size of all ones: "unknown", the element ends where one that cannot be its
/// child begins (RFC 8794 §6.2). The Segment and every Cluster are written so.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Block timestamps are in milliseconds: the Info's TimestampScale, in nanoseconds.
const NANOS_PER_TICK: u64 = 1_000_000;

/// SimpleBlock flags (RFC 9559 §10.2): the frame is a keyframe.
const KEYFRAME: u8 = 0x80;

/// Matroska TrackType values.
const TRACK_TYPE_VIDEO: u64 = 1;
const TRACK_TYPE_AUDIO: u64 = 2;

/// What an Opus decoder discards after a seek before its output is right: 80 ms, as the WebM
/// codec mapping for Opus recommends.
const OPUS_SEEK_PRE_ROLL_NANOS: u64 = 80_000_000;

/// Opus always decodes at 48 kHz, whatever rate its input had (RFC 7845 §5.1).
const OPUS_RATE: u32 = 48_000;

/// Whether `stream.webm` can carry the track: VP8 or VP9 video, Opus audio.
pub fn fits(track: &TrackHeader) -> bool {
    matches!(
        track.config,
        CodecConfig::Vp8(_) | CodecConfig::Vp9(_) | CodecConfig::Opus(_)
    )
}

/// A track of the stream.
struct Track {
    header: TrackHeader,
    /// Its Matroska TrackNumber, from 1.
    number: u8,
}

pub struct WebmStream {
    header: Bytes,
    /// The tracks carried, per role.
    tracks: [Option<Track>; 2],
    /// The codecs for the MIME type, as browsers name them.
    codecs: Vec<String>,
    /// The lead track's first chunk, in UTC milliseconds: the stream's time zero.
    origin: Option<u64>,
    /// The open Cluster's timestamp; `None` before the first.
    cluster: Option<u64>,
}

impl WebmStream {
    /// VP8 or VP9 video and Opus audio are carried; audio in another codec is left out when
    /// there is video to carry, and video in another codec is refused.
    pub fn new(
        video: Option<&TrackHeader>,
        audio: Option<&TrackHeader>,
    ) -> Result<WebmStream, ContinuousError> {
        if let Some(video) = video
            && !fits(video)
        {
            return Err(ContinuousError::Unsupported {
                format: StreamFormat::Webm,
                what: format!("video in {} (it takes VP8 or VP9)", video.media.codec()),
            });
        }
        let audio = audio.filter(|audio| fits(audio));
        let mut tracks = [None, None];
        let mut number = 0;
        for (role, header) in [(Role::Video, video), (Role::Audio, audio)] {
            if let Some(header) = header {
                number += 1;
                tracks[role.index()] = Some(Track {
                    header: header.clone(),
                    number,
                });
            }
        }
        if number == 0 {
            return Err(ContinuousError::NothingToCarry {
                format: StreamFormat::Webm,
                what: "VP8 or VP9 video or Opus audio",
            });
        }
        let codecs = tracks
            .iter()
            .flatten()
            .map(|track| match &track.header.config {
                // Browsers know VP8 by its short name alone; VP9 by its full codec string.
                CodecConfig::Vp8(_) => "vp8".to_owned(),
                _ => track.header.media.codec().to_owned(),
            })
            .collect();
        let header = Bytes::from(stream_header(&tracks));
        Ok(WebmStream {
            header,
            tracks,
            codecs,
            origin: None,
            cluster: None,
        })
    }

    /// The EBML header and the Segment's start, with Info and Tracks: sent first to every
    /// viewer.
    pub fn header(&self) -> Bytes {
        self.header.clone()
    }

    pub fn has_video(&self) -> bool {
        self.tracks[Role::Video.index()].is_some()
    }

    pub fn carries(&self, role: Role) -> bool {
        self.tracks[role.index()].is_some()
    }

    /// The media type with its codecs, e.g. `video/webm; codecs="vp8,opus"`.
    pub fn mime(&self) -> String {
        let kind = if self.has_video() { "video" } else { "audio" };
        format!("{kind}/webm; codecs=\"{}\"", self.codecs.join(","))
    }

    fn lead(&self) -> Role {
        if self.has_video() {
            Role::Video
        } else {
            Role::Audio
        }
    }

    /// The chunk's samples as SimpleBlocks. A chunk of the lead track begins a Cluster, so that
    /// one whose first sample is a keyframe is a place to start; the other track's samples go
    /// into the open Cluster, or a new one when they are more than an i16 of milliseconds from
    /// it. Nothing is written before the lead track's first chunk, nor anything older than it
    /// (audio from before the first video frame). Empty when there is nothing to write.
    pub fn push(&mut self, role: Role, chunk: &Chunk) -> Result<Vec<Bytes>, ContinuousError> {
        let lead = self.lead();
        let Some(track) = &self.tracks[role.index()] else {
            return Err(ContinuousError::Unsupported {
                format: StreamFormat::Webm,
                what: format!("a {role:?} track it was not opened with"),
            });
        };
        let timescale = u64::from(track.header.timescale.max(1));
        let millis = |ticks: u64| (u128::from(ticks) * 1000 / u128::from(timescale)) as u64;
        if role == lead {
            self.origin.get_or_insert(millis(chunk.start));
            self.cluster = None;
        }
        let Some(origin) = self.origin else {
            return Ok(Vec::new());
        };
        let samples = super::samples(chunk, &track.header, role)?;
        let mut out = Vec::with_capacity(samples.iter().map(|s| s.data.len() + 16).sum());
        for sample in &samples {
            let presentation = sample
                .decode
                .saturating_add_signed(sample.composition_offset);
            let Some(time) = millis(presentation).checked_sub(origin) else {
                continue;
            };
            let relative = self
                .cluster
                .and_then(|cluster| i16::try_from(i128::from(time) - i128::from(cluster)).ok());
            let relative = match relative {
                Some(relative) => relative,
                None => {
                    put_id(&mut out, id::CLUSTER);
                    out.extend_from_slice(&UNKNOWN_SIZE);
                    put_uint(&mut out, id::TIMESTAMP, time);
                    self.cluster = Some(time);
                    0
                }
            };
            // RFC 9559 §10.2: the track number (a variable-length integer), the timestamp
            // relative to the Cluster's (signed, big-endian), the flags, then the frame.
            put_id(&mut out, id::SIMPLE_BLOCK);
            put_size(&mut out, 4 + sample.data.len() as u64);
            out.push(0x80 | track.number);
            out.extend_from_slice(&relative.to_be_bytes());
            out.push(if sample.sync { KEYFRAME } else { 0 });
            out.extend_from_slice(&sample.data);
        }
        Ok(if out.is_empty() {
            Vec::new()
        } else {
            vec![Bytes::from(out)]
        })
    }
}

/// The EBML header, then the Segment (of unknown size) with its Info and Tracks.
fn stream_header(tracks: &[Option<Track>; 2]) -> Vec<u8> {
    let mut out = Vec::new();
    put_master(&mut out, id::EBML, |ebml| {
        put_uint(ebml, id::EBML_VERSION, 1);
        put_uint(ebml, id::EBML_READ_VERSION, 1);
        put_uint(ebml, id::EBML_MAX_ID_LENGTH, 4);
        put_uint(ebml, id::EBML_MAX_SIZE_LENGTH, 8);
        put_string(ebml, id::DOC_TYPE, "webm");
        // Version 4 for CodecDelay and SeekPreRoll; a reader of version 2 can play it.
        put_uint(ebml, id::DOC_TYPE_VERSION, 4);
        put_uint(ebml, id::DOC_TYPE_READ_VERSION, 2);
    });
    put_id(&mut out, id::SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);
    put_master(&mut out, id::INFO, |info| {
        put_uint(info, id::TIMESTAMP_SCALE, NANOS_PER_TICK);
        put_string(info, id::MUXING_APP, "Estuary");
        put_string(info, id::WRITING_APP, "Estuary");
    });
    put_master(&mut out, id::TRACKS, |entries| {
        for track in tracks.iter().flatten() {
            put_master(entries, id::TRACK_ENTRY, |entry| track_entry(entry, track));
        }
    });
    out
}

fn track_entry(out: &mut Vec<u8>, track: &Track) {
    put_uint(out, id::TRACK_NUMBER, u64::from(track.number));
    put_uint(out, id::TRACK_UID, u64::from(track.number));
    put_uint(out, id::FLAG_LACING, 0);
    match (&track.header.config, &track.header.media) {
        (
            CodecConfig::Vp8(config) | CodecConfig::Vp9(config),
            Media::Video { width, height, .. },
        ) => {
            put_uint(out, id::TRACK_TYPE, TRACK_TYPE_VIDEO);
            if let CodecConfig::Vp9(config) = &track.header.config {
                put_string(out, id::CODEC_ID, "V_VP9");
                put_binary(out, id::CODEC_PRIVATE, &vp9_private(config));
            } else {
                put_string(out, id::CODEC_ID, "V_VP8");
            }
            put_master(out, id::VIDEO, |video| {
                put_uint(video, id::PIXEL_WIDTH, u64::from(*width));
                put_uint(video, id::PIXEL_HEIGHT, u64::from(*height));
                put_master(video, id::COLOUR, |colour| put_colour(colour, config));
            });
        }
        (CodecConfig::Opus(config), Media::Audio { .. }) => {
            put_uint(out, id::TRACK_TYPE, TRACK_TYPE_AUDIO);
            put_string(out, id::CODEC_ID, "A_OPUS");
            put_binary(out, id::CODEC_PRIVATE, &opus_head(config));
            put_uint(
                out,
                id::CODEC_DELAY,
                u64::from(config.pre_skip) * 1_000_000_000 / u64::from(OPUS_RATE),
            );
            put_uint(out, id::SEEK_PRE_ROLL, OPUS_SEEK_PRE_ROLL_NANOS);
            put_master(out, id::AUDIO, |audio| {
                put_float(audio, id::SAMPLING_FREQUENCY, f64::from(OPUS_RATE));
                put_uint(audio, id::CHANNELS, u64::from(config.channels));
            });
        }
        _ => unreachable!(
            "only VP8 and VP9 video and Opus audio are opened (WebmStream::new, cmaf::parse_header)"
        ),
    }
}

/// VP9's CodecPrivate (the WebM codec mapping's "VP9 Codec Feature Metadata"): ID, length and
/// value of the profile (1), level (2), bit depth (3) and chroma subsampling (4).
fn vp9_private(config: &VpConfig) -> Vec<u8> {
    [
        config.profile,
        config.level,
        config.bit_depth,
        config.chroma_subsampling,
    ]
    .iter()
    .zip(1u8..)
    .flat_map(|(value, feature)| [feature, 1, *value])
    .collect()
}

/// The Colour element's children from the `vpcC`: Matroska takes the same ITU-T H.273 code
/// points; its Range is 1 for broadcast range and 2 for full range.
fn put_colour(out: &mut Vec<u8>, config: &VpConfig) {
    put_uint(
        out,
        id::MATRIX_COEFFICIENTS,
        config.matrix_coefficients.into(),
    );
    put_uint(out, id::BITS_PER_CHANNEL, config.bit_depth.into());
    put_uint(out, id::RANGE, if config.full_range { 2 } else { 1 });
    put_uint(
        out,
        id::TRANSFER_CHARACTERISTICS,
        config.transfer_characteristics.into(),
    );
    put_uint(out, id::PRIMARIES, config.colour_primaries.into());
}

/// The identification header of RFC 7845 §5.1, Opus's CodecPrivate in WebM: what the MP4
/// `dOps` holds, little-endian and at version 1.
fn opus_head(config: &OpusConfig) -> Vec<u8> {
    let mut head = Vec::with_capacity(19 + config.mapping_table.len());
    head.extend_from_slice(b"OpusHead");
    head.push(1);
    head.push(config.channels);
    head.extend_from_slice(&config.pre_skip.to_le_bytes());
    head.extend_from_slice(&config.input_sample_rate.to_le_bytes());
    head.extend_from_slice(&config.output_gain.to_le_bytes());
    head.push(config.mapping_family);
    head.extend_from_slice(&config.mapping_table);
    head
}

/// An element ID as written: its bytes from the first non-zero one (the ID's own leading bits
/// say its length).
fn put_id(out: &mut Vec<u8>, id: u32) {
    let skip = (id.leading_zeros() / 8) as usize;
    out.extend_from_slice(&id.to_be_bytes()[skip..]);
}

/// An element data size as a variable-length integer (RFC 8794 §4) in as few bytes as hold
/// it, avoiding the all-ones value, which means "unknown".
fn put_size(out: &mut Vec<u8>, size: u64) {
    let mut length = 1;
    while length < 8 && size >= (1 << (7 * length)) - 1 {
        length += 1;
    }
    let marked = size | 1 << (7 * length);
    out.extend_from_slice(&marked.to_be_bytes()[8 - length..]);
}

fn put_binary(out: &mut Vec<u8>, id: u32, data: &[u8]) {
    put_id(out, id);
    put_size(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// An unsigned integer element in as few bytes as hold the value (at least one).
fn put_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let skip = ((value.leading_zeros() / 8) as usize).min(7);
    put_binary(out, id, &value.to_be_bytes()[skip..]);
}

fn put_float(out: &mut Vec<u8>, id: u32, value: f64) {
    put_binary(out, id, &value.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, id: u32, value: &str) {
    put_binary(out, id, value.as_bytes());
}

/// A master element around what `children` writes.
fn put_master(out: &mut Vec<u8>, id: u32, children: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    children(&mut body);
    put_binary(out, id, &body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::continuous::Feed;
    use crate::testing::{Channel, TrackSpec, parsed_chunk as chunk, parsed_header as header};
    use crate::window::TrackWindow;
    use estuary_proto::url::TrackName;

    /// An element as read back: its ID, its size (`None` for unknown) and, for an element that
    /// holds data rather than children, the data.
    #[derive(Debug)]
    struct Element {
        id: u32,
        size: Option<u64>,
        data: Vec<u8>,
    }

    /// Elements this stream writes that hold children: the reader steps into them.
    const MASTERS: [u32; 9] = [
        id::EBML,
        id::SEGMENT,
        id::INFO,
        id::TRACKS,
        id::TRACK_ENTRY,
        id::VIDEO,
        id::COLOUR,
        id::AUDIO,
        id::CLUSTER,
    ];

    /// A variable-length integer at `at` (RFC 8794 §4): its value without the marker, its length,
    /// and whether all its value bits are ones.
    fn vint(data: &[u8], at: usize) -> (u64, usize, bool) {
        let first = data[at];
        assert_ne!(first, 0, "a length marker within the first byte");
        let length = first.leading_zeros() as usize + 1;
        let mut value = u64::from(first) & (0xFF >> length);
        for byte in &data[at + 1..at + length] {
            value = value << 8 | u64::from(*byte);
        }
        (value, length, value == (1 << (7 * length)) - 1)
    }

    /// Every element in document order, masters flattened into the list before their children.
    fn read(data: &[u8]) -> Vec<Element> {
        let mut elements = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let (_, id_length, _) = vint(data, at);
            let id = data[at..at + id_length]
                .iter()
                .fold(0u32, |id, byte| id << 8 | u32::from(*byte));
            at += id_length;
            let (size, size_length, unknown) = vint(data, at);
            at += size_length;
            let size = (!unknown).then_some(size);
            if MASTERS.contains(&id) {
                elements.push(Element {
                    id,
                    size,
                    data: Vec::new(),
                });
            } else {
                let size = size.expect("only masters have unknown sizes") as usize;
                elements.push(Element {
                    id,
                    size: Some(size as u64),
                    data: data[at..at + size].to_vec(),
                });
                at += size;
            }
        }
        elements
    }

    fn uint(data: &[u8]) -> u64 {
        data.iter()
            .fold(0, |value, byte| value << 8 | u64::from(*byte))
    }

    /// The values of every element `id`, as unsigned integers.
    fn uints(elements: &[Element], id: u32) -> Vec<u64> {
        elements
            .iter()
            .filter(|e| e.id == id)
            .map(|e| uint(&e.data))
            .collect()
    }

    fn strings(elements: &[Element], id: u32) -> Vec<String> {
        elements
            .iter()
            .filter(|e| e.id == id)
            .map(|e| String::from_utf8(e.data.clone()).unwrap())
            .collect()
    }

    /// A SimpleBlock as read back, with its cluster's timestamp added.
    #[derive(Debug, PartialEq, Eq)]
    struct Block {
        track: u8,
        time: i64,
        keyframe: bool,
        data: Vec<u8>,
    }

    /// The blocks in order, and the timestamps of the clusters they are in.
    fn read_blocks(elements: &[Element]) -> (Vec<Block>, Vec<u64>) {
        let mut clusters = Vec::new();
        let mut blocks = Vec::new();
        let mut in_cluster = false;
        for element in elements {
            match element.id {
                id::CLUSTER => {
                    assert_eq!(element.size, None, "clusters are of unknown size");
                    in_cluster = true;
                }
                id::TIMESTAMP => clusters.push(uint(&element.data)),
                id::SIMPLE_BLOCK => {
                    assert!(in_cluster && !clusters.is_empty());
                    let data = &element.data;
                    let (track, length, _) = vint(data, 0);
                    let relative = i16::from_be_bytes([data[length], data[length + 1]]);
                    let flags = data[length + 2];
                    assert_eq!(flags & !KEYFRAME, 0, "no lacing, nothing else");
                    blocks.push(Block {
                        track: track as u8,
                        time: *clusters.last().unwrap() as i64 + i64::from(relative),
                        keyframe: flags & KEYFRAME != 0,
                        data: data[length + 3..].to_vec(),
                    });
                }
                _ => in_cluster = false,
            }
        }
        (blocks, clusters)
    }

    #[test]
    fn a_header_with_both_tracks_then_a_cluster_per_video_chunk() {
        let (video_spec, audio_spec) = (TrackSpec::vp8(), TrackSpec::opus());
        let (video, audio) = (header(&video_spec), header(&audio_spec));
        let mut stream = WebmStream::new(Some(&video), Some(&audio)).unwrap();
        assert_eq!(stream.mime(), "video/webm; codecs=\"vp8,opus\"");
        let mut out = vec![stream.header()];
        for index in 0..3 {
            out.extend(
                stream
                    .push(Role::Video, &chunk(&video_spec, &video, index))
                    .unwrap(),
            );
            out.extend(
                stream
                    .push(Role::Audio, &chunk(&audio_spec, &audio, index))
                    .unwrap(),
            );
        }
        let elements = read(&out.concat());

        assert_eq!(elements[0].id, id::EBML);
        assert_eq!(strings(&elements, id::DOC_TYPE), ["webm"]);
        assert_eq!(uints(&elements, id::DOC_TYPE_VERSION), [4]);
        let segment = elements.iter().find(|e| e.id == id::SEGMENT).unwrap();
        assert_eq!(segment.size, None, "the segment is of unknown size");
        assert_eq!(uints(&elements, id::TIMESTAMP_SCALE), [1_000_000]);
        assert_eq!(strings(&elements, id::MUXING_APP), ["Estuary"]);
        assert_eq!(strings(&elements, id::WRITING_APP), ["Estuary"]);

        assert_eq!(uints(&elements, id::TRACK_NUMBER), [1, 2]);
        assert_eq!(uints(&elements, id::TRACK_TYPE), [1, 2]);
        assert_eq!(strings(&elements, id::CODEC_ID), ["V_VP8", "A_OPUS"]);
        assert_eq!(uints(&elements, id::PIXEL_WIDTH), [1280]);
        assert_eq!(uints(&elements, id::PIXEL_HEIGHT), [720]);
        assert_eq!(uints(&elements, id::PRIMARIES), [1], "BT.709 from the vpcC");
        assert_eq!(uints(&elements, id::RANGE), [1]);
        // 312 samples of pre-skip at 48 kHz is 6.5 ms.
        assert_eq!(uints(&elements, id::CODEC_DELAY), [6_500_000]);
        assert_eq!(uints(&elements, id::SEEK_PRE_ROLL), [80_000_000]);
        assert_eq!(uints(&elements, id::CHANNELS), [2]);
        let frequency = elements
            .iter()
            .find(|e| e.id == id::SAMPLING_FREQUENCY)
            .unwrap();
        assert_eq!(
            f64::from_be_bytes(frequency.data[..].try_into().unwrap()),
            48_000.0
        );
        let private = elements.iter().find(|e| e.id == id::CODEC_PRIVATE).unwrap();
        // RFC 7845 §5.1: magic, version 1, 2 channels, pre-skip 312, 48000 Hz, gain 0,
        // family 0, all little-endian.
        let mut opus_head = b"OpusHead".to_vec();
        opus_head.extend([1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
        assert_eq!(private.data, opus_head);

        let (blocks, clusters) = read_blocks(&elements);
        // A cluster per video chunk (10 frames, 333 ms); each audio chunk (320 ms) lands in
        // the cluster open when it comes, 13 ms a chunk earlier than it.
        assert_eq!(clusters, [0, 333, 666]);
        assert_eq!(blocks.len(), 3 * (10 + 16));
        let video_blocks: Vec<&Block> = blocks.iter().filter(|b| b.track == 1).collect();
        let audio_blocks: Vec<&Block> = blocks.iter().filter(|b| b.track == 2).collect();
        for (index, block) in video_blocks.iter().enumerate() {
            assert_eq!(block.time, index as i64 * 100 / 3, "30 fps in milliseconds");
            assert_eq!(
                block.keyframe,
                index == 0,
                "the segment's first frame alone"
            );
            assert_eq!(block.data, [(index / 10) as u8; 50]);
        }
        for (index, block) in audio_blocks.iter().enumerate() {
            assert_eq!(block.time, index as i64 * 20);
            assert!(block.keyframe, "every Opus frame stands alone");
        }
        // Each cluster starts with its video chunk's first frame.
        let starts: Vec<usize> = blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.track == 1 && clusters.contains(&(b.time as u64)))
            .map(|(at, _)| at)
            .collect();
        assert_eq!(starts, [0, 26, 52]);
    }

    #[test]
    fn nothing_before_the_first_video_and_far_audio_opens_a_cluster() {
        let (video_spec, audio_spec) = (TrackSpec::vp9(), TrackSpec::opus());
        let (video, audio) = (header(&video_spec), header(&audio_spec));
        let mut stream = WebmStream::new(Some(&video), Some(&audio)).unwrap();
        assert_eq!(stream.mime(), "video/webm; codecs=\"vp09.00.10.08,opus\"");
        let header = read(&stream.header());
        let private = header.iter().find(|e| e.id == id::CODEC_PRIVATE).unwrap();
        // Profile 0, level 10, 8 bits, chroma subsampling 1, as ID, length, value.
        assert_eq!(private.data, [1, 1, 0, 2, 1, 10, 3, 1, 8, 4, 1, 1]);
        assert_eq!(strings(&header, id::CODEC_ID), ["V_VP9", "A_OPUS"]);

        // Audio before the stream's first video has nowhere to go.
        let early = chunk(&audio_spec, &audio, 30);
        assert_eq!(
            stream.push(Role::Audio, &early).unwrap(),
            Vec::<Bytes>::new()
        );
        let first = stream
            .push(Role::Video, &chunk(&video_spec, &video, 30))
            .unwrap();
        // Audio from before the first video frame (chunk 30 of audio is 9.6 s in, video's
        // 10 s) is left out; audio 40 s on gets a cluster of its own.
        let before = stream
            .push(Role::Audio, &chunk(&audio_spec, &audio, 31))
            .unwrap();
        let later = stream
            .push(Role::Audio, &chunk(&audio_spec, &audio, 156))
            .unwrap();
        let (blocks, clusters) = read_blocks(&read(&[first, before, later].concat().concat()));
        assert_eq!(clusters, [0, 49_920 - 10_000]);
        let audio_times: Vec<i64> = blocks
            .iter()
            .filter(|b| b.track == 2)
            .map(|b| b.time)
            .collect();
        // Chunk 31 is 9920..10240 ms: the frames from 10000 ms on.
        assert_eq!(
            audio_times[..12],
            [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220]
        );
        assert_eq!(audio_times.len(), 12 + 16);
        assert_eq!(audio_times[12], 39_920);
        assert!(blocks[0].keyframe && blocks[0].track == 1);
    }

    #[test]
    fn audio_alone_and_what_it_cannot_carry() {
        let audio = header(&TrackSpec::opus());
        let stream = WebmStream::new(None, Some(&audio)).unwrap();
        assert_eq!(stream.mime(), "audio/webm; codecs=\"opus\"");
        assert!(!stream.has_video() && stream.carries(Role::Audio));
        assert_eq!(strings(&read(&stream.header()), id::CODEC_ID), ["A_OPUS"]);

        let h264 = header(&TrackSpec::video());
        let error = WebmStream::new(Some(&h264), Some(&audio)).err().unwrap();
        assert_eq!(
            error.to_string(),
            "stream.webm cannot carry video in avc1.64001f (it takes VP8 or VP9)"
        );
        // AAC is left out beside VP8, and is nothing to carry alone.
        let aac = header(&TrackSpec::audio());
        let vp8 = header(&TrackSpec::vp8());
        let stream = WebmStream::new(Some(&vp8), Some(&aac)).unwrap();
        assert!(stream.carries(Role::Video) && !stream.carries(Role::Audio));
        let error = WebmStream::new(None, Some(&aac)).err().unwrap();
        assert_eq!(
            error.to_string(),
            "stream.webm needs VP8 or VP9 video or Opus audio and the channel has none"
        );
    }

    fn track<'a>(channel: &'a Channel, name: &str) -> &'a TrackWindow {
        channel
            .window
            .track(&channel.name, &TrackName::new(name).unwrap())
            .unwrap()
    }

    #[test]
    fn a_joining_viewer_starts_with_a_cluster_that_opens_on_a_keyframe() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::vp8(), 0..15);
        channel.feed("a64", &TrackSpec::opus(), 0..15);
        let (video, audio) = (track(&channel, "v720"), track(&channel, "a64"));
        let mut feed = Feed::from_window(StreamFormat::Webm, Some(video), Some(audio)).unwrap();
        assert_eq!(feed.mime(), "video/webm; codecs=\"vp8,opus\"");
        let (pieces, started) = feed.join();
        assert!(started);
        let elements = read(&pieces.concat());
        assert_eq!(elements[0].id, id::EBML);
        let (blocks, clusters) = read_blocks(&elements);
        // The feed's time zero is the newest keyframe's: the third segment, 3 parts in.
        assert_eq!(clusters, [0, 333, 666]);
        assert_eq!((blocks[0].track, blocks[0].time), (1, 0));
        assert!(blocks[0].keyframe);
        assert_eq!(
            blocks.iter().filter(|b| b.keyframe && b.track == 1).count(),
            1
        );

        // The next segment's first part is a join point; a viewer joining now starts there,
        // with the same header, its cluster opening on the keyframe.
        channel.feed("v720", &TrackSpec::vp8(), 15..19);
        let video = track(&channel, "v720");
        let newest = video.segments().next_back().unwrap();
        let mut joined = None;
        for segment in video.segments().filter(|s| s.number >= newest.number - 1) {
            for (index, part) in segment.parts.iter().enumerate() {
                if let Some(pushed) = feed.push(Role::Video, segment.number, index, part).unwrap()
                    && pushed.join_point
                {
                    joined = Some(pushed);
                }
            }
        }
        let joined = joined.expect("a join point");
        let first = read(&joined.pieces[0]);
        assert_eq!(first[0].id, id::CLUSTER);
        assert_eq!(first[1].id, id::TIMESTAMP);
        assert_eq!(uint(&first[1].data), 2000, "the next segment is 2 s on");
        let (blocks, _) = read_blocks(&first);
        assert!(blocks[0].keyframe && blocks[0].track == 1);
        let (pieces, _) = feed.join();
        assert_eq!(pieces[0], feed.joining().header.unwrap());
        assert_eq!(pieces[1], joined.pieces[0]);
    }
}
