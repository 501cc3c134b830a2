//! The shape of a channel's pipeline, decided without touching GStreamer: source -> effects ->
//! tee -> per-rendition scale + encode -> cmafmux -> appsink, and the audio branch beside it.
//!
//! A plan is typed (elements, properties, caps) and renders to one gst-launch-1.0 description,
//! which is both what `--print-pipeline` shows an operator and what the runtime instantiates.
//! Elements the runtime attaches to are named by the functions at the bottom of this file.

use std::fmt::{self, Write as _};

use crate::catalog::VideoEncoder;
use crate::config::{AudioCodec, AudioTrack, Channel, Rendition, Source};

/// All audio is encoded at this rate: AAC and Opus both take it, and CMAF players expect it.
pub const AUDIO_RATE: u32 = 48_000;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string, quoted as needed.
    Text(String),
    /// An enum nick or caps, written as is.
    Word(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(value) => write!(f, "{value}"),
            Value::Int(value) => write!(f, "{value}"),
            Value::Float(value) => write!(f, "{value}"),
            Value::Word(word) => f.write_str(word),
            Value::Text(text) => {
                let plain = !text.is_empty()
                    && text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-./:+".contains(c));
                if plain {
                    f.write_str(text)
                } else {
                    f.write_char('"')?;
                    for c in text.chars() {
                        if c == '"' || c == '\\' {
                            f.write_char('\\')?;
                        }
                        f.write_char(c)?;
                    }
                    f.write_char('"')
                }
            }
        }
    }
}

/// One element with its properties, or a caps filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Element {
        factory: &'static str,
        name: Option<String>,
        properties: Vec<(&'static str, Value)>,
    },
    Caps(String),
    /// A link from an element named earlier (`name.`), e.g. a tee or a decoder's pad.
    From(String),
}

impl Node {
    pub fn new(factory: &'static str) -> Self {
        Node::Element {
            factory,
            name: None,
            properties: Vec::new(),
        }
    }

    pub fn named(self, new_name: String) -> Self {
        match self {
            Node::Element {
                factory,
                properties,
                ..
            } => Node::Element {
                factory,
                name: Some(new_name),
                properties,
            },
            other => other,
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        if let Node::Element { properties, .. } = &mut self {
            properties.push((key, value.into()));
        }
        self
    }

    pub fn factory(&self) -> Option<&'static str> {
        match self {
            Node::Element { factory, .. } => Some(factory),
            _ => None,
        }
    }

    pub fn property(&self, key: &str) -> Option<&Value> {
        match self {
            Node::Element { properties, .. } => {
                properties.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Node::Element { name, .. } => name.as_deref(),
            _ => None,
        }
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}
impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}
impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Value::Int(value.into())
    }
}
impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(value as i64)
    }
}
impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}
impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}
impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

fn word(text: &str) -> Value {
    Value::Word(text.to_owned())
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Element {
                factory,
                name,
                properties,
            } => {
                f.write_str(factory)?;
                if let Some(name) = name {
                    write!(f, " name={name}")?;
                }
                for (key, value) in properties {
                    write!(f, " {key}={value}")?;
                }
                Ok(())
            }
            Node::Caps(caps) => f.write_str(caps),
            Node::From(name) => write!(f, "{name}."),
        }
    }
}

/// Chains of linked nodes; a chain may start from an element named in an earlier chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelinePlan {
    pub chains: Vec<Vec<Node>>,
}

impl PipelinePlan {
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.chains.iter().flatten()
    }

    pub fn find(&self, name: &str) -> Option<&Node> {
        self.nodes().find(|node| node.name() == Some(name))
    }

    /// Every element factory the plan needs, each once.
    pub fn factories(&self) -> Vec<&'static str> {
        let mut factories: Vec<_> = self.nodes().filter_map(Node::factory).collect();
        factories.sort_unstable();
        factories.dedup();
        factories
    }
}

impl fmt::Display for PipelinePlan {
    /// The gst-launch-1.0 description.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, chain) in self.chains.iter().enumerate() {
            if index > 0 {
                f.write_str("  ")?;
            }
            for (position, node) in chain.iter().enumerate() {
                if position > 0 {
                    f.write_str(" ! ")?;
                }
                write!(f, "{node}")?;
            }
        }
        Ok(())
    }
}

/// The encoders chosen for a channel at run time.
#[derive(Clone, Copy, Debug)]
pub struct Encoders {
    pub video: Option<VideoEncoder>,
    pub audio: Option<&'static str>,
}

// Names of the elements the runtime attaches to.
pub const SOURCE: &str = "source";
/// Video after rate and size are fixed: frames are gated, put on the UTC grid and keyed here.
pub const VIDEO_TIMING: &str = "video_timing";
/// Audio at the encoder's input: gated and clipped to the first segment boundary here.
pub const AUDIO_TIMING: &str = "audio_timing";
/// Pace a source that is not live to the clock; their sink pads carry the offset from media
/// time to UTC.
pub const VIDEO_PACE: &str = "video_pace";
pub const AUDIO_PACE: &str = "audio_pace";
pub const CLOCK_OVERLAY: &str = "clock_overlay";
pub const VIDEO_TEE: &str = "video_tee";
/// Where the MP3 track's branch leaves the audio, when the channel has one.
pub const AUDIO_TEE: &str = "audio_tee";

pub fn encoder_name(track: &str) -> String {
    format!("encode_{track}")
}
pub fn muxer_name(track: &str) -> String {
    format!("mux_{track}")
}
pub fn sink_name(track: &str) -> String {
    format!("sink_{track}")
}

/// Plans the whole pipeline of `channel`.
pub fn plan_channel(channel: &Channel, encoders: Encoders) -> PipelinePlan {
    let mut plan = PipelinePlan::default();
    let (fps_num, fps_den) = channel.framerate;
    let top = channel.renditions.first();
    let video_caps = top.map(|top| {
        format!(
            "video/x-raw,width={},height={},pixel-aspect-ratio=1/1,framerate={fps_num}/{fps_den}",
            top.width, top.height
        )
    });
    let audio_caps = format!("audio/x-raw,rate={AUDIO_RATE},channels=2");

    // Sources: each yields a video chain head and an audio chain head, unlinked so far.
    let (video_head, audio_head): (Option<Vec<Node>>, Option<Vec<Node>>) = match &channel.source {
        Source::Test => (
            video_caps.as_ref().map(|caps| {
                vec![
                    Node::new("videotestsrc")
                        .named(SOURCE.into())
                        .with("pattern", word("smpte"))
                        .with("horizontal-speed", 4i64),
                    Node::Caps(caps.clone()),
                    Node::new("clocksync").named(VIDEO_PACE.into()),
                ]
            }),
            Some(vec![
                Node::new("audiotestsrc")
                    .with("wave", word("sine"))
                    .with("freq", 440.0)
                    .with("volume", 0.2),
                Node::Caps(audio_caps.clone()),
                Node::new("clocksync").named(AUDIO_PACE.into()),
            ]),
        ),
        Source::File { uri } | Source::Srt { uri } | Source::Rtsp { uri } => {
            plan.chains.push(vec![
                Node::new("uridecodebin")
                    .named(SOURCE.into())
                    .with("uri", uri.as_str()),
            ]);
            let paced = |raw: &str, pace: &str| {
                let mut chain = vec![Node::From(SOURCE.into()), Node::Caps(raw.into())];
                chain.push(Node::new("queue"));
                if channel.source.is_paced() {
                    chain.push(Node::new("clocksync").named(pace.into()));
                }
                chain
            };
            (
                Some(paced("video/x-raw", VIDEO_PACE)),
                Some(paced("audio/x-raw", AUDIO_PACE)),
            )
        }
        Source::V4l2 {
            device,
            audio_device,
        } => (
            Some(vec![
                Node::new("v4l2src")
                    .named(SOURCE.into())
                    .with("device", device.as_str()),
                Node::new("decodebin"),
                Node::new("queue"),
            ]),
            audio_device.as_ref().map(|device| {
                vec![
                    Node::new("alsasrc").with("device", device.as_str()),
                    Node::new("queue"),
                ]
            }),
        ),
        Source::Alsa { device } => (
            None,
            Some(vec![
                Node::new("alsasrc")
                    .named(SOURCE.into())
                    .with("device", device.as_str()),
                Node::new("queue"),
            ]),
        ),
        Source::Pulse { device } => {
            let mut source = Node::new("pulsesrc").named(SOURCE.into());
            if let Some(device) = device {
                source = source.with("device", device.as_str());
            }
            (None, Some(vec![source, Node::new("queue")]))
        }
    };

    if let (Some(mut chain), Some(caps), Some(encoder)) = (video_head, video_caps, encoders.video) {
        chain.extend([
            Node::new("videoconvert"),
            Node::new("videoscale").with("add-borders", true),
            // Without skip-to-first, videorate fills the time from the segment start to a live
            // source's first (UTC) timestamp with copies of that frame.
            Node::new("videorate").with("skip-to-first", true),
            Node::new("capsfilter")
                .named(VIDEO_TIMING.into())
                .with("caps", caps),
        ]);
        if let Some(text) = &channel.text {
            chain.push(
                Node::new("textoverlay")
                    .with("text", text.as_str())
                    .with("valignment", word("top"))
                    .with("halignment", word("left"))
                    .with("font-desc", "Sans 24"),
            );
        }
        if channel.clock {
            chain.push(
                Node::new("textoverlay")
                    .named(CLOCK_OVERLAY.into())
                    .with("valignment", word("bottom"))
                    .with("halignment", word("center"))
                    .with("font-desc", "Monospace 26")
                    .with("shaded-background", true),
            );
        }
        chain.push(Node::new("tee").named(VIDEO_TEE.into()));
        plan.chains.push(chain);
        for rendition in &channel.renditions {
            plan.chains
                .push(rendition_chain(channel, rendition, encoder));
        }
    }

    if let (Some(mut chain), Some(audio), Some(encoder)) =
        (audio_head, &channel.audio, encoders.audio)
    {
        let track = audio.track.as_str();
        chain.extend([
            Node::new("audioconvert"),
            Node::new("audioresample"),
            // Live sources may leave holes (network jitter, sound-card overruns): filled with
            // silence, so every track's timeline is continuous and starts on the boundary.
            // skip-to-first, as for videorate: nothing before the first (UTC) timestamp.
            Node::new("audiorate").with("skip-to-first", true),
            Node::new("volume").with("volume", channel.volume),
            Node::new("capsfilter")
                .named(AUDIO_TIMING.into())
                .with("caps", audio_caps),
        ]);
        if let Some(mp3) = &channel.mp3 {
            chain.push(Node::new("tee").named(AUDIO_TEE.into()));
            plan.chains.push(chain);
            plan.chains.push(mp3_chain(mp3));
            chain = vec![Node::From(AUDIO_TEE.into()), Node::new("queue")];
        }
        let bits = u64::from(audio.bitrate_kbps) * 1000;
        chain.push(
            Node::new(encoder)
                .named(encoder_name(track))
                .with("bitrate", bits),
        );
        chain.push(match audio.codec {
            AudioCodec::Opus => Node::new("opusparse"),
            _ => Node::new("aacparse"),
        });
        chain.extend(cmaf_tail(channel, track, "cmafmux"));
        plan.chains.push(chain);
    }
    plan
}

/// The MP3 track: LAME at a constant bitrate, framed by the parser, one frame per buffer into
/// the appsink (the runtime writes the fragmented MP4 itself: cmafmux takes no MP3).
fn mp3_chain(mp3: &AudioTrack) -> Vec<Node> {
    let track = mp3.track.as_str();
    vec![
        Node::From(AUDIO_TEE.into()),
        Node::new("queue"),
        Node::new("audioconvert"),
        Node::new("lamemp3enc")
            .named(encoder_name(track))
            .with("target", word("bitrate"))
            .with("bitrate", mp3.bitrate_kbps)
            .with("cbr", true),
        Node::new("mpegaudioparse"),
        Node::new("appsink")
            .named(sink_name(track))
            .with("sync", false)
            .with("async", false)
            .with("emit-signals", false),
    ]
}

fn rendition_chain(channel: &Channel, rendition: &Rendition, encoder: VideoEncoder) -> Vec<Node> {
    let track = rendition.track.as_str();
    let (fps_num, fps_den) = channel.framerate;
    let frames_per_segment =
        (channel.segment.as_secs_f64() * f64::from(fps_num) / f64::from(fps_den)).round() as u32;
    // Keyframes are forced on segment boundaries; the encoder's own limit is only a safety net
    // far enough away never to add one of its own.
    let safety_interval = frames_per_segment.max(1) * 4;
    let kbps = rendition.bitrate_kbps;
    let encode = match encoder {
        VideoEncoder::X264 => Node::new("x264enc")
            .with("tune", word("zerolatency"))
            .with("speed-preset", word("veryfast"))
            .with("bitrate", kbps)
            .with("key-int-max", safety_interval)
            .with("option-string", "scenecut=0"),
        VideoEncoder::Openh264 => Node::new("openh264enc")
            .with("bitrate", u64::from(kbps) * 1000)
            .with("gop-size", safety_interval),
        VideoEncoder::Va => Node::new("vah264enc")
            .with("bitrate", kbps)
            .with("key-int-max", safety_interval)
            .with("b-frames", 0u32),
        VideoEncoder::Vaapi => Node::new("vaapih264enc")
            .with("bitrate", kbps)
            .with("keyframe-period", safety_interval)
            .with("max-bframes", 0u32),
        VideoEncoder::Nvenc => Node::new("nvh264enc")
            .with("bitrate", kbps)
            .with("gop-size", safety_interval as i64)
            .with("bframes", 0u32)
            .with("zerolatency", true),
        // Real time (deadline 1 µs: as fast as it goes), constant bitrate, two threads.
        VideoEncoder::Vp9 => Node::new("vp9enc")
            .with("deadline", 1i64)
            .with("cpu-used", 8i64)
            .with("end-usage", word("cbr"))
            .with("target-bitrate", kbps * 1000)
            .with("keyframe-max-dist", safety_interval)
            .with("threads", 2i64)
            .with("row-mt", true),
    }
    .named(encoder_name(track));
    let mut chain = vec![
        Node::From(VIDEO_TEE.into()),
        Node::new("queue")
            .with("max-size-buffers", 0u32)
            .with("max-size-bytes", 0u32)
            .with("max-size-time", channel.segment.as_nanos() as u64),
        Node::new("videoscale"),
        Node::new("videoconvert"),
        Node::Caps(format!(
            "video/x-raw,width={},height={},format=I420",
            rendition.width, rendition.height
        )),
        encode,
    ];
    // The parsers give the muxer what it needs in the caps: H.264's codec data; VP9's profile,
    // chroma format and bit depth.
    chain.push(Node::new(match encoder {
        VideoEncoder::Vp9 => "vp9parse",
        _ => "h264parse",
    }));
    chain.extend(cmaf_tail(channel, track, encoder.muxer()));
    chain
}

/// The fragmented-MP4 muxer (`cmafmux`, or `isofmp4mux` for codecs CMAF lacks) cutting where
/// the runtime says (manual split on the UTC grid), then the appsink.
fn cmaf_tail(channel: &Channel, track: &str, muxer: &'static str) -> [Node; 2] {
    let segment_ns = channel.segment.as_nanos() as u64;
    [
        Node::new(muxer)
            .named(muxer_name(track))
            .with("fragment-duration", segment_ns)
            .with(
                "chunk-duration",
                segment_ns / u64::from(channel.parts_per_segment),
            )
            .with("manual-split", true)
            .with("send-force-keyunit", false)
            .with("header-update-mode", word("none")),
        Node::new("appsink")
            .named(sink_name(track))
            .with("sync", false)
            .with("async", false)
            .with("buffer-list", true)
            .with("emit-signals", false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AudioCodecs, ChannelSpec, SourceKind, VideoCodec};

    const X264_AAC: Encoders = Encoders {
        video: Some(VideoEncoder::X264),
        audio: Some("avenc_aac"),
    };

    fn channel(spec: ChannelSpec) -> Channel {
        spec.validate().unwrap()
    }

    #[test]
    fn test_source_makes_a_ladder_of_two_and_one_audio_track() {
        let plan = plan_channel(&channel(ChannelSpec::default()), X264_AAC);
        let launch = plan.to_string();
        assert!(
            launch.starts_with("videotestsrc name=source pattern=smpte"),
            "{launch}"
        );
        for track in ["v720", "v360", "a128"] {
            let mux = plan.find(&muxer_name(track)).expect(track);
            assert_eq!(mux.property("manual-split"), Some(&Value::Bool(true)));
            assert_eq!(
                mux.property("chunk-duration"),
                Some(&Value::Int(333_333_333))
            );
            assert!(plan.find(&sink_name(track)).is_some());
        }
        let encoder = plan.find(&encoder_name("v360")).unwrap();
        assert_eq!(encoder.factory(), Some("x264enc"));
        assert_eq!(
            encoder.property("tune"),
            Some(&Value::Word("zerolatency".into()))
        );
        assert_eq!(encoder.property("bitrate"), Some(&Value::Int(691)));
        assert!(launch.contains("video/x-raw,width=640,height=360,format=I420"));
        assert!(launch.contains("avenc_aac name=encode_a128 bitrate=128000 ! aacparse"));
        assert!(launch.contains("audioresample ! audiorate skip-to-first=true ! volume"));
        assert!(plan.find(CLOCK_OVERLAY).is_some());
        // The test pattern is not live: it is paced to the clock.
        assert!(plan.find(VIDEO_PACE).is_some() && plan.find(AUDIO_PACE).is_some());
    }

    #[test]
    fn an_mp3_track_branches_off_beside_the_main_audio() {
        let spec = ChannelSpec {
            audio: Some("aac,mp3".parse().unwrap()),
            ..Default::default()
        };
        let channel = channel(spec);
        let plan = plan_channel(&channel, X264_AAC);
        let launch = plan.to_string();
        assert!(
            launch.contains("channels=2\" ! tee name=audio_tee"),
            "{launch}"
        );
        assert!(
            launch.contains("audio_tee. ! queue ! avenc_aac name=encode_a128"),
            "{launch}"
        );
        assert!(
            launch.contains(
                "audio_tee. ! queue ! audioconvert ! lamemp3enc name=encode_mp3-128 target=bitrate bitrate=128 cbr=true ! mpegaudioparse ! appsink name=sink_mp3-128"
            ),
            "{launch}"
        );
        // Both audio tracks are sent; only the main one goes through cmafmux.
        let tracks: Vec<&str> = channel.tracks().map(|t| t.as_str()).collect();
        assert_eq!(tracks, ["v720", "v360", "a128", "mp3-128"]);
        assert!(plan.find(&muxer_name("mp3-128")).is_none());
        assert!(plan.factories().contains(&"lamemp3enc"));
    }

    #[test]
    fn vp9_goes_through_isofmp4mux() {
        let spec = ChannelSpec {
            video_codec: Some(VideoCodec::Vp9),
            audio: Some("opus".parse().unwrap()),
            ..Default::default()
        };
        let encoders = Encoders {
            video: Some(VideoEncoder::Vp9),
            audio: Some("opusenc"),
        };
        let plan = plan_channel(&channel(spec), encoders);
        let launch = plan.to_string();
        let mux = plan.find(&muxer_name("v360")).unwrap();
        assert_eq!(mux.factory(), Some("isofmp4mux"), "{launch}");
        assert_eq!(mux.property("manual-split"), Some(&Value::Bool(true)));
        assert!(
            launch.contains("vp9enc name=encode_v360 deadline=1 cpu-used=8 end-usage=cbr target-bitrate=691000 keyframe-max-dist=240"),
            "{launch}"
        );
        assert!(
            launch.contains("vp9parse ! isofmp4mux name=mux_v360"),
            "{launch}"
        );
        assert!(!launch.contains("h264parse"), "{launch}");
        // Audio stays CMAF.
        assert_eq!(
            plan.find(&muxer_name("a128")).unwrap().factory(),
            Some("cmafmux")
        );
    }

    #[test]
    fn file_source_is_decoded_and_paced() {
        let spec = ChannelSpec {
            source: Some(SourceKind::File),
            uri: Some("file:///media/loop.mp4".into()),
            renditions: Some(vec![360]),
            ..Default::default()
        };
        let plan = plan_channel(&channel(spec), X264_AAC);
        let launch = plan.to_string();
        assert!(launch.starts_with("uridecodebin name=source uri=file:///media/loop.mp4  "));
        assert!(launch.contains("source. ! video/x-raw ! queue ! clocksync name=video_pace"));
        assert!(launch.contains("source. ! audio/x-raw ! queue ! clocksync name=audio_pace"));
        assert!(plan.find(CLOCK_OVERLAY).is_none());
    }

    #[test]
    fn radio_has_no_video_chain() {
        let spec = ChannelSpec {
            source: Some(SourceKind::Alsa),
            device: Some("hw:1,0".into()),
            audio: Some(AudioCodecs(vec![AudioCodec::Opus])),
            ..Default::default()
        };
        let plan = plan_channel(
            &channel(spec),
            Encoders {
                video: None,
                audio: Some("opusenc"),
            },
        );
        assert_eq!(plan.chains.len(), 1);
        let launch = plan.to_string();
        assert!(
            launch.starts_with(r#"alsasrc name=source device="hw:1,0" ! queue"#),
            "{launch}"
        );
        assert!(plan.factories().contains(&"opusparse"));
        assert!(!plan.factories().contains(&"tee"));
    }

    #[test]
    fn every_encoder_gets_a_bitrate_and_a_keyframe_limit() {
        for encoder in VideoEncoder::BEST_FIRST {
            let plan = plan_channel(
                &channel(ChannelSpec::default()),
                Encoders {
                    video: Some(encoder),
                    audio: Some("opusenc"),
                },
            );
            let node = plan.find(&encoder_name("v720")).unwrap();
            assert_eq!(node.factory(), Some(encoder.element()));
            assert!(node.property("bitrate").is_some(), "{encoder:?}");
        }
    }

    #[test]
    fn text_is_quoted_for_gst_launch() {
        let spec = ChannelSpec {
            text: Some(r#"Live "now" \o/"#.into()),
            ..Default::default()
        };
        let launch = plan_channel(&channel(spec), X264_AAC).to_string();
        assert!(launch.contains(r#"text="Live \"now\" \\o/""#), "{launch}");
    }
}
