//! `stream.ts`: one MPEG-TS program carrying a video track and its audio, written chunk by
//! chunk as they arrive. Unlike HLS-TS segments, this is one stream: continuity counters and
//! the PCR run on across chunks, and the PAT and PMT come again before every join point so
//! that a viewer can start there.

use bytes::Bytes;

use super::{ContinuousError, Role, StreamFormat};
use crate::cmaf::{Chunk, CodecConfig, TrackHeader};
use crate::mpegts::{
    AUDIO_PID, PAT_PID, PCR_LEAD, PMT_PID, Pes, TsError, VIDEO_PID, Writer, pat, pmt,
};

pub struct TsStream {
    video: Option<TrackHeader>,
    audio: Option<TrackHeader>,
    writer: Writer,
}

impl TsStream {
    /// H.264 video and AAC audio are carried; Opus audio is left out (MPEG-TS players rarely
    /// read it).
    pub fn new(
        video: Option<&TrackHeader>,
        audio: Option<&TrackHeader>,
    ) -> Result<TsStream, ContinuousError> {
        if let Some(video) = video
            && !matches!(video.config, CodecConfig::Avc { .. })
        {
            return Err(ContinuousError::Unsupported {
                format: StreamFormat::Ts,
                what: format!("video in {}", video.media.codec()),
            });
        }
        let audio = audio.filter(|audio| matches!(audio.config, CodecConfig::Aac { .. }));
        if video.is_none() && audio.is_none() {
            return Err(ContinuousError::NothingToCarry {
                format: StreamFormat::Ts,
                what: "H.264 video or AAC audio",
            });
        }
        Ok(TsStream {
            video: video.cloned(),
            audio: audio.cloned(),
            writer: Writer::default(),
        })
    }

    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    pub fn carries(&self, role: Role) -> bool {
        match role {
            Role::Video => self.video.is_some(),
            Role::Audio => self.audio.is_some(),
        }
    }

    fn pcr_pid(&self) -> u16 {
        if self.video.is_some() {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    /// The packets of one chunk, after the PAT and PMT when a viewer may start here.
    pub fn push(
        &mut self,
        role: Role,
        chunk: &Chunk,
        join_point: bool,
    ) -> Result<Bytes, ContinuousError> {
        let header = match role {
            Role::Video => self.video.as_ref(),
            Role::Audio => self.audio.as_ref(),
        }
        .ok_or_else(|| ContinuousError::Unsupported {
            format: StreamFormat::Ts,
            what: format!("a {role:?} track it was not opened with"),
        })?;
        let samples = super::samples(chunk, header, role)?;
        // Only H.264 video and AAC audio tracks are opened (`TsStream::new`).
        let packets = match role {
            Role::Video => Pes::video(&samples, &header.config, header.timescale),
            Role::Audio => Pes::audio(&samples, &header.config, header.timescale),
        }
        .map_err(|error| match error {
            TsError::BadNalUnits => ContinuousError::BadNalUnits,
            TsError::Unsupported(what) => ContinuousError::Unsupported {
                format: StreamFormat::Ts,
                what: what.to_owned(),
            },
        })?;
        let pcr_pid = self.pcr_pid();
        if join_point {
            self.writer.table(PAT_PID, &pat());
            self.writer.table(
                PMT_PID,
                &pmt(pcr_pid, self.video.is_some(), self.audio.is_some()),
            );
        }
        for pes in &packets {
            let pcr = (pes.pid == pcr_pid).then(|| pes.decode.saturating_sub(PCR_LEAD));
            self.writer.pes(pes, pcr, false);
        }
        Ok(self.writer.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpegts::PACKET;
    use crate::testing::{self, TrackSpec, parsed_chunk as chunk, parsed_header as header};

    fn pid(packet: &[u8]) -> u16 {
        u16::from(packet[1] & 0x1f) << 8 | u16::from(packet[2])
    }

    /// The PCR of a packet that carries one, in 90 kHz units.
    fn pcr(packet: &[u8]) -> Option<u64> {
        let has_field = packet[3] & 0x20 != 0 && packet[4] > 0;
        (has_field && packet[5] & 0x10 != 0).then(|| {
            let p = &packet[6..11];
            u64::from(p[0]) << 25
                | u64::from(p[1]) << 17
                | u64::from(p[2]) << 9
                | u64::from(p[3]) << 1
                | u64::from(p[4] >> 7)
        })
    }

    #[test]
    fn counters_and_clock_run_on_across_chunks() {
        let (video_spec, audio_spec) = (TrackSpec::video(), TrackSpec::audio());
        let (video, audio) = (header(&video_spec), header(&audio_spec));
        let mut stream = TsStream::new(Some(&video), Some(&audio)).unwrap();
        let mut out = Vec::new();
        for index in 0..12 {
            let first = index % 6 == 0;
            out.push(
                stream
                    .push(Role::Video, &chunk(&video_spec, &video, index), first)
                    .unwrap(),
            );
            out.push(
                stream
                    .push(Role::Audio, &chunk(&audio_spec, &audio, index), false)
                    .unwrap(),
            );
        }
        // The stream opens with its tables, and has them again at the second segment.
        assert_eq!(pid(&out[0][..PACKET]), PAT_PID);
        assert_eq!(pid(&out[0][PACKET..2 * PACKET]), PMT_PID);
        assert_eq!(pid(&out[12][..PACKET]), PAT_PID);
        assert_ne!(pid(&out[2][..PACKET]), PAT_PID);

        let all: Vec<u8> = out.concat();
        assert_eq!(all.len() % PACKET, 0);
        let mut counters = std::collections::HashMap::new();
        let mut last_pcr = None;
        let mut seen = std::collections::HashSet::new();
        for packet in all.chunks(PACKET) {
            assert_eq!(packet[0], 0x47);
            let pid = pid(packet);
            seen.insert(pid);
            let counter = packet[3] & 0x0f;
            if let Some(previous) = counters.insert(pid, counter) {
                assert_eq!(counter, (previous + 1) & 0x0f, "continuity of PID {pid:#x}");
            }
            if let Some(pcr) = pcr(packet) {
                assert_eq!(pid, VIDEO_PID);
                assert!(last_pcr.is_none_or(|last| pcr > last), "the PCR only grows");
                last_pcr = Some(pcr);
            }
        }
        assert_eq!(
            seen,
            [PAT_PID, PMT_PID, VIDEO_PID, AUDIO_PID]
                .into_iter()
                .collect()
        );
        // The clock is UTC: the last video frame (chunk 11, frame 9) minus the PCR lead, in
        // 90 kHz units wrapped at 33 bits.
        let last_frame = testing::DAY_START_SECONDS * 90_000 + (11 * 10 + 9) * 3000;
        assert_eq!(last_pcr, Some((last_frame - PCR_LEAD) & ((1 << 33) - 1)));
    }

    #[test]
    fn audio_alone_is_a_program_too_and_opus_is_left_out() {
        let audio_spec = TrackSpec::audio();
        let audio = header(&audio_spec);
        let mut stream = TsStream::new(None, Some(&audio)).unwrap();
        let out = stream
            .push(Role::Audio, &chunk(&audio_spec, &audio, 0), true)
            .unwrap();
        assert_eq!(pid(&out[..PACKET]), PAT_PID);
        assert!(
            out.chunks(PACKET)
                .any(|p| pid(p) == AUDIO_PID && pcr(p).is_some())
        );

        let opus = header(&TrackSpec::opus());
        assert!(matches!(
            TsStream::new(None, Some(&opus)),
            Err(ContinuousError::NothingToCarry { .. })
        ));
    }
}
