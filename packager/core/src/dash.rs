//! The DASH manifest (ISO/IEC 23009-1, DASH-IF interoperability guidelines, live profile), over
//! the same CMAF segments as HLS: a typed model built from the window and rendered in one
//! place.
//!
//! Media time is UTC, so the MPD needs no state. The one period starts at
//! `availabilityStartTime`, one segment duration after the Unix epoch, with
//! `presentationTimeOffset` equal to that duration in media time and `startNumber="1"`: the
//! `$Number$` of a segment is then `floor(utc / segment duration)`, the same number as the HLS
//! media sequence, and a sample's presentation time is its UTC time. (The epoch itself would
//! be simpler, but FFmpeg's DASH reader takes an `availabilityStartTime` of zero for "none"
//! and then starts an hour and a half ahead of the live edge.) Segment N is whole at
//! `(N + 1) × duration`; for low-latency DASH the SegmentTemplate's
//! `availabilityTimeOffset` makes it available one part after it starts, and the origin sends
//! the in-progress segment with chunked transfer as its chunks arrive
//! (`availabilityTimeComplete="false"`).

use std::fmt::{self, Write as _};

use estuary_proto::url::TrackName;
use estuary_proto::utc::UtcTime;

use crate::cmaf::Media;
use crate::window::{TrackWindow, WindowConfig};

/// `urn:mpeg:dash:profile:isoff-live:2011` plus the DASH-IF low-latency profile.
const PROFILES: &str =
    "urn:mpeg:dash:profile:isoff-live:2011,http://www.dashif.org/guidelines/low-latency-live-v5";

/// The dynamic MPD of one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// When this MPD was written (also sent as the `direct` UTC timing source).
    pub publish_time: UtcTime,
    pub segment_seconds: f64,
    /// How far back the window reaches.
    pub time_shift_buffer_seconds: f64,
    /// The longest part (CMAF chunk): a segment becomes available one part after it starts.
    pub part_seconds: f64,
    /// Delay for players that wait for whole segments (`suggestedPresentationDelay`).
    pub suggested_delay_seconds: f64,
    /// The latency a low-latency player should aim for (`ServiceDescription`).
    pub target_latency_ms: u64,
    pub video: Vec<Representation>,
    pub audio: Vec<Representation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Representation {
    pub track: TrackName,
    pub codec: String,
    pub bandwidth: u64,
    pub timescale: u32,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Video {
        width: u16,
        height: u16,
        frame_rate: f64,
    },
    Audio {
        sample_rate: u32,
        channels: u16,
    },
}

impl Manifest {
    /// The MPD of a channel's tracks at `now_nanos` (UTC); `None` while no track has a part.
    pub fn build<'a>(
        tracks: impl IntoIterator<Item = (&'a TrackName, &'a TrackWindow)>,
        config: &WindowConfig,
        now_nanos: u64,
    ) -> Option<Manifest> {
        let segment_seconds = config.segment.as_secs_f64();
        let mut part_seconds = 0f64;
        let (mut video, mut audio) = (Vec::new(), Vec::new());
        // MP3 tracks are for stream.mp3 alone.
        for (name, window) in tracks.into_iter().filter(|(_, t)| !t.header.is_mp3()) {
            window.newest()?;
            let timescale = window.header.timescale;
            part_seconds = part_seconds.max(window.longest_part() as f64 / f64::from(timescale));
            let (bandwidth, _) = window.bandwidth();
            let (kind, list) = match &window.header.media {
                Media::Video { width, height, .. } => (
                    Kind::Video {
                        width: *width,
                        height: *height,
                        frame_rate: window.frame_rate(),
                    },
                    &mut video,
                ),
                Media::Audio {
                    sample_rate,
                    channels,
                    ..
                } => (
                    Kind::Audio {
                        sample_rate: *sample_rate,
                        channels: *channels,
                    },
                    &mut audio,
                ),
            };
            list.push(Representation {
                track: name.clone(),
                codec: window.header.media.codec().to_owned(),
                bandwidth: bandwidth.max(1),
                timescale,
                kind,
            });
        }
        if video.is_empty() && audio.is_empty() {
            return None;
        }
        video.sort_by_key(|r| match r.kind {
            Kind::Video { height, .. } => std::cmp::Reverse(height),
            Kind::Audio { .. } => std::cmp::Reverse(0),
        });
        if part_seconds <= 0.0 || part_seconds > segment_seconds {
            part_seconds = segment_seconds;
        }
        Some(Manifest {
            publish_time: UtcTime::from_unix_nanos(now_nanos),
            segment_seconds,
            time_shift_buffer_seconds: config.window.as_secs_f64(),
            part_seconds,
            suggested_delay_seconds: 2.0 * segment_seconds,
            // Three parts behind the live edge, as PART-HOLD-BACK is for LL-HLS, but not less
            // than one and a half seconds: a DASH player fetches whole segments, so it has less
            // warning of a late part than an LL-HLS one.
            target_latency_ms: ((3.0 * part_seconds).max(1.5) * 1000.0).round() as u64,
            video,
            audio,
        })
    }

    /// One segment after the epoch (see the module's documentation).
    pub fn availability_start_time(&self) -> UtcTime {
        UtcTime::from_unix_nanos((self.segment_seconds * 1e9).round() as u64)
    }

    /// How much earlier than its end a segment may be requested: all but its first part.
    pub fn availability_time_offset(&self) -> f64 {
        self.segment_seconds - self.part_seconds
    }
}

/// `PT2S`, `PT1.667S`: an xs:duration in seconds, to the millisecond.
fn duration(seconds: f64) -> String {
    let millis = (seconds * 1000.0).round() as u64;
    if millis.is_multiple_of(1000) {
        format!("PT{}S", millis / 1000)
    } else {
        let text = format!("{}.{:03}", millis / 1000, millis % 1000);
        format!("PT{}S", text.trim_end_matches('0'))
    }
}

/// `30`, or `2997/100` for a rate that is not whole.
fn frame_rate(rate: f64) -> String {
    if (rate - rate.round()).abs() < 0.005 {
        format!("{}", rate.round() as u64)
    } else {
        format!("{}/100", (rate * 100.0).round() as u64)
    }
}

/// Text made safe for an XML attribute value.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
        writeln!(
            f,
            r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="{PROFILES}" type="dynamic" availabilityStartTime="{}" publishTime="{}" minimumUpdatePeriod="{}" timeShiftBufferDepth="{}" maxSegmentDuration="{}" minBufferTime="{}" suggestedPresentationDelay="{}">"#,
            self.availability_start_time().iso8601(),
            self.publish_time.iso8601(),
            duration(self.segment_seconds),
            duration(self.time_shift_buffer_seconds),
            duration(self.segment_seconds),
            duration(self.part_seconds),
            duration(self.suggested_delay_seconds),
        )?;
        writeln!(f, r#"  <ServiceDescription id="0">"#)?;
        writeln!(
            f,
            r#"    <Latency referenceId="0" target="{}" min="{}" max="{}"/>"#,
            self.target_latency_ms,
            self.target_latency_ms / 2,
            self.target_latency_ms * 2,
        )?;
        writeln!(f, r#"    <PlaybackRate min="0.96" max="1.04"/>"#)?;
        writeln!(f, r#"  </ServiceDescription>"#)?;
        writeln!(f, r#"  <Period id="0" start="PT0S">"#)?;
        for (id, (content, representations)) in [("video", &self.video), ("audio", &self.audio)]
            .into_iter()
            .filter(|(_, list)| !list.is_empty())
            .enumerate()
        {
            self.adaptation_set(f, id, content, representations)?;
        }
        writeln!(f, r#"  </Period>"#)?;
        writeln!(
            f,
            r#"  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="{}"/>"#,
            self.publish_time.iso8601()
        )?;
        writeln!(f, "</MPD>")
    }
}

impl Manifest {
    fn adaptation_set(
        &self,
        f: &mut fmt::Formatter<'_>,
        id: usize,
        content: &str,
        representations: &[Representation],
    ) -> fmt::Result {
        // Every track of a kind shares the segment template; the timescale is the first
        // track's (the ingest gives all video tracks one timescale), and each representation
        // that differs says its own.
        let timescale = representations[0].timescale;
        write!(
            f,
            r#"    <AdaptationSet id="{id}" contentType="{content}" mimeType="{content}/mp4" segmentAlignment="true" startWithSAP="1""#
        )?;
        if content == "audio" {
            f.write_str(r#" lang="und""#)?;
        }
        writeln!(f, ">")?;
        self.segment_template(f, timescale, "      ")?;
        for representation in representations {
            let mut attributes = format!(
                r#"id="{}" codecs="{}" bandwidth="{}""#,
                escape(representation.track.as_str()),
                escape(&representation.codec),
                representation.bandwidth
            );
            let mut children = String::new();
            match representation.kind {
                Kind::Video {
                    width,
                    height,
                    frame_rate: rate,
                } => {
                    let _ = write!(attributes, r#" width="{width}" height="{height}""#);
                    if rate > 0.0 {
                        let _ = write!(attributes, r#" frameRate="{}""#, frame_rate(rate));
                    }
                }
                Kind::Audio {
                    sample_rate,
                    channels,
                } => {
                    let _ = write!(attributes, r#" audioSamplingRate="{sample_rate}""#);
                    let _ = writeln!(
                        children,
                        r#"        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="{channels}"/>"#
                    );
                }
            }
            if representation.timescale != timescale {
                writeln!(f, "      <Representation {attributes}>")?;
                self.segment_template(f, representation.timescale, "        ")?;
                write!(f, "{children}")?;
                writeln!(f, "      </Representation>")?;
            } else if children.is_empty() {
                writeln!(f, "      <Representation {attributes}/>")?;
            } else {
                writeln!(f, "      <Representation {attributes}>")?;
                write!(f, "{children}")?;
                writeln!(f, "      </Representation>")?;
            }
        }
        writeln!(f, "    </AdaptationSet>")
    }

    fn segment_template(
        &self,
        f: &mut fmt::Formatter<'_>,
        timescale: u32,
        indent: &str,
    ) -> fmt::Result {
        let duration = (self.segment_seconds * f64::from(timescale)).round() as u64;
        writeln!(
            f,
            r#"{indent}<SegmentTemplate timescale="{timescale}" duration="{duration}" presentationTimeOffset="{duration}" startNumber="1" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Number$.m4s" availabilityTimeOffset="{:.3}" availabilityTimeComplete="false"/>"#,
            self.availability_time_offset()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Channel, TrackSpec};
    use crate::window::Window;
    use estuary_proto::url::ChannelName;

    fn demo() -> Channel {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..12);
        channel.feed("a128", &TrackSpec::audio(), 0..12);
        channel
    }

    #[test]
    fn describes_every_track_with_the_numbering_of_hls() {
        let Channel { window, name } = demo();
        let manifest = Manifest::build(
            window.tracks(&name),
            &window.config(),
            1_763_750_000_000_000_000,
        )
        .unwrap();
        let text = manifest.to_string();
        let document = roxmltree::Document::parse(&text).unwrap();
        let mpd = document.root_element();
        assert_eq!(mpd.tag_name().name(), "MPD");
        assert_eq!(mpd.attribute("type"), Some("dynamic"));
        assert_eq!(
            mpd.attribute("availabilityStartTime"),
            Some("1970-01-01T00:00:02.000Z")
        );
        assert_eq!(mpd.attribute("timeShiftBufferDepth"), Some("PT60S"));
        assert_eq!(
            mpd.attribute("publishTime"),
            Some("2025-11-21T18:33:20.000Z")
        );
        let sets: Vec<_> = mpd
            .descendants()
            .filter(|n| n.has_tag_name("AdaptationSet"))
            .collect();
        assert_eq!(sets.len(), 2);
        let representations: Vec<_> = sets[0]
            .children()
            .filter(|n| n.has_tag_name("Representation"))
            .map(|n| (n.attribute("id").unwrap(), n.attribute("height").unwrap()))
            .collect();
        assert_eq!(representations, [("v720", "720")]);
        let template = sets[0]
            .children()
            .find(|n| n.has_tag_name("SegmentTemplate"))
            .unwrap();
        let timescale: u64 = template.attribute("timescale").unwrap().parse().unwrap();
        let duration: u64 = template.attribute("duration").unwrap().parse().unwrap();
        assert_eq!(duration, 2 * timescale);
        // Number N starts at AST + (N - startNumber) × duration = 2 s + (N - 1) × 2 s = N × 2 s
        // after the epoch, and its media time minus the offset is its time in the period.
        assert_eq!(template.attribute("startNumber"), Some("1"));
        assert_eq!(
            template.attribute("presentationTimeOffset"),
            Some(duration.to_string().as_str())
        );
        assert_eq!(
            template.attribute("media"),
            Some("$RepresentationID$/$Number$.m4s")
        );
        // One part after a segment starts, it can be asked for. The longest part of the
        // fixtures is audio's (16 AAC frames, 0.341 s): 2 s - 0.341 s.
        assert_eq!(template.attribute("availabilityTimeOffset"), Some("1.659"));
        let audio = sets[1]
            .children()
            .find(|n| n.has_tag_name("Representation"))
            .unwrap();
        assert_eq!(audio.attribute("id"), Some("a128"));
        assert_eq!(audio.attribute("audioSamplingRate"), Some("48000"));
        assert!(mpd.children().any(|n| n.has_tag_name("UTCTiming")));
    }

    #[test]
    fn no_manifest_without_media() {
        let window = Window::new(WindowConfig::default());
        let channel = ChannelName::new("demo").unwrap();
        assert_eq!(
            Manifest::build(window.tracks(&channel), &window.config(), 0),
            None
        );
    }

    #[test]
    fn durations_and_rates_are_written_as_the_schema_wants() {
        assert_eq!(duration(2.0), "PT2S");
        assert_eq!(duration(60.0), "PT60S");
        assert_eq!(duration(1.6667), "PT1.667S");
        assert_eq!(duration(0.5), "PT0.5S");
        assert_eq!(frame_rate(30.0), "30");
        assert_eq!(frame_rate(29.97), "2997/100");
        assert_eq!(escape(r#"a"<&>"#), "a&quot;&lt;&amp;&gt;");
    }
}
