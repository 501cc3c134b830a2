//! What an ingest worker is asked to do: channels (source, effects, ladder, timing) and outputs.
//!
//! The same [`ChannelSpec`] is filled from command-line flags or from a `[[channel]]` table of
//! the TOML config, then checked once by [`ChannelSpec::validate`] into a [`Channel`], so both
//! ways of configuring give the same errors and the same defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary_proto::duration::parse_duration;
use estuary_proto::url::{ChannelName, TrackName};
use serde::Deserialize;

use crate::IngestError;

pub const DEFAULT_SEGMENT: Duration = Duration::from_secs(2);
pub const DEFAULT_PARTS_PER_SEGMENT: u32 = 6;
pub const DEFAULT_RENDITIONS: [u32; 2] = [720, 360];
pub const DEFAULT_AUDIO_KBPS: u32 = 128;

/// Where media comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Moving test pattern with the UTC time burnt in, and a tone.
    Test,
    /// Any file GStreamer can decode, looped forever (`--uri`).
    File,
    /// A capture card or webcam (`--device`, default /dev/video0).
    V4l2,
    /// An ALSA sound card (`--device`, default "default"); audio only.
    Alsa,
    /// A PulseAudio or PipeWire source (`--device`, default the server's); audio only.
    Pulse,
    /// SRT with MPEG-TS inside (`--uri srt://:9000?mode=listener` or a caller URI).
    Srt,
    /// An RTSP camera (`--uri rtsp://…`).
    Rtsp,
}

/// The audio codec of the channel's audio track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    Aac,
    Opus,
    /// An extra MP3 track beside AAC or Opus, for radio listeners of `stream.mp3`.
    Mp3,
    /// No audio track.
    None,
}

/// MP3 bitrates (kbit/s) that a constant-bitrate MPEG-1 Layer III stream can have.
const MP3_BITRATES: [u32; 14] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];

/// The audio codecs asked for: `aac`, `opus` or `none`, with `mp3` added by a comma
/// (`aac,mp3`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AudioCodecs(pub Vec<AudioCodec>);

impl std::str::FromStr for AudioCodecs {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(|name| {
                <AudioCodec as clap::ValueEnum>::from_str(name.trim(), true)
                    .map_err(|_| format!("audio codec {name:?} is none of aac, opus, mp3 and none"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AudioCodecs)
    }
}

impl TryFrom<String> for AudioCodecs {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// The video codec of every rendition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// H.264, which every HLS and DASH player and MPEG-TS take.
    #[default]
    H264,
    /// VP9 (`vp9enc`), for `stream.webm` with Opus audio.
    Vp9,
}

/// Which H.264 encoder to use; `auto` takes the best this machine has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EncoderPreference {
    #[default]
    Auto,
    /// VA-API hardware (`vah264enc`, else the older `vaapih264enc`).
    Va,
    /// NVIDIA hardware (`nvh264enc`).
    Nvenc,
    X264,
    Openh264,
}

/// One channel as written on the command line or in a `[[channel]]` table. Every field is
/// optional; [`ChannelSpec::validate`] fills in defaults and checks what goes together.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// Channel name, used in URLs: letters, digits, '-' and '_' [default: demo].
    #[arg(long = "channel", env = "ESTUARY_CHANNEL")]
    pub name: Option<String>,
    /// Where media comes from [default: test].
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,
    /// File path or URI for `file`; srt:// or rtsp:// URI for `srt` and `rtsp`.
    #[arg(long)]
    pub uri: Option<String>,
    /// Device for `v4l2` (/dev/videoN), `alsa` (hw:1,0) or `pulse` (a source name).
    #[arg(long)]
    pub device: Option<String>,
    /// ALSA device that adds sound to a `v4l2` source (e.g. the capture card's hw:2,0).
    #[arg(long)]
    pub audio_device: Option<String>,
    /// Video renditions by height, highest first, e.g. 1080,720,360 [default: 720,360].
    #[arg(long, value_delimiter = ',')]
    pub renditions: Option<Vec<u32>>,
    /// Frames per second of every rendition, e.g. 30, 25 or 30000/1001 [default: 30].
    #[arg(long)]
    pub framerate: Option<String>,
    /// Audio codec: aac, opus or none; `,mp3` adds an MP3 track for `stream.mp3` (e.g.
    /// aac,mp3) [default: aac].
    #[arg(long)]
    pub audio: Option<AudioCodecs>,
    /// Audio bitrate in kbit/s; the audio track is named a{kbps} [default: 128].
    #[arg(long)]
    pub audio_bitrate: Option<u32>,
    /// Segment duration; keyframes fall on multiples of it in UTC [default: 2s].
    #[arg(long)]
    pub segment: Option<String>,
    /// Parts (CMAF chunks, LL-HLS parts) per segment [default: 6].
    #[arg(long)]
    pub parts: Option<u32>,
    /// Text drawn in the top-left corner of the picture.
    #[arg(long)]
    pub text: Option<String>,
    /// Burn the UTC time of each frame into the picture [default: on for `test`, off otherwise].
    #[arg(long)]
    pub clock: Option<bool>,
    /// Audio gain, 1.0 leaves the level as it is [default: 1.0].
    #[arg(long)]
    pub volume: Option<f64>,
    /// H.264 encoder [default: auto].
    #[arg(long, value_enum)]
    pub encoder: Option<EncoderPreference>,
    /// Video codec: h264, or vp9 (with `--audio opus`, the channel also plays as stream.webm)
    /// [default: h264].
    #[arg(long, value_enum)]
    pub video_codec: Option<VideoCodec>,
}

/// A checked channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Channel {
    pub name: ChannelName,
    pub source: Source,
    pub renditions: Vec<Rendition>,
    pub framerate: (u32, u32),
    pub audio: Option<AudioTrack>,
    /// The MP3 track beside `audio`, for `stream.mp3`.
    pub mp3: Option<AudioTrack>,
    pub segment: Duration,
    pub parts_per_segment: u32,
    pub text: Option<String>,
    pub clock: bool,
    pub volume: f64,
    pub encoder: EncoderPreference,
    pub video_codec: VideoCodec,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Test,
    /// `uri` is always a URI (a plain path is turned into `file://…`).
    File {
        uri: String,
    },
    V4l2 {
        device: String,
        audio_device: Option<String>,
    },
    Alsa {
        device: String,
    },
    Pulse {
        device: Option<String>,
    },
    Srt {
        uri: String,
    },
    Rtsp {
        uri: String,
    },
}

impl Source {
    pub fn has_video(&self) -> bool {
        !matches!(self, Source::Alsa { .. } | Source::Pulse { .. })
    }

    pub fn has_audio(&self) -> bool {
        !matches!(
            self,
            Source::V4l2 {
                audio_device: None,
                ..
            }
        )
    }

    /// Sources that are not live (the test pattern, files) count their own media time and are
    /// paced to the clock; live ones stamp buffers with their capture time.
    pub fn is_paced(&self) -> bool {
        matches!(self, Source::Test | Source::File { .. })
    }

    /// Files play again from the start when they end.
    pub fn loops(&self) -> bool {
        matches!(self, Source::File { .. })
    }
}

/// One rung of the video ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendition {
    pub track: TrackName,
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
}

impl Rendition {
    /// A 16:9 rendition `height` lines high with a bitrate typical for 30 fps H.264.
    pub fn for_height(height: u32) -> Self {
        // Width rounded to a multiple of 2, as 4:2:0 needs.
        let width = (height * 16 / 9 + 1) & !1;
        let pixels = u64::from(width) * u64::from(height);
        // About 0.1 bit per pixel per frame at 30 fps, never below 200 kbit/s.
        let bitrate_kbps = ((pixels * 30 / 10_000).max(200)) as u32;
        Self {
            track: TrackName::video(height),
            width,
            height,
            bitrate_kbps,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioTrack {
    pub track: TrackName,
    pub codec: AudioCodec,
    pub bitrate_kbps: u32,
}

impl ChannelSpec {
    /// Whether any field was given (on the command line, where all start unset).
    pub fn has_any_field(&self) -> bool {
        let ChannelSpec {
            name: _,
            source,
            uri,
            device,
            audio_device,
            renditions,
            framerate,
            audio,
            audio_bitrate,
            segment,
            parts,
            text,
            clock,
            volume,
            encoder,
            video_codec,
        } = self;
        source.is_some()
            || uri.is_some()
            || device.is_some()
            || audio_device.is_some()
            || renditions.is_some()
            || framerate.is_some()
            || audio.is_some()
            || audio_bitrate.is_some()
            || segment.is_some()
            || parts.is_some()
            || text.is_some()
            || clock.is_some()
            || volume.is_some()
            || encoder.is_some()
            || video_codec.is_some()
    }

    pub fn validate(&self) -> Result<Channel, IngestError> {
        let name = ChannelName::new(self.name.as_deref().unwrap_or("demo"))
            .map_err(|error| IngestError::Config(error.to_string()))?;
        let bad = |what: String| IngestError::Config(format!("channel {name}: {what}"));
        let kind = self.source.unwrap_or(SourceKind::Test);
        let needs_uri = |scheme: &str| -> Result<String, IngestError> {
            let uri = self.uri.clone().ok_or_else(|| {
                bad(format!("source {kind:?} needs --uri ({scheme})").to_lowercase())
            })?;
            Ok(uri)
        };
        let source = match kind {
            SourceKind::Test => Source::Test,
            SourceKind::File => Source::File {
                uri: file_uri(&needs_uri("a file path or URI")?)?,
            },
            SourceKind::V4l2 => Source::V4l2 {
                device: self.device.clone().unwrap_or_else(|| "/dev/video0".into()),
                audio_device: self.audio_device.clone(),
            },
            SourceKind::Alsa => Source::Alsa {
                device: self.device.clone().unwrap_or_else(|| "default".into()),
            },
            SourceKind::Pulse => Source::Pulse {
                device: self.device.clone(),
            },
            SourceKind::Srt => {
                let uri = needs_uri("srt://host:port or srt://:port?mode=listener")?;
                if !uri.starts_with("srt://") {
                    return Err(bad(format!(
                        "SRT source URI {uri:?} must start with srt://"
                    )));
                }
                Source::Srt { uri }
            }
            SourceKind::Rtsp => {
                let uri = needs_uri("rtsp://camera/stream")?;
                if !(uri.starts_with("rtsp://") || uri.starts_with("rtsps://")) {
                    return Err(bad(format!(
                        "RTSP source URI {uri:?} must start with rtsp://"
                    )));
                }
                Source::Rtsp { uri }
            }
        };
        if self.audio_device.is_some() && kind != SourceKind::V4l2 {
            return Err(bad("--audio-device only adds sound to a v4l2 source".into()));
        }

        let heights = self
            .renditions
            .clone()
            .unwrap_or_else(|| DEFAULT_RENDITIONS.to_vec());
        if source.has_video() && heights.is_empty() {
            return Err(bad(
                "give at least one rendition, e.g. --renditions 720".into()
            ));
        }
        let mut renditions: Vec<Rendition> = Vec::new();
        for &height in &heights {
            if !(64..=4320).contains(&height) || height % 2 != 0 {
                return Err(bad(format!(
                    "rendition {height} is not an even height between 64 and 4320"
                )));
            }
            if renditions.iter().any(|r| r.height == height) {
                return Err(bad(format!("rendition {height} is listed twice")));
            }
            renditions.push(Rendition::for_height(height));
        }
        if !source.has_video() {
            renditions.clear();
        }

        let framerate = parse_framerate(self.framerate.as_deref().unwrap_or("30"))
            .ok_or_else(|| bad(format!("framerate {:?} is not N or N/D", self.framerate)))?;
        let codecs = self
            .audio
            .clone()
            .unwrap_or(AudioCodecs(vec![AudioCodec::Aac]))
            .0;
        let with_mp3 = codecs.contains(&AudioCodec::Mp3);
        let codec = match codecs[..] {
            [codec] | [codec, AudioCodec::Mp3] | [AudioCodec::Mp3, codec]
                if codec != AudioCodec::Mp3 =>
            {
                codec
            }
            [AudioCodec::Mp3] => {
                return Err(bad(
                    "mp3 is a track beside aac or opus, for stream.mp3: give --audio aac,mp3"
                        .into(),
                ));
            }
            _ => {
                return Err(bad(format!(
                    "audio {codecs:?} is not one of aac, opus or none, with or without mp3"
                )
                .to_lowercase()));
            }
        };
        if with_mp3 && codec == AudioCodec::None {
            return Err(bad(
                "mp3 is a track beside aac or opus, not beside none".into()
            ));
        }
        let audio_kbps = self.audio_bitrate.unwrap_or(DEFAULT_AUDIO_KBPS);
        if !(8..=512).contains(&audio_kbps) {
            return Err(bad(format!(
                "audio bitrate {audio_kbps} kbit/s is not within 8..=512"
            )));
        }
        if with_mp3 && !MP3_BITRATES.contains(&audio_kbps) {
            return Err(bad(format!(
                "audio bitrate {audio_kbps} kbit/s is not an MP3 bitrate: one of {MP3_BITRATES:?}"
            )));
        }
        let has_audio = codec != AudioCodec::None && source.has_audio();
        let audio = has_audio.then(|| AudioTrack {
            track: TrackName::audio(audio_kbps),
            codec,
            bitrate_kbps: audio_kbps,
        });
        let mp3 = (has_audio && with_mp3).then(|| AudioTrack {
            track: TrackName::mp3(audio_kbps),
            codec: AudioCodec::Mp3,
            bitrate_kbps: audio_kbps,
        });
        if renditions.is_empty() && audio.is_none() {
            return Err(bad("it would have no track: give it video or audio".into()));
        }

        let segment = match &self.segment {
            Some(text) => parse_duration(text).map_err(|error| bad(error.to_string()))?,
            None => DEFAULT_SEGMENT,
        };
        if segment < Duration::from_millis(100) || segment > Duration::from_secs(60) {
            return Err(bad(format!(
                "segment {segment:?} is not between 100ms and 60s"
            )));
        }
        let parts_per_segment = self.parts.unwrap_or(DEFAULT_PARTS_PER_SEGMENT);
        if !(1..=60).contains(&parts_per_segment) {
            return Err(bad(format!(
                "{parts_per_segment} parts per segment is not within 1..=60"
            )));
        }
        let volume = self.volume.unwrap_or(1.0);
        if !(0.0..=10.0).contains(&volume) {
            return Err(bad(format!("volume {volume} is not within 0.0..=10.0")));
        }
        Ok(Channel {
            clock: self.clock.unwrap_or(source == Source::Test),
            name,
            source,
            renditions,
            framerate,
            audio,
            mp3,
            segment,
            parts_per_segment,
            text: self.text.clone(),
            volume,
            encoder: self.encoder.unwrap_or_default(),
            video_codec: self.video_codec.unwrap_or_default(),
        })
    }
}

impl Channel {
    pub fn tracks(&self) -> impl Iterator<Item = &TrackName> {
        self.renditions
            .iter()
            .map(|r| &r.track)
            .chain(self.audio.as_ref().map(|a| &a.track))
            .chain(self.mp3.as_ref().map(|a| &a.track))
    }
}

fn parse_framerate(text: &str) -> Option<(u32, u32)> {
    let (num, den) = text.split_once('/').unwrap_or((text, "1"));
    let num: u32 = num.trim().parse().ok()?;
    let den: u32 = den.trim().parse().ok()?;
    (num > 0 && den > 0 && num / den <= 240).then_some((num, den))
}

fn file_uri(path_or_uri: &str) -> Result<String, IngestError> {
    if path_or_uri.contains("://") {
        return Ok(path_or_uri.to_owned());
    }
    let path = Path::new(path_or_uri);
    let absolute = std::fs::canonicalize(path).map_err(|error| IngestError::MissingFile {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    gst::glib::filename_to_uri(&absolute, None)
        .map(|uri| uri.to_string())
        .map_err(|error| IngestError::Config(format!("{}: {error}", absolute.display())))
}

/// Where tracks go, and how the worker is watched.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Write one file per track, `{DIR}/{channel}/{track}.mp4` when there are several channels,
    /// `{DIR}/{track}.mp4` when there is one.
    pub out: Option<PathBuf>,
    /// Send each track as one long chunked POST to `{URL}/{channel}/{track}`.
    pub to: Option<String>,
    /// Hex key for signing the keycard sent with each POST (`Authorization: Bearer …`).
    pub keycard_secret: Option<String>,
    /// Names the key in the keycard (`kid=`), for key rotation.
    pub keycard_key_id: Option<String>,
    /// Address of `/healthz` and `/metrics`.
    pub admin: Option<SocketAddr>,
}

/// A whole ingest worker: what `--config FILE` holds.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(flatten)]
    pub outputs: OutputSpec,
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelSpec>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, IngestError> {
        let text = std::fs::read_to_string(path).map_err(|error| IngestError::MissingFile {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        Self::parse(&text).map_err(|error| match error {
            IngestError::Config(message) => {
                IngestError::Config(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, IngestError> {
        // The toml crate's message names the line and column and shows the line.
        toml::from_str(text).map_err(|error| IngestError::Config(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_the_demo_ladder() {
        let channel = ChannelSpec::default().validate().unwrap();
        assert_eq!(channel.name.as_str(), "demo");
        assert_eq!(channel.source, Source::Test);
        let tracks: Vec<_> = channel.tracks().map(|t| t.to_string()).collect();
        assert_eq!(tracks, ["v720", "v360", "a128"]);
        assert_eq!(
            (channel.renditions[0].width, channel.renditions[1].width),
            (1280, 640)
        );
        assert_eq!(channel.segment, Duration::from_secs(2));
        assert_eq!(channel.framerate, (30, 1));
        assert!(channel.clock);
    }

    #[test]
    fn audio_only_and_video_only_sources() {
        let radio = ChannelSpec {
            source: Some(SourceKind::Alsa),
            ..Default::default()
        };
        let radio = radio.validate().unwrap();
        assert!(radio.renditions.is_empty());
        assert_eq!(radio.tracks().count(), 1);
        let camera = ChannelSpec {
            source: Some(SourceKind::V4l2),
            ..Default::default()
        };
        assert!(camera.validate().unwrap().audio.is_none());
    }

    #[test]
    fn bad_input_is_named() {
        let cases: [(ChannelSpec, &str); 5] = [
            (
                ChannelSpec {
                    name: Some("a/b".into()),
                    ..Default::default()
                },
                "a/b",
            ),
            (
                ChannelSpec {
                    renditions: Some(vec![721]),
                    ..Default::default()
                },
                "721",
            ),
            (
                ChannelSpec {
                    source: Some(SourceKind::Srt),
                    ..Default::default()
                },
                "--uri",
            ),
            (
                ChannelSpec {
                    segment: Some("2 weeks".into()),
                    ..Default::default()
                },
                "2 weeks",
            ),
            (
                ChannelSpec {
                    framerate: Some("fast".into()),
                    ..Default::default()
                },
                "fast",
            ),
        ];
        for (spec, needle) in cases {
            let message = spec.validate().unwrap_err().to_string();
            assert!(
                message.contains(needle),
                "{message:?} should name {needle:?}"
            );
        }
    }

    #[test]
    fn config_file_errors_name_the_line() {
        let text = "to = \"http://127.0.0.1:8080/ingest\"\n\n[[channel]]\nname = \"a\"\nsorce = \"test\"\n";
        let message = ConfigFile::parse(text).unwrap_err().to_string();
        assert!(message.contains("line 5"), "{message}");
        assert!(message.contains("sorce"), "{message}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let file = ConfigFile::parse(include_str!("../../deploy/ingest.toml")).unwrap();
        assert_eq!(file.outputs.admin, Some("127.0.0.1:9101".parse().unwrap()));
        let demo = file.channels[0].validate().unwrap();
        assert_eq!(demo.text.as_deref(), Some("Estuary demo"));
    }

    #[test]
    fn config_file_reads_channels() {
        let text = r#"
            out = "/tmp/x"
            admin = "127.0.0.1:9100"
            [[channel]]
            name = "radio"
            source = "alsa"
            device = "hw:1,0"
            audio = "opus"
            [[channel]]
            name = "cam"
            source = "v4l2"
            renditions = [1080, 540]
        "#;
        let file = ConfigFile::parse(text).unwrap();
        assert_eq!(file.channels.len(), 2);
        let radio = file.channels[0].validate().unwrap();
        assert_eq!(
            radio.source,
            Source::Alsa {
                device: "hw:1,0".into()
            }
        );
        assert_eq!(radio.audio.unwrap().codec, AudioCodec::Opus);
        assert_eq!(
            file.channels[1].validate().unwrap().renditions[0].width,
            1920
        );
    }
}
