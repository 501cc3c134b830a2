//! HLS for players that predate CMAF and low latency (`/live/{channel}/ts/…`): version 3
//! playlists of whole MPEG-TS segments, each video track muxed with the channel's audio, built
//! from the same window and numbering as the LL-HLS playlists.

use std::fmt;

use crate::hls::{
    MasterPlaylist, MediaPlaylist, SegmentLine, write_segment_start, write_sequences,
};
use crate::window::{TrackWindow, WindowConfig};

/// The media playlist of one variant: whole segments only, no parts or hints.
#[derive(Clone, Debug, PartialEq)]
pub struct TsMediaPlaylist {
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub segments: Vec<SegmentLine>,
}

impl TsMediaPlaylist {
    /// The playlist of `track` (video, or the audio of a radio channel), listing a segment
    /// once it is whole in `track` and, when the channel has audio to mux in, whole in `audio`
    /// too (or missing there for good, which a later audio segment shows).
    pub fn build(
        track: &TrackWindow,
        audio: Option<&TrackWindow>,
        config: &WindowConfig,
    ) -> Option<TsMediaPlaylist> {
        let playlist = MediaPlaylist::build(track, config, Vec::new(), false)?;
        let audio_done = |msn: u64| {
            audio.is_none_or(|audio| match audio.segment(msn) {
                Some(segment) => segment.complete,
                None => audio.newest().is_some_and(|(newest, _)| newest > msn),
            })
        };
        let segments: Vec<SegmentLine> = playlist
            .segments
            .into_iter()
            .filter(|segment| segment.gap || (segment.complete && audio_done(segment.msn)))
            .map(|segment| SegmentLine {
                parts: Vec::new(),
                ..segment
            })
            .collect();
        segments.iter().any(|segment| !segment.gap).then_some(())?;
        Some(TsMediaPlaylist {
            target_duration: playlist.target_duration,
            media_sequence: playlist.media_sequence,
            discontinuity_sequence: playlist.discontinuity_sequence,
            segments,
        })
    }
}

impl fmt::Display for TsMediaPlaylist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "#EXTM3U")?;
        writeln!(f, "#EXT-X-VERSION:3")?;
        writeln!(f, "#EXT-X-TARGETDURATION:{}", self.target_duration)?;
        write_sequences(f, self.media_sequence, self.discontinuity_sequence)?;
        for segment in &self.segments {
            write_segment_start(f, segment)?;
            // Players that do not know EXT-X-GAP ask for the segment, get a 404 and go on.
            if segment.gap {
                writeln!(f, "#EXT-X-GAP")?;
            }
            writeln!(f, "#EXTINF:{:.5},", segment.duration)?;
            writeln!(f, "{}.ts", segment.msn)?;
        }
        Ok(())
    }
}

/// The multivariant playlist of the TS variants: the audio is inside every video variant's
/// segments, so there is no rendition group.
#[derive(Clone, Debug, PartialEq)]
pub struct TsMasterPlaylist(pub MasterPlaylist);

impl fmt::Display for TsMasterPlaylist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let MasterPlaylist { audio, variants } = &self.0;
        writeln!(f, "#EXTM3U")?;
        writeln!(f, "#EXT-X-VERSION:3")?;
        writeln!(f, "#EXT-X-INDEPENDENT-SEGMENTS")?;
        // MPEG-TS adds its packet and PES headers: about 5 % over the samples.
        let with_overhead = |bits: u64| bits + bits / 20;
        let (audio_codec, audio_peak, audio_average) = match audio {
            Some(audio) => (
                format!(",{}", audio.codec),
                audio.peak_bandwidth,
                audio.average_bandwidth,
            ),
            None => (String::new(), 0, 0),
        };
        for variant in variants {
            write!(
                f,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}{audio_codec}\",RESOLUTION={}x{}",
                with_overhead(variant.peak_bandwidth + audio_peak),
                with_overhead(variant.average_bandwidth + audio_average),
                variant.codec,
                variant.width,
                variant.height,
            )?;
            if variant.frame_rate > 0.0 {
                write!(f, ",FRAME-RATE={:.3}", variant.frame_rate)?;
            }
            writeln!(f, "\n{}/media.m3u8", variant.track)?;
        }
        if variants.is_empty()
            && let Some(audio) = audio
        {
            writeln!(
                f,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"\n{}/media.m3u8",
                with_overhead(audio.peak_bandwidth),
                with_overhead(audio.average_bandwidth),
                audio.codec,
                audio.track
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Channel, TrackSpec};
    use estuary_proto::url::TrackName;
    use m3u8_rs::Playlist;

    #[test]
    fn lists_whole_segments_of_video_and_audio() {
        let mut channel = Channel::new(60);
        // Video has three whole segments and a part; audio two whole segments and a part.
        channel.feed("v720", &TrackSpec::video(), 0..19);
        channel.feed("a128", &TrackSpec::audio(), 0..13);
        let track = |name: &str| {
            channel
                .window
                .track(&channel.name, &TrackName::new(name).unwrap())
                .unwrap()
        };
        let playlist =
            TsMediaPlaylist::build(track("v720"), Some(track("a128")), &channel.window.config())
                .unwrap();
        let text = playlist.to_string();
        let Ok(Playlist::MediaPlaylist(parsed)) = m3u8_rs::parse_playlist_res(text.as_bytes())
        else {
            panic!("not a media playlist:\n{text}")
        };
        assert_eq!(parsed.version, Some(3));
        let uris: Vec<_> = parsed.segments.iter().map(|s| s.uri.clone()).collect();
        let first = crate::testing::DAY_START_SECONDS / 2;
        assert_eq!(uris, [format!("{first}.ts"), format!("{}.ts", first + 1)]);
        assert!(!text.contains("EXT-X-PART"), "{text}");

        let master = TsMasterPlaylist(MasterPlaylist::build(channel.window.tracks(&channel.name)))
            .to_string();
        let Ok(Playlist::MasterPlaylist(parsed)) = m3u8_rs::parse_playlist_res(master.as_bytes())
        else {
            panic!("not a master playlist:\n{master}")
        };
        assert_eq!(parsed.variants.len(), 1);
        assert_eq!(parsed.variants[0].uri, "v720/media.m3u8");
        assert_eq!(
            parsed.variants[0].codecs.as_deref(),
            Some("avc1.64001f,mp4a.40.2")
        );
        assert!(parsed.variants[0].audio.is_none());
        assert!(parsed.alternatives.is_empty());
    }
}
