//! What this machine's GStreamer can do: which elements exist, which Debian package ships each
//! one, which encoder is the best available, and the `--probe` report that shows it all.

use std::fmt::Write as _;

use crate::IngestError;
use crate::config::{AudioCodec, EncoderPreference, SourceKind, VideoCodec};

/// The Debian package that ships each element Estuary may use.
const PACKAGES: &[(&str, &str)] = &[
    ("videotestsrc", "gstreamer1.0-plugins-base"),
    ("audiotestsrc", "gstreamer1.0-plugins-base"),
    ("uridecodebin", "gstreamer1.0-plugins-base"),
    ("decodebin", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("videoscale", "gstreamer1.0-plugins-base"),
    ("videorate", "gstreamer1.0-plugins-base"),
    ("audioconvert", "gstreamer1.0-plugins-base"),
    ("audioresample", "gstreamer1.0-plugins-base"),
    ("audiorate", "gstreamer1.0-plugins-base"),
    ("volume", "gstreamer1.0-plugins-base"),
    ("textoverlay", "gstreamer1.0-x"),
    ("opusenc", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
    ("alsasrc", "gstreamer1.0-alsa"),
    ("pulsesrc", "gstreamer1.0-pulseaudio"),
    ("v4l2src", "gstreamer1.0-plugins-good"),
    ("rtspsrc", "gstreamer1.0-plugins-good"),
    ("aacparse", "gstreamer1.0-plugins-good"),
    ("lamemp3enc", "gstreamer1.0-plugins-good"),
    ("mpegaudioparse", "gstreamer1.0-plugins-good"),
    ("srtsrc", "gstreamer1.0-plugins-bad"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("opusparse", "gstreamer1.0-plugins-bad"),
    ("vp9parse", "gstreamer1.0-plugins-bad"),
    ("vah264enc", "gstreamer1.0-plugins-bad"),
    ("nvh264enc", "gstreamer1.0-plugins-bad"),
    ("openh264enc", "gstreamer1.0-plugins-bad"),
    ("fdkaacenc", "gstreamer1.0-plugins-bad"),
    ("voaacenc", "gstreamer1.0-plugins-bad"),
    ("vaapih264enc", "gstreamer1.0-vaapi"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("vp9enc", "gstreamer1.0-plugins-good"),
    ("avenc_aac", "gstreamer1.0-libav"),
    ("queue", "libgstreamer1.0-0"),
    ("tee", "libgstreamer1.0-0"),
    ("capsfilter", "libgstreamer1.0-0"),
    ("clocksync", "libgstreamer1.0-0"),
    ("identity", "libgstreamer1.0-0"),
];

pub fn debian_package(element: &str) -> &'static str {
    PACKAGES
        .iter()
        .find(|(name, _)| *name == element)
        .map_or("the GStreamer plugin packages", |(_, package)| package)
}

/// Elements whose plugin registers them only when the hardware works.
fn hardware_needed(element: &str) -> Option<&'static str> {
    match element {
        "vah264enc" | "vaapih264enc" => Some("a VA-API GPU (Intel, AMD)"),
        "nvh264enc" => Some("an NVIDIA GPU with CUDA"),
        _ => None,
    }
}

/// How `--probe` shows an element: present, or what it takes to get it.
fn availability(element: &str) -> String {
    match (has_element(element), hardware_needed(element)) {
        (true, _) => format!("{element} ok"),
        (false, Some(hardware)) => {
            format!(
                "{element} missing (needs {hardware} and {})",
                debian_package(element)
            )
        }
        (false, None) => format!(
            "{element} missing (apt install {})",
            debian_package(element)
        ),
    }
}

pub fn has_element(element: &str) -> bool {
    gst::ElementFactory::find(element).is_some()
}

/// Checks that `element` exists, naming the package to install when it does not.
pub fn require(element: &str) -> Result<(), IngestError> {
    if has_element(element) {
        Ok(())
    } else {
        Err(IngestError::MissingElement {
            element: element.to_owned(),
            package: debian_package(element),
        })
    }
}

/// Video encoders: H.264 ones (best first), and VP9's (for WebM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoEncoder {
    Va,
    Vaapi,
    Nvenc,
    X264,
    Openh264,
    Vp9,
}

impl VideoEncoder {
    pub const BEST_FIRST: [VideoEncoder; 5] = [
        VideoEncoder::Va,
        VideoEncoder::Vaapi,
        VideoEncoder::Nvenc,
        VideoEncoder::X264,
        VideoEncoder::Openh264,
    ];

    pub fn element(self) -> &'static str {
        match self {
            VideoEncoder::Va => "vah264enc",
            VideoEncoder::Vaapi => "vaapih264enc",
            VideoEncoder::Nvenc => "nvh264enc",
            VideoEncoder::X264 => "x264enc",
            VideoEncoder::Openh264 => "openh264enc",
            VideoEncoder::Vp9 => "vp9enc",
        }
    }

    /// The muxer for its track: cmafmux takes H.264; VP9 goes into the same fragmented MP4
    /// through isofmp4mux (cmafmux takes no VP9).
    pub fn muxer(self) -> &'static str {
        match self {
            VideoEncoder::Vp9 => "isofmp4mux",
            _ => "cmafmux",
        }
    }

    fn allowed_by(self, preference: EncoderPreference) -> bool {
        match preference {
            EncoderPreference::Auto => true,
            EncoderPreference::Va => matches!(self, VideoEncoder::Va | VideoEncoder::Vaapi),
            EncoderPreference::Nvenc => self == VideoEncoder::Nvenc,
            EncoderPreference::X264 => self == VideoEncoder::X264,
            EncoderPreference::Openh264 => self == VideoEncoder::Openh264,
        }
    }

    /// The encoder of `codec`: for H.264 the best this machine has among those `preference`
    /// allows (hardware encoders' plugins only register their elements when a usable device is
    /// present, so an element that exists is one that can run); VP9 has one.
    pub fn choose(codec: VideoCodec, preference: EncoderPreference) -> Result<Self, IngestError> {
        let only = match codec {
            VideoCodec::H264 => None,
            VideoCodec::Vp9 => Some(VideoEncoder::Vp9),
        };
        if let Some(encoder) = only {
            return if has_element(encoder.element()) {
                Ok(encoder)
            } else {
                Err(IngestError::NoEncoder {
                    wanted: format!("{codec:?}").to_lowercase(),
                    options: describe_options([encoder.element()].into_iter()),
                })
            };
        }
        let allowed: Vec<_> = Self::BEST_FIRST
            .into_iter()
            .filter(|encoder| encoder.allowed_by(preference))
            .collect();
        allowed
            .iter()
            .copied()
            .find(|encoder| has_element(encoder.element()))
            .ok_or_else(|| IngestError::NoEncoder {
                wanted: format!("{preference:?} H.264").to_lowercase(),
                options: describe_options(allowed.iter().map(|encoder| encoder.element())),
            })
    }
}

/// Audio encoders for a codec, best first.
pub fn audio_encoders(codec: AudioCodec) -> &'static [&'static str] {
    match codec {
        AudioCodec::Aac => &["fdkaacenc", "avenc_aac", "voaacenc"],
        AudioCodec::Opus => &["opusenc"],
        AudioCodec::Mp3 => &["lamemp3enc"],
        AudioCodec::None => &[],
    }
}

pub fn choose_audio_encoder(codec: AudioCodec) -> Result<&'static str, IngestError> {
    let candidates = audio_encoders(codec);
    candidates
        .iter()
        .copied()
        .find(|element| has_element(element))
        .ok_or_else(|| IngestError::NoEncoder {
            wanted: format!("{codec:?}").to_lowercase(),
            options: describe_options(candidates.iter().copied()),
        })
}

fn describe_options<'a>(elements: impl Iterator<Item = &'a str>) -> String {
    elements
        .map(|element| format!("{element} ({})", debian_package(element)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The elements each kind of source needs.
pub fn source_elements(kind: SourceKind) -> &'static [&'static str] {
    match kind {
        SourceKind::Test => &["videotestsrc", "audiotestsrc", "clocksync"],
        SourceKind::File => &["uridecodebin", "clocksync"],
        SourceKind::V4l2 => &["v4l2src", "decodebin"],
        SourceKind::Alsa => &["alsasrc"],
        SourceKind::Pulse => &["pulsesrc"],
        SourceKind::Srt => &["uridecodebin", "srtsrc"],
        SourceKind::Rtsp => &["uridecodebin", "rtspsrc"],
    }
}

/// The `estuary ingest --probe` report: sources, devices, encoders and the muxer.
pub fn probe_report() -> String {
    use clap::ValueEnum as _;

    let mut out = String::new();
    let (major, minor, micro, _) = gst::version();
    let _ = writeln!(out, "GStreamer {major}.{minor}.{micro}");
    let mark = availability;

    let _ = writeln!(out, "\nsources:");
    for kind in SourceKind::value_variants() {
        let name = kind
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        let elements: Vec<String> = source_elements(*kind).iter().map(|e| mark(e)).collect();
        let _ = writeln!(out, "  {name:<6} {}", elements.join(", "));
    }

    let _ = writeln!(out, "\ndevices:");
    use gst::prelude::*;
    let monitor = gst::DeviceMonitor::new();
    monitor.add_filter(Some("Video/Source"), None);
    monitor.add_filter(Some("Audio/Source"), None);
    let devices = match monitor.start() {
        Ok(()) => {
            let devices = monitor.devices();
            monitor.stop();
            devices
        }
        Err(_) => Default::default(),
    };
    if devices.is_empty() {
        let _ = writeln!(
            out,
            "  none found (no capture cards, webcams or sound cards)"
        );
    }
    for device in devices {
        let properties = device.properties();
        let path = properties
            .as_ref()
            .and_then(|p| {
                [
                    "api.v4l2.path",
                    "device.path",
                    "alsa.card_name",
                    "node.name",
                ]
                .iter()
                .find_map(|key| p.get::<String>(*key).ok())
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<13} {:<24} {}",
            device.device_class(),
            path,
            device.display_name()
        );
    }

    let _ = writeln!(out, "\nH.264 encoders, best first:");
    let chosen = VideoEncoder::choose(VideoCodec::H264, EncoderPreference::Auto).ok();
    for encoder in VideoEncoder::BEST_FIRST {
        let arrow = if Some(encoder) == chosen {
            "  <- chosen"
        } else {
            ""
        };
        let _ = writeln!(out, "  {}{arrow}", mark(encoder.element()));
    }

    let _ = writeln!(
        out,
        "\nVP9 encoder (for WebM):\n  {}",
        mark(VideoEncoder::Vp9.element())
    );

    let _ = writeln!(out, "\naudio encoders, best first:");
    for codec in [AudioCodec::Aac, AudioCodec::Opus, AudioCodec::Mp3] {
        let chosen = choose_audio_encoder(codec).ok();
        let listed: Vec<String> = audio_encoders(codec)
            .iter()
            .map(|e| {
                let arrow = if Some(*e) == chosen { " <- chosen" } else { "" };
                format!("{}{arrow}", mark(e))
            })
            .collect();
        let _ = writeln!(
            out,
            "  {:<5} {}",
            format!("{codec:?}").to_lowercase(),
            listed.join(", ")
        );
    }

    let _ = writeln!(
        out,
        "\nmuxers:\n  {} and {} (gst-plugin-fmp4, built in)",
        mark("cmafmux"),
        mark("isofmp4mux")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_a_plan_uses_has_a_package() {
        for kind in SourceKind::value_variants_for_tests() {
            for element in source_elements(kind) {
                assert_ne!(
                    debian_package(element),
                    "the GStreamer plugin packages",
                    "{element}"
                );
            }
        }
        for encoder in VideoEncoder::BEST_FIRST {
            assert!(debian_package(encoder.element()).starts_with("gstreamer1.0-"));
        }
    }

    impl SourceKind {
        fn value_variants_for_tests() -> Vec<SourceKind> {
            use clap::ValueEnum as _;
            SourceKind::value_variants().to_vec()
        }
    }

    #[test]
    fn preferences_narrow_the_candidates() {
        assert!(VideoEncoder::Vaapi.allowed_by(EncoderPreference::Va));
        assert!(!VideoEncoder::X264.allowed_by(EncoderPreference::Nvenc));
        assert!(
            VideoEncoder::BEST_FIRST
                .iter()
                .all(|e| e.allowed_by(EncoderPreference::Auto))
        );
    }
}
