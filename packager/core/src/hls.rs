//! LL-HLS playlists (RFC 8216bis), written by the packager itself: a typed model of each
//! playlist, built from the window, and rendered in one place. m3u8-rs, which reads them back in
//! the tests, cannot write the low-latency tags.

use std::fmt::{self, Write as _};

use estuary_proto::url::TrackName;
use estuary_proto::utc::UtcTime;

use crate::cmaf::Media;
use crate::window::{Segment, TrackWindow, WindowConfig};

/// Parts are listed for this many of the newest segments (RFC 8216bis asks for at least the
/// last three target durations).
const SEGMENTS_WITH_PARTS: usize = 4;

/// One line of a media playlist's segment list.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentLine {
    pub msn: u64,
    /// Seconds.
    pub duration: f64,
    pub program_date_time: String,
    pub discontinuity: bool,
    /// A segment that never came: listed so numbering and time continue, marked EXT-X-GAP.
    pub gap: bool,
    /// Listed for the newest segments only.
    pub parts: Vec<PartLine>,
    /// The newest segment may still be growing: it is listed by its parts only.
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PartLine {
    pub index: usize,
    pub duration: f64,
    pub independent: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RenditionReport {
    pub track: TrackName,
    pub last_msn: u64,
    pub last_part: usize,
}

/// A media playlist, ready to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaPlaylist {
    pub target_duration: u64,
    pub part_target: f64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    /// Segments left out by a delta update (`_HLS_skip=YES`).
    pub skipped: u64,
    pub segments: Vec<SegmentLine>,
    /// The part a client should ask for next: `(msn, part)`.
    pub preload_hint: (u64, usize),
    pub rendition_reports: Vec<RenditionReport>,
}

impl MediaPlaylist {
    /// The playlist of one track's window; `skip` writes a delta update.
    pub fn build(
        window: &TrackWindow,
        config: &WindowConfig,
        reports: Vec<RenditionReport>,
        skip: bool,
    ) -> Option<MediaPlaylist> {
        let timescale = f64::from(window.header.timescale);
        let segment_seconds = config.segment.as_secs_f64();
        let target_duration = segment_seconds.ceil() as u64;
        let part_target = round_up(window.longest_part() as f64 / timescale, 5);
        let (newest_msn, _) = window.newest()?;
        let first_msn = window.segments().next()?.number;

        let mut segments = Vec::new();
        let mut discontinuity_sequence = window.evicted_discontinuities();
        let with_parts_from = newest_msn.saturating_sub(SEGMENTS_WITH_PARTS as u64 - 1);
        for msn in first_msn..=newest_msn {
            let line = match window.segment(msn) {
                Some(segment) => SegmentLine {
                    msn,
                    duration: segment.duration() as f64 / timescale,
                    program_date_time: date_time(segment.start(), window.header.timescale),
                    discontinuity: segment.discontinuity && msn != first_msn,
                    gap: false,
                    parts: if msn >= with_parts_from {
                        part_lines(segment, timescale)
                    } else {
                        Vec::new()
                    },
                    complete: segment.complete,
                },
                None => SegmentLine {
                    msn,
                    duration: segment_seconds,
                    program_date_time: date_time_of_msn(msn, segment_seconds),
                    discontinuity: false,
                    gap: true,
                    parts: Vec::new(),
                    complete: true,
                },
            };
            if msn == first_msn && window.segment(msn).is_some_and(|s| s.discontinuity) {
                // The first segment's own discontinuity is counted, not written.
                discontinuity_sequence += 1;
            }
            segments.push(line);
        }

        let newest = window.segment(newest_msn)?;
        let preload_hint = if newest.complete
            || newest.duration() as f64 / timescale + part_target / 2.0 >= segment_seconds
        {
            (newest_msn + 1, 0)
        } else {
            (newest_msn, newest.parts.len())
        };

        let mut playlist = MediaPlaylist {
            target_duration,
            part_target,
            media_sequence: first_msn,
            discontinuity_sequence,
            skipped: 0,
            segments,
            preload_hint,
            rendition_reports: reports,
        };
        if skip {
            playlist.skip_old_segments();
        }
        Some(playlist)
    }

    /// CAN-SKIP-UNTIL: six target durations, the least RFC 8216bis allows.
    pub fn skip_until(&self) -> f64 {
        6.0 * self.target_duration as f64
    }

    /// PART-HOLD-BACK: three part targets (at least two are required).
    pub fn part_hold_back(&self) -> f64 {
        round_up(3.0 * self.part_target, 3)
    }

    /// Leaves out the segments older than CAN-SKIP-UNTIL from the end (stopping at a
    /// discontinuity, which a client must see).
    fn skip_old_segments(&mut self) {
        let mut from_end = 0.0;
        let mut keep = 0;
        for segment in self.segments.iter().rev() {
            from_end += segment.duration;
            if from_end > self.skip_until() {
                break;
            }
            keep += 1;
        }
        let mut skip = self.segments.len() - keep;
        if let Some(first_discontinuity) =
            self.segments[..skip].iter().position(|s| s.discontinuity)
        {
            skip = first_discontinuity;
        }
        self.skipped = skip as u64;
        self.segments.drain(..skip);
    }

    /// The newest `(msn, part)` of the playlist, for rendition reports and blocking reloads.
    pub fn last_part(&self) -> Option<(u64, usize)> {
        let newest = self.segments.last()?;
        Some((newest.msn, newest.parts.len().checked_sub(1)?))
    }
}

fn part_lines(segment: &Segment, timescale: f64) -> Vec<PartLine> {
    segment
        .parts
        .iter()
        .enumerate()
        .map(|(index, part)| PartLine {
            index,
            duration: part.duration as f64 / timescale,
            independent: part.independent,
        })
        .collect()
}

fn date_time(ticks: u64, timescale: u32) -> String {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(timescale);
    UtcTime::from_unix_nanos(nanos as u64).iso8601()
}

fn date_time_of_msn(msn: u64, segment_seconds: f64) -> String {
    UtcTime::from_unix_nanos((msn as f64 * segment_seconds * 1e9) as u64).iso8601()
}

fn round_up(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).ceil() / scale
}

/// The sequence numbers every media playlist starts with: the first segment's, and the count
/// of discontinuities before it when there were any.
pub(crate) fn write_sequences(
    f: &mut fmt::Formatter<'_>,
    media_sequence: u64,
    discontinuity_sequence: u64,
) -> fmt::Result {
    writeln!(f, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}")?;
    if discontinuity_sequence > 0 {
        writeln!(f, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")?;
    }
    Ok(())
}

/// What precedes each segment in a media playlist: a discontinuity before it, and the wall
/// clock time of its first sample.
pub(crate) fn write_segment_start(
    f: &mut fmt::Formatter<'_>,
    segment: &SegmentLine,
) -> fmt::Result {
    if segment.discontinuity {
        writeln!(f, "#EXT-X-DISCONTINUITY")?;
    }
    writeln!(f, "#EXT-X-PROGRAM-DATE-TIME:{}", segment.program_date_time)
}

impl fmt::Display for MediaPlaylist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "#EXTM3U")?;
        // Version 9: EXT-X-SKIP (delta updates); it also covers PART, GAP and SERVER-CONTROL.
        writeln!(f, "#EXT-X-VERSION:9")?;
        writeln!(f, "#EXT-X-TARGETDURATION:{}", self.target_duration)?;
        writeln!(
            f,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={:.1}",
            self.part_hold_back(),
            self.skip_until()
        )?;
        writeln!(f, "#EXT-X-PART-INF:PART-TARGET={:.5}", self.part_target)?;
        write_sequences(f, self.media_sequence, self.discontinuity_sequence)?;
        writeln!(f, "#EXT-X-MAP:URI=\"init.mp4\"")?;
        if self.skipped > 0 {
            writeln!(f, "#EXT-X-SKIP:SKIPPED-SEGMENTS={}", self.skipped)?;
        }
        for segment in &self.segments {
            write_segment_start(f, segment)?;
            for part in &segment.parts {
                write!(
                    f,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}.{}.m4s\"",
                    part.duration, segment.msn, part.index
                )?;
                if part.independent {
                    f.write_str(",INDEPENDENT=YES")?;
                }
                f.write_char('\n')?;
            }
            if segment.complete {
                if segment.gap {
                    writeln!(f, "#EXT-X-GAP")?;
                }
                writeln!(f, "#EXTINF:{:.5},", segment.duration)?;
                writeln!(f, "{}.m4s", segment.msn)?;
            }
        }
        let (msn, part) = self.preload_hint;
        writeln!(f, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{msn}.{part}.m4s\"")?;
        for report in &self.rendition_reports {
            writeln!(
                f,
                "#EXT-X-RENDITION-REPORT:URI=\"../{}/media.m3u8\",LAST-MSN={},LAST-PART={}",
                report.track, report.last_msn, report.last_part
            )?;
        }
        Ok(())
    }
}

/// The multivariant playlist of a channel: one variant per video track, the audio track as a
/// rendition group.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterPlaylist {
    pub audio: Option<AudioRendition>,
    pub variants: Vec<Variant>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AudioRendition {
    pub track: TrackName,
    pub codec: String,
    pub peak_bandwidth: u64,
    pub average_bandwidth: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub track: TrackName,
    pub codec: String,
    pub width: u16,
    pub height: u16,
    pub frame_rate: f64,
    pub peak_bandwidth: u64,
    pub average_bandwidth: u64,
}

impl MasterPlaylist {
    pub fn build<'a>(tracks: impl IntoIterator<Item = (&'a TrackName, &'a TrackWindow)>) -> Self {
        let mut audio = None;
        let mut variants = Vec::new();
        // MP3 tracks are for stream.mp3 alone.
        for (name, window) in tracks.into_iter().filter(|(_, t)| !t.header.is_mp3()) {
            let (peak_bandwidth, average_bandwidth) = window.bandwidth();
            match &window.header.media {
                Media::Video {
                    codec,
                    width,
                    height,
                } => variants.push(Variant {
                    track: name.clone(),
                    codec: codec.clone(),
                    width: *width,
                    height: *height,
                    frame_rate: window.frame_rate(),
                    peak_bandwidth,
                    average_bandwidth,
                }),
                // One audio track per channel is what the ingest sends; the first one is used.
                Media::Audio { codec, .. } if audio.is_none() => {
                    audio = Some(AudioRendition {
                        track: name.clone(),
                        codec: codec.clone(),
                        peak_bandwidth,
                        average_bandwidth,
                    });
                }
                Media::Audio { .. } => {}
            }
        }
        variants.sort_by_key(|variant| std::cmp::Reverse(variant.height));
        MasterPlaylist { audio, variants }
    }
}

impl fmt::Display for MasterPlaylist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "#EXTM3U")?;
        writeln!(f, "#EXT-X-VERSION:9")?;
        writeln!(f, "#EXT-X-INDEPENDENT-SEGMENTS")?;
        if let Some(audio) = &self.audio {
            writeln!(
                f,
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{0}\",DEFAULT=YES,AUTOSELECT=YES,URI=\"{0}/media.m3u8\"",
                audio.track
            )?;
        }
        for variant in &self.variants {
            let (audio_codec, audio_peak, audio_average) = match &self.audio {
                Some(audio) => (
                    format!(",{}", audio.codec),
                    audio.peak_bandwidth,
                    audio.average_bandwidth,
                ),
                None => (String::new(), 0, 0),
            };
            write!(
                f,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}{audio_codec}\",RESOLUTION={}x{}",
                variant.peak_bandwidth + audio_peak,
                variant.average_bandwidth + audio_average,
                variant.codec,
                variant.width,
                variant.height,
            )?;
            if variant.frame_rate > 0.0 {
                write!(f, ",FRAME-RATE={:.3}", variant.frame_rate)?;
            }
            if self.audio.is_some() {
                f.write_str(",AUDIO=\"audio\"")?;
            }
            writeln!(f, "\n{}/media.m3u8", variant.track)?;
        }
        if self.variants.is_empty()
            && let Some(audio) = &self.audio
        {
            // A radio channel: the audio track is the only variant.
            writeln!(
                f,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"\n{}/media.m3u8",
                audio.peak_bandwidth, audio.average_bandwidth, audio.codec, audio.track
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TrackSpec;
    use m3u8_rs::Playlist;
    use proptest::prelude::*;

    use crate::testing::{Channel, DAY_START_SECONDS};

    fn media(channel: &Channel, track: &str, skip: bool) -> MediaPlaylist {
        let track = TrackName::new(track).unwrap();
        let window = channel.window.track(&channel.name, &track).unwrap();
        MediaPlaylist::build(window, &channel.window.config(), Vec::new(), skip).unwrap()
    }

    fn parse_media(text: &str) -> m3u8_rs::MediaPlaylist {
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(Playlist::MediaPlaylist(playlist)) => playlist,
            other => panic!("not a media playlist: {other:?}\n{text}"),
        }
    }

    fn first_msn() -> u64 {
        DAY_START_SECONDS / 2
    }

    #[test]
    fn media_playlist_lists_segments_parts_and_hints() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..20);
        let playlist = media(&channel, "v720", false);
        let text = playlist.to_string();
        let parsed = parse_media(&text);
        assert_eq!(parsed.version, Some(9));
        assert_eq!(parsed.target_duration, 2);
        assert_eq!(parsed.media_sequence, first_msn());
        // 20 parts: three whole segments and two parts of the fourth.
        assert_eq!(parsed.segments.len(), 3);
        assert!(
            parsed
                .segments
                .iter()
                .all(|s| (s.duration - 2.0).abs() < 1e-4)
        );
        assert_eq!(parsed.segments[1].uri, format!("{}.m4s", first_msn() + 1));
        assert!(text.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.001,CAN-SKIP-UNTIL=12.0"
        ));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.33334"));
        assert!(text.contains(&format!(
            "#EXT-X-PART:DURATION=0.33333,URI=\"{}.0.m4s\",INDEPENDENT=YES",
            first_msn() + 3
        )));
        assert!(text.contains(&format!(
            "#EXT-X-PART:DURATION=0.33333,URI=\"{}.1.m4s\"\n",
            first_msn() + 3
        )));
        assert!(text.contains(&format!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}.2.m4s\"",
            first_msn() + 3
        )));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-21T00:00:00.000Z"));
        assert_eq!(playlist.last_part(), Some((first_msn() + 3, 1)));
    }

    #[test]
    fn a_full_segment_hints_the_next_one() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..12);
        let playlist = media(&channel, "v720", false);
        assert_eq!(playlist.preload_hint, (first_msn() + 2, 0));
    }

    #[test]
    fn missing_segments_are_gaps_not_bad_media() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), (0..6).chain(18..31));
        let text = media(&channel, "v720", false).to_string();
        let parsed = parse_media(&text);
        // Numbering and time go on through the gap: two listed gap segments.
        let uris: Vec<&str> = parsed.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris.len(), 5);
        assert_eq!(uris[1], format!("{}.m4s", first_msn() + 1));
        assert_eq!(text.matches("#EXT-X-GAP").count(), 2);
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    }

    #[test]
    fn delta_updates_skip_what_the_client_has() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..6 * 20);
        let full = media(&channel, "v720", false);
        let delta = media(&channel, "v720", true);
        let text = delta.to_string();
        assert!(delta.skipped > 0);
        assert!(text.contains(&format!("#EXT-X-SKIP:SKIPPED-SEGMENTS={}", delta.skipped)));
        let kept: f64 = delta.segments.iter().map(|s| s.duration).sum();
        assert!(kept <= delta.skip_until() + 2.0, "{kept}");
        assert_eq!(
            delta.segments.len() as u64 + delta.skipped,
            full.segments.len() as u64
        );
        parse_media(&text);
    }

    #[test]
    fn master_playlist_has_a_variant_per_video_track_and_an_audio_group() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..12);
        channel.feed("a128", &TrackSpec::audio(), 0..22);
        let master = MasterPlaylist::build(channel.window.tracks(&channel.name));
        let text = master.to_string();
        let parsed = match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(Playlist::MasterPlaylist(playlist)) => playlist,
            other => panic!("not a master playlist: {other:?}\n{text}"),
        };
        assert_eq!(parsed.variants.len(), 1);
        let variant = &parsed.variants[0];
        assert_eq!(variant.uri, "v720/media.m3u8");
        assert_eq!(variant.codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(variant.frame_rate, Some(30.0));
        assert_eq!(variant.audio.as_deref(), Some("audio"));
        assert!(variant.bandwidth > 0 && variant.average_bandwidth.unwrap() <= variant.bandwidth);
        assert_eq!(parsed.alternatives.len(), 1);
        assert_eq!(
            parsed.alternatives[0].uri.as_deref(),
            Some("a128/media.m3u8")
        );
    }

    proptest! {
        /// Every playlist (LL-HLS, HLS-TS) and MPD written parses, and successive playlists
        /// never go back in numbering.
        #[test]
        fn playlists_parse_and_numbering_only_grows(
            runs in proptest::collection::vec((1u64..14, 0u64..20), 1..12),
            skip in any::<bool>(),
        ) {
            let spec = TrackSpec::video();
            let mut channel = Channel::new(30);
            let mut next = 0;
            let mut last: Option<(u64, u64)> = None;
            for (length, gap) in runs {
                next += gap;
                channel.feed("v720", &spec, next..next + length);
                next += length;
                let playlist = media(&channel, "v720", skip);
                let parsed = parse_media(&playlist.to_string());
                let newest = playlist.segments.last().unwrap().msn;
                prop_assert_eq!(parsed.media_sequence, playlist.media_sequence);
                // The TS playlist and the MPD of the same window parse too.
                let config = channel.window.config();
                let track = TrackName::new("v720").unwrap();
                let window = channel.window.track(&channel.name, &track).unwrap();
                if let Some(ts) = crate::hls_ts_playlist::TsMediaPlaylist::build(window, None, &config) {
                    let parsed = parse_media(&ts.to_string());
                    prop_assert_eq!(parsed.media_sequence, ts.media_sequence);
                    prop_assert!(parsed.segments.iter().all(|s| s.uri.ends_with(".ts")));
                }
                let mpd = crate::dash::Manifest::build(channel.window.tracks(&channel.name), &config, 0)
                    .unwrap()
                    .to_string();
                prop_assert!(roxmltree::Document::parse(&mpd).is_ok(), "{}", mpd);
                if let Some((sequence, newest_before)) = last {
                    prop_assert!(playlist.media_sequence >= sequence);
                    prop_assert!(newest >= newest_before);
                }
                last = Some((playlist.media_sequence, newest));
            }
        }
    }
}
