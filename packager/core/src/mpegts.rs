//! MPEG-2 transport stream segments (ISO/IEC 13818-1) for players that cannot read CMAF: the
//! same samples as the CMAF segment, H.264 in Annex B form and AAC in ADTS frames, one program
//! with a video and an audio stream. Each segment starts with its own PAT and PMT and a
//! keyframe, so any segment can be played on its own. The packet writer and the PES packets of
//! each codec are shared with the continuous MPEG-TS stream (`continuous::mpegts_stream`).

use bytes::Bytes;

use crate::adts::Adts;
use crate::cmaf::{CodecConfig, Sample};

pub(crate) const PACKET: usize = 188;
pub(crate) const PAT_PID: u16 = 0;
pub(crate) const PMT_PID: u16 = 0x1000;
pub(crate) const VIDEO_PID: u16 = 0x100;
pub(crate) const AUDIO_PID: u16 = 0x101;
const PROGRAM: u16 = 1;
/// ISO/IEC 13818-1 stream types: H.264, and AAC with ADTS framing.
const STREAM_TYPE_H264: u8 = 0x1b;
const STREAM_TYPE_AAC: u8 = 0x0f;
const STREAM_ID_VIDEO: u8 = 0xe0;
const STREAM_ID_AUDIO: u8 = 0xc0;
/// 90 kHz timestamps are 33 bits wide and wrap (every 26.5 hours).
const TIMESTAMP_MASK: u64 = (1 << 33) - 1;
/// The program clock runs this far (100 ms) ahead of the decode time of the video it carries.
pub(crate) const PCR_LEAD: u64 = 9_000;
/// AAC frames per audio PES packet (about 85 ms at 48 kHz).
const AUDIO_FRAMES_PER_PES: usize = 4;
/// H.264 access unit delimiter, primary_pic_type 7 (any slice type).
const ACCESS_UNIT_DELIMITER: [u8; 6] = [0, 0, 0, 1, 0x09, 0xf0];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    #[error("{0} cannot be carried in MPEG-TS here (H.264 video and AAC audio can)")]
    Unsupported(&'static str),
    #[error("an H.264 sample's NAL unit lengths run past its end")]
    BadNalUnits,
}

/// A track's samples for one segment, with what is needed to rewrite them.
pub struct Elementary<'a> {
    pub config: &'a CodecConfig,
    pub timescale: u32,
    pub samples: Vec<Sample>,
}

/// One PES packet waiting to be written, ordered by decode time.
pub(crate) struct Pes {
    pub pid: u16,
    pub stream_id: u8,
    /// 90 kHz, not yet wrapped.
    pub decode: u64,
    pub presentation: u64,
    pub payload: Vec<u8>,
    pub random_access: bool,
}

impl Pes {
    /// One PES packet per H.264 sample of a track in `timescale`, each an Annex B access unit.
    pub(crate) fn video(
        samples: &[Sample],
        config: &CodecConfig,
        timescale: u32,
    ) -> Result<Vec<Pes>, TsError> {
        let CodecConfig::Avc {
            length_size,
            parameter_sets,
        } = config
        else {
            return Err(TsError::Unsupported("this video codec"));
        };
        samples
            .iter()
            .map(|sample| {
                let presentation = sample
                    .decode
                    .saturating_add_signed(sample.composition_offset);
                Ok(Pes {
                    pid: VIDEO_PID,
                    stream_id: STREAM_ID_VIDEO,
                    decode: to_90khz(sample.decode, timescale),
                    presentation: to_90khz(presentation, timescale),
                    payload: annex_b(sample, *length_size, parameter_sets)?,
                    random_access: sample.sync,
                })
            })
            .collect()
    }

    /// The AAC frames of a track in `timescale`, [`AUDIO_FRAMES_PER_PES`] to a PES packet,
    /// each frame behind its ADTS header.
    pub(crate) fn audio(
        samples: &[Sample],
        config: &CodecConfig,
        timescale: u32,
    ) -> Result<Vec<Pes>, TsError> {
        let adts = Adts::of(config).ok_or(TsError::Unsupported(match config {
            CodecConfig::Opus(_) => "Opus",
            _ => "this audio codec",
        }))?;
        Ok(samples
            .chunks(AUDIO_FRAMES_PER_PES)
            .map(|frames| {
                let time = to_90khz(frames[0].decode, timescale);
                Pes {
                    pid: AUDIO_PID,
                    stream_id: STREAM_ID_AUDIO,
                    decode: time,
                    presentation: time,
                    payload: adts.frames(frames),
                    random_access: true,
                }
            })
            .collect())
    }
}

/// Writes segment `msn` of one program: the video (if any) and the audio (if any), interleaved
/// by decode time.
pub fn segment(
    msn: u64,
    video: Option<Elementary>,
    audio: Option<Elementary>,
) -> Result<Bytes, TsError> {
    let mut packets = Vec::new();
    if let Some(video) = &video {
        packets.extend(Pes::video(&video.samples, video.config, video.timescale)?);
    }
    if let Some(audio) = &audio {
        packets.extend(Pes::audio(&audio.samples, audio.config, audio.timescale)?);
    }
    // Stable: at equal times the video (pushed first) goes first.
    packets.sort_by_key(|pes| pes.decode);

    let pcr_pid = if video.is_some() {
        VIDEO_PID
    } else {
        AUDIO_PID
    };
    let mut writer = Writer::default();
    writer.section(PAT_PID, &pat(), msn);
    writer.section(
        PMT_PID,
        &pmt(pcr_pid, video.is_some(), audio.is_some()),
        msn,
    );
    for (index, pes) in packets.iter().enumerate() {
        let pcr = (pes.pid == pcr_pid).then(|| pes.decode.saturating_sub(PCR_LEAD));
        let last_of_stream = packets[index + 1..]
            .iter()
            .all(|later| later.pid != pes.pid);
        writer.pes(pes, pcr, last_of_stream);
    }
    Ok(Bytes::from(writer.out))
}

fn to_90khz(ticks: u64, timescale: u32) -> u64 {
    (u128::from(ticks) * 90_000 / u128::from(timescale.max(1))) as u64
}

/// An H.264 sample (length-prefixed NAL units) as an Annex B access unit: a delimiter, the
/// parameter sets before a keyframe, then each NAL unit after a start code.
fn annex_b(sample: &Sample, length_size: u8, parameter_sets: &[Bytes]) -> Result<Vec<u8>, TsError> {
    let length_size = usize::from(length_size.clamp(1, 4));
    let mut out = Vec::with_capacity(sample.data.len() + 64);
    out.extend_from_slice(&ACCESS_UNIT_DELIMITER);
    let mut units = Vec::new();
    let mut rest = &sample.data[..];
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_at_checked(length_size)
            .ok_or(TsError::BadNalUnits)?;
        let length = length
            .iter()
            .fold(0usize, |sum, byte| (sum << 8) | usize::from(*byte));
        let (unit, tail) = tail.split_at_checked(length).ok_or(TsError::BadNalUnits)?;
        units.push(unit);
        rest = tail;
    }
    let nal_type = |unit: &[u8]| unit.first().map(|byte| byte & 0x1f);
    let has_parameter_sets = units.iter().any(|unit| nal_type(unit) == Some(7));
    if sample.sync && !has_parameter_sets {
        for set in parameter_sets {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(set);
        }
    }
    for unit in units.into_iter().filter(|unit| nal_type(unit) != Some(9)) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(unit);
    }
    Ok(out)
}

pub(crate) fn pat() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROGRAM.to_be_bytes());
    body.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
    psi_section(0x00, 1, &body)
}

pub(crate) fn pmt(pcr_pid: u16, video: bool, audio: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(0xe000 | pcr_pid).to_be_bytes());
    body.extend_from_slice(&0xf000u16.to_be_bytes()); // no program descriptors
    let streams = [
        (video, STREAM_TYPE_H264, VIDEO_PID),
        (audio, STREAM_TYPE_AAC, AUDIO_PID),
    ];
    for (_, stream_type, pid) in streams.into_iter().filter(|(present, ..)| *present) {
        body.push(stream_type);
        body.extend_from_slice(&(0xe000 | pid).to_be_bytes());
        body.extend_from_slice(&0xf000u16.to_be_bytes()); // no stream descriptors
    }
    psi_section(0x02, PROGRAM, &body)
}

/// A long-form PSI section: header, `body`, CRC.
fn psi_section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let length = 5 + body.len() + 4;
    let mut section = vec![table_id, 0xb0 | (length >> 8) as u8, length as u8];
    section.extend_from_slice(&id.to_be_bytes());
    section.extend_from_slice(&[0xc1, 0x00, 0x00]); // version 0, current, section 0 of 0
    section.extend_from_slice(body);
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    section
}

/// CRC-32/MPEG-2: polynomial 0x04c11db7, initial value all ones, no reflection, no final xor.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for byte in data {
        crc ^= u32::from(*byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Writes 188-byte packets, keeping each PID's continuity counter.
#[derive(Default)]
pub(crate) struct Writer {
    out: Vec<u8>,
    continuity: std::collections::HashMap<u16, u8>,
}

impl Writer {
    /// Writes a table in one packet. Each segment has one PAT and one PMT, so the continuity
    /// counter of both is the segment's number (mod 16): consecutive segments read on.
    fn section(&mut self, pid: u16, section: &[u8], msn: u64) {
        self.continuity.insert(pid, (msn & 0x0f) as u8);
        let mut payload = vec![0]; // pointer_field
        payload.extend_from_slice(section);
        self.packet(pid, true, None, false, &payload);
    }

    /// Writes a table in one packet, its continuity counter going on from the last one (a
    /// continuous stream repeats its tables).
    pub(crate) fn table(&mut self, pid: u16, section: &[u8]) {
        let mut payload = vec![0]; // pointer_field
        payload.extend_from_slice(section);
        self.packet(pid, true, None, false, &payload);
    }

    /// The packets written since the last call.
    pub(crate) fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.out))
    }

    /// Writes a PES packet; `end_cycle` pads the stream's packet count to a multiple of 16.
    pub(crate) fn pes(&mut self, pes: &Pes, pcr: Option<u64>, end_cycle: bool) {
        let with_decode = pes.decode != pes.presentation;
        let mut header = vec![0, 0, 1, pes.stream_id];
        let header_data = if with_decode { 10 } else { 5 };
        let length = 3 + header_data + pes.payload.len();
        // Video PES packets may be longer than the 16-bit length allows: 0 means unbounded.
        let length = if pes.pid == VIDEO_PID || length > 0xffff {
            0
        } else {
            length as u16
        };
        header.extend_from_slice(&length.to_be_bytes());
        header.push(0x80); // marker bits
        header.push(if with_decode { 0xc0 } else { 0x80 });
        header.push(header_data as u8);
        header.extend_from_slice(&timestamp(
            if with_decode { 0x3 } else { 0x2 },
            pes.presentation,
        ));
        if with_decode {
            header.extend_from_slice(&timestamp(0x1, pes.decode));
        }
        let mut data = header;
        data.extend_from_slice(&pes.payload);

        let mut packets = packets_for(data.len(), pcr.is_some(), pes.random_access);
        if end_cycle {
            // Spread the last PES packet of the stream over enough packets that the continuity
            // counter ends at 15: the next segment starts at 0, so consecutive segments read
            // as one stream with no continuity error.
            let next = self.continuity.get(&pes.pid).copied().unwrap_or(0);
            let short = (16 - (usize::from(next) + packets) % 16) % 16;
            if data.len() >= packets + short {
                packets += short;
            }
        }
        let mut rest = &data[..];
        for index in 0..packets {
            let first = index == 0;
            // Leave at least a byte for each packet still to come.
            let most = rest.len() - (packets - index - 1);
            let used = self.packet(
                pes.pid,
                first,
                if first { pcr } else { None },
                first && pes.random_access,
                &rest[..most],
            );
            rest = &rest[used..];
        }
        debug_assert!(rest.is_empty());
    }

    /// Writes one packet with as much of `data` as fits; returns how much that was.
    fn packet(
        &mut self,
        pid: u16,
        unit_start: bool,
        pcr: Option<u64>,
        random_access: bool,
        data: &[u8],
    ) -> usize {
        let counter = self.continuity.entry(pid).or_insert(0);
        let continuity = *counter;
        *counter = (*counter + 1) & 0x0f;

        // The adaptation field's bytes after its length byte, when there is one.
        let mut field: Option<Vec<u8>> = None;
        if pcr.is_some() || random_access {
            let mut flags =
                vec![if random_access { 0x40 } else { 0 } | if pcr.is_some() { 0x10 } else { 0 }];
            if let Some(pcr) = pcr {
                let base = pcr & TIMESTAMP_MASK;
                flags.extend_from_slice(&[
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    ((base & 1) << 7) as u8 | 0x7e, // reserved bits, extension 0
                    0,
                ]);
            }
            field = Some(flags);
        }
        let room = PACKET - 4 - field.as_ref().map_or(0, |f| 1 + f.len());
        let used = data.len().min(room);
        let is_psi = pid == PAT_PID || pid == PMT_PID;
        if used < room && !is_psi {
            // A short PES tail is padded with stuffing in the adaptation field (PSI is padded
            // with 0xff after the section instead).
            let stuffing = room - used;
            match &mut field {
                Some(field) => field.resize(field.len() + stuffing, 0xff),
                // One byte of room holds just the field's length (0); more hold flags too.
                None if stuffing == 1 => field = Some(Vec::new()),
                None => {
                    let mut padding = vec![0];
                    padding.resize(stuffing - 1, 0xff);
                    field = Some(padding);
                }
            }
        }

        let start = self.out.len();
        self.out.push(0x47);
        self.out
            .push(if unit_start { 0x40 } else { 0 } | ((pid >> 8) as u8 & 0x1f));
        self.out.push(pid as u8);
        let control = if field.is_some() { 0x30 } else { 0x10 };
        self.out.push(control | continuity);
        if let Some(field) = field {
            self.out.push(field.len() as u8);
            self.out.extend_from_slice(&field);
        }
        self.out.extend_from_slice(&data[..used]);
        self.out.resize(start + PACKET, 0xff);
        used
    }
}

/// How many packets `length` bytes of PES take when the first packet's adaptation field has a
/// PCR and/or the random access flag.
fn packets_for(length: usize, pcr: bool, random_access: bool) -> usize {
    let field = match (pcr, random_access) {
        (false, false) => 0,
        (true, _) => 2 + 6,
        (false, true) => 2,
    };
    let first = PACKET - 4 - field;
    1 + length.saturating_sub(first).div_ceil(PACKET - 4)
}

/// A PES timestamp: 4-bit prefix, then 33 bits split by marker bits.
fn timestamp(prefix: u8, time: u64) -> [u8; 5] {
    let time = time & TIMESTAMP_MASK;
    [
        (prefix << 4) | (((time >> 30) as u8 & 0x07) << 1) | 1,
        (time >> 22) as u8,
        (((time >> 15) as u8) << 1) | 1,
        (time >> 7) as u8,
        ((time as u8) << 1) | 1,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video_sample(decode: u64, sync: bool, size: usize) -> Sample {
        let mut data = ((size - 4) as u32).to_be_bytes().to_vec();
        data.push(if sync { 0x65 } else { 0x41 });
        data.resize(size, 0xab);
        Sample {
            decode,
            composition_offset: 0,
            duration: 100,
            sync,
            data: Bytes::from(data),
        }
    }

    /// Splits a transport stream into its packets, checking sync bytes and continuity.
    fn packets(ts: &[u8]) -> Vec<(u16, bool, &[u8])> {
        assert_eq!(ts.len() % PACKET, 0);
        let mut counters = std::collections::HashMap::new();
        ts.chunks(PACKET)
            .map(|packet| {
                assert_eq!(packet[0], 0x47);
                let pid = u16::from(packet[1] & 0x1f) << 8 | u16::from(packet[2]);
                let counter = packet[3] & 0x0f;
                if let Some(previous) = counters.insert(pid, counter) {
                    assert_eq!(counter, (previous + 1) & 0x0f, "continuity of PID {pid}");
                }
                let payload = match packet[3] & 0x30 {
                    0x10 => &packet[4..],
                    0x30 => &packet[5 + usize::from(packet[4])..],
                    other => panic!("adaptation field control {other:#x}"),
                };
                (pid, packet[1] & 0x40 != 0, payload)
            })
            .collect()
    }

    #[test]
    fn the_crc_is_mpeg2s() {
        // The check value of CRC-32/MPEG-2 (the CRC of "123456789").
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn a_segment_holds_tables_then_both_streams_in_decode_order() {
        let video_config = CodecConfig::Avc {
            length_size: 4,
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 1, 2]),
                Bytes::from_static(&[0x68, 3]),
            ],
        };
        let audio_config = CodecConfig::Aac {
            object_type: 2,
            frequency_index: 3,
            channel_configuration: 2,
        };
        let video = Elementary {
            config: &video_config,
            timescale: 3000,
            samples: (0..30)
                .map(|i| video_sample(6000 + i * 100, i == 0, if i == 0 { 700 } else { 90 }))
                .collect(),
        };
        let audio = Elementary {
            config: &audio_config,
            timescale: 48_000,
            samples: (0..16)
                .map(|i| Sample {
                    decode: 96_000 + i * 1024,
                    composition_offset: 0,
                    duration: 1024,
                    sync: true,
                    data: Bytes::from(vec![0x21; 300]),
                })
                .collect(),
        };
        let ts = segment(5, Some(video), Some(audio)).unwrap();
        // Every stream's continuity counter ends the segment at 15, and the tables' counters
        // are the segment's number: the next segment starts where this one ends.
        for pid in [VIDEO_PID, AUDIO_PID] {
            let last = ts
                .chunks(PACKET)
                .rfind(|p| (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) == pid)
                .unwrap();
            assert_eq!(last[3] & 0x0f, 15, "PID {pid:#x}");
        }
        assert_eq!(ts[3] & 0x0f, 5);
        let packets = packets(&ts);
        assert_eq!(packets[0].0, PAT_PID);
        assert_eq!(packets[1].0, PMT_PID);
        let pmt = packets[1].2;
        // pointer, table id 2, then the two streams' types.
        assert_eq!(pmt[1], 0x02);
        assert!(pmt.windows(3).any(|w| w == [STREAM_TYPE_H264, 0xe1, 0x00]));
        assert!(pmt.windows(3).any(|w| w == [STREAM_TYPE_AAC, 0xe1, 0x01]));

        // Reassemble the PES packets of each stream.
        let mut video_pes: Vec<Vec<u8>> = Vec::new();
        let mut audio_pes: Vec<Vec<u8>> = Vec::new();
        for (pid, start, payload) in &packets[2..] {
            let list = match *pid {
                VIDEO_PID => &mut video_pes,
                AUDIO_PID => &mut audio_pes,
                other => panic!("PID {other}"),
            };
            if *start {
                list.push(Vec::new());
            }
            list.last_mut().unwrap().extend_from_slice(payload);
        }
        assert_eq!(video_pes.len(), 30);
        assert_eq!(audio_pes.len(), 4);
        let first = &video_pes[0];
        assert_eq!(&first[..4], &[0, 0, 1, STREAM_ID_VIDEO]);
        let es = &first[9 + usize::from(first[8])..];
        // Delimiter, SPS, PPS, then the slice.
        assert_eq!(&es[..6], &ACCESS_UNIT_DELIMITER);
        assert_eq!(&es[6..13], &[0, 0, 0, 1, 0x67, 1, 2]);
        assert_eq!(&es[13..19], &[0, 0, 0, 1, 0x68, 3]);
        assert_eq!(&es[19..24], &[0, 0, 0, 1, 0x65]);
        assert_eq!(es.len(), 24 + 695);
        // PTS of the first video frame: 6000 ticks of 3000 Hz = 2 s = 180000 at 90 kHz.
        let pts = |pes: &[u8]| {
            let t = &pes[9..14];
            (u64::from(t[0] >> 1) & 7) << 30
                | u64::from(t[1]) << 22
                | u64::from(t[2] >> 1) << 15
                | u64::from(t[3]) << 7
                | u64::from(t[4] >> 1)
        };
        assert_eq!(pts(first), 180_000);
        assert_eq!(pts(&audio_pes[0]), 180_000);
        // Audio: four ADTS frames per PES, each 307 bytes long.
        let audio_es = &audio_pes[0][14..];
        assert_eq!(audio_es.len(), 4 * 307);
        assert_eq!(&audio_es[..2], &[0xff, 0xf1]);
        let frame_length = (usize::from(audio_es[3] & 3) << 11)
            | (usize::from(audio_es[4]) << 3)
            | usize::from(audio_es[5] >> 5);
        assert_eq!(frame_length, 307);
        // The audio PES (at 2 s) goes between the first and second video frames.
        let order: Vec<u16> = packets[2..]
            .iter()
            .filter(|(_, start, _)| *start)
            .map(|(pid, ..)| *pid)
            .take(3)
            .collect();
        assert_eq!(order, [VIDEO_PID, AUDIO_PID, VIDEO_PID]);
    }

    #[test]
    fn opus_is_refused() {
        let opus = crate::testing::header(&crate::testing::TrackSpec::opus());
        let opus = crate::cmaf::parse_header(Bytes::from(opus)).unwrap();
        let audio = Elementary {
            config: &opus.config,
            timescale: 48_000,
            samples: Vec::new(),
        };
        assert_eq!(
            segment(0, None, Some(audio)),
            Err(TsError::Unsupported("Opus"))
        );
    }
}
