//! The public URL layout as a type: every path that origin and edge serve (DESIGN.md "Public
//! URL layout"), parsed from its one canonical spelling and written back the same way.
//!
//! A request is what [`PublicPath::parse`] makes of it, or nothing. The parser accepts only the
//! canonical form: no empty or dot segments, nothing escaped, names as [`ChannelName`] and
//! [`TrackName`] allow, numbers without leading zeros. So a path that needs a keycard has one
//! spelling, the one the keycard's ACL and the cache key are matched against; `//live/…`,
//! `/live/%64emo/…` or `/LIVE/…` are not that path, nor any other. Of the query, only the
//! parameters the layout defines are kept (LL-HLS's blocking-reload parameters, a continuous
//! stream's `track`); the rest, the keycard among them, is no part of what is asked for.

use std::fmt;

use super::{BadName, ChannelName, TrackName};

/// Paths longer than this are not of the layout (the longest real one is about 200 bytes).
pub const MAX_PATH: usize = 512;

/// One object of the public layout.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublicPath {
    /// `/live/{channel}/…`: the live window.
    Live {
        channel: ChannelName,
        object: LiveObject,
    },
    /// `/vod/{channel}/{start}-{end}/…`: the archive between two UTC seconds.
    Vod {
        channel: ChannelName,
        range: VodRange,
        object: VodObject,
    },
    /// `/healthz`: the node's mood.
    Health,
    /// `/metrics`: the node's counters, for Prometheus.
    Metrics,
    /// `/` and `/play/{channel}`: the player page.
    Player { channel: Option<ChannelName> },
    /// `/web/{script}`: a script of the player page.
    Script(Script),
}

/// What is asked for under `/live/{channel}/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LiveObject {
    /// `master.m3u8`: the HLS multivariant playlist (CMAF).
    Master,
    /// `{track}/media.m3u8`: the LL-HLS media playlist, maybe a blocking or delta request.
    MediaPlaylist {
        track: TrackName,
        blocking: Option<Blocking>,
        skip: Skip,
    },
    /// `{track}/init.mp4`: the CMAF header.
    Init { track: TrackName },
    /// `{track}/{msn}.m4s`: a CMAF segment.
    Segment { track: TrackName, msn: u64 },
    /// `{track}/{msn}.{part}.m4s`: a CMAF chunk, an LL-HLS part.
    Part {
        track: TrackName,
        msn: u64,
        part: u32,
    },
    /// `manifest.mpd`: DASH.
    Manifest,
    /// `ts/master.m3u8`: HLS with MPEG-TS segments.
    TsMaster,
    /// `ts/{track}/media.m3u8`.
    TsMediaPlaylist { track: TrackName },
    /// `ts/{track}/{msn}.ts`.
    TsSegment { track: TrackName, msn: u64 },
    /// `stream.{ext}`, with `?track=` choosing a rendition: a continuous stream.
    Stream {
        format: StreamFormat,
        track: Option<TrackName>,
    },
}

/// What is asked for under `/vod/{channel}/{start}-{end}/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VodObject {
    /// `master.m3u8`.
    Master,
    /// `{track}/media.m3u8`.
    MediaPlaylist { track: TrackName },
    /// `{track}/init-{number}.mp4`: the header in force from the archived segment `number`.
    Init { track: TrackName, number: u64 },
    /// `{track}/{msn}.m4s`.
    Segment { track: TrackName, msn: u64 },
}

/// An LL-HLS blocking request: answer once part `part` of segment `msn` exists (or, with no
/// part, the whole segment). RFC 8216bis 6.2.5.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Blocking {
    pub msn: u64,
    pub part: Option<u32>,
}

/// An LL-HLS delta update: `_HLS_skip=YES` (skip old segments) or `v2` (also their date-range
/// tags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Skip {
    #[default]
    No,
    Yes,
    V2,
}

/// The UTC seconds `[start, end)` of a VOD request; `end` is after `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VodRange {
    pub start: u64,
    pub end: u64,
}

/// The formats of `stream.{ext}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamFormat {
    /// MPEG-TS: video and its audio.
    Ts,
    /// Fragmented MP4.
    Mp4,
    /// WebM (VP8/VP9 and Opus).
    Webm,
    /// ADTS AAC, the audio alone.
    Aac,
    /// MPEG audio frames, from the channel's MP3 track.
    Mp3,
}

impl StreamFormat {
    pub const ALL: [StreamFormat; 5] = [
        StreamFormat::Ts,
        StreamFormat::Mp4,
        StreamFormat::Webm,
        StreamFormat::Aac,
        StreamFormat::Mp3,
    ];

    pub fn extension(self) -> &'static str {
        match self {
            StreamFormat::Ts => "ts",
            StreamFormat::Mp4 => "mp4",
            StreamFormat::Webm => "webm",
            StreamFormat::Aac => "aac",
            StreamFormat::Mp3 => "mp3",
        }
    }

    pub fn from_extension(extension: &str) -> Option<StreamFormat> {
        Self::ALL
            .into_iter()
            .find(|format| format.extension() == extension)
    }

    /// The media type of the stream, before any codecs parameter.
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Ts => "video/mp2t",
            StreamFormat::Mp4 => "video/mp4",
            StreamFormat::Webm => "video/webm",
            StreamFormat::Aac => "audio/aac",
            StreamFormat::Mp3 => "audio/mpeg",
        }
    }

    /// Audio-only streams that radio players read, which may carry ICY metadata.
    pub fn is_radio(self) -> bool {
        matches!(self, StreamFormat::Aac | StreamFormat::Mp3)
    }

    /// Whether the stream carries a video track when the channel has one.
    pub fn has_video(self) -> bool {
        matches!(
            self,
            StreamFormat::Ts | StreamFormat::Mp4 | StreamFormat::Webm
        )
    }
}

/// `stream.{extension}`: the stream's file name, as logs and reasons name it.
impl fmt::Display for StreamFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream.{}", self.extension())
    }
}

/// The player page's scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Script {
    Hls,
    Dash,
    Mpegts,
}

impl Script {
    pub const ALL: [Script; 3] = [Script::Hls, Script::Dash, Script::Mpegts];

    pub fn file_name(self) -> &'static str {
        match self {
            Script::Hls => "hls.min.js",
            Script::Dash => "dash.all.min.js",
            Script::Mpegts => "mpegts.js",
        }
    }
}

/// How caches may keep an object: the Cache-Control contract of DESIGN.md, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheClass {
    /// Segments, parts and headers never change once they exist.
    Immutable,
    /// Playlists and manifests change every part: caches may only coalesce them.
    Playlist,
    /// The answer to a blocking playlist request holds what it waited for: it stays a right
    /// answer to that request, and is never served from a stale copy.
    BlockingPlaylist,
    /// A continuous stream: never stored.
    Stream,
    /// The player page and its scripts.
    Page,
    /// The node's own state (health, metrics): never stored, never forwarded.
    Local,
}

impl CacheClass {
    /// The Cache-Control of a successful answer.
    pub fn cache_control(self) -> &'static str {
        match self {
            CacheClass::Immutable => "public, max-age=31536000, immutable",
            CacheClass::Playlist | CacheClass::BlockingPlaylist => "public, max-age=0",
            CacheClass::Stream | CacheClass::Local => "no-store",
            CacheClass::Page => "public, max-age=3600",
        }
    }

    /// The Cache-Control of a 404 for something that will exist soon (a segment ahead of the
    /// live edge): caches may keep it for a second.
    pub const NOT_YET: &'static str = "public, max-age=1";
}

/// Why a request is not a path of the public layout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublicPathError {
    #[error("the path is not in its canonical form: {0}")]
    NotCanonical(&'static str),
    #[error("nothing of the public layout is at this path")]
    NotInLayout,
    #[error(transparent)]
    BadName(#[from] BadName),
    #[error("the query parameter {parameter} {problem}")]
    BadQuery {
        parameter: &'static str,
        problem: &'static str,
    },
}

impl PublicPathError {
    /// The HTTP status that answers it: 400 for a path spelled other than canonically or a
    /// bad query, 404 for a well-formed path that names nothing of the layout.
    pub fn status(&self) -> u16 {
        match self {
            PublicPathError::NotCanonical(_) | PublicPathError::BadQuery { .. } => 400,
            PublicPathError::NotInLayout | PublicPathError::BadName(_) => 404,
        }
    }
}

impl VodRange {
    /// Whether a segment starting at `ticks` of a `timescale` clock starts inside the range.
    pub fn holds(&self, ticks: u64, timescale: u32) -> bool {
        let seconds = ticks / u64::from(timescale.max(1));
        (self.start..self.end).contains(&seconds)
    }
}

impl PublicPath {
    /// The channel the object belongs to, for `/live` and `/vod`.
    pub fn channel(&self) -> Option<&ChannelName> {
        match self {
            PublicPath::Live { channel, .. } | PublicPath::Vod { channel, .. } => Some(channel),
            PublicPath::Player { channel } => channel.as_ref(),
            _ => None,
        }
    }

    /// Media, which the bouncers guard: everything under `/live` and `/vod`.
    pub fn is_media(&self) -> bool {
        matches!(self, PublicPath::Live { .. } | PublicPath::Vod { .. })
    }

    /// The continuous stream asked for, if it is one.
    pub fn stream(&self) -> Option<(StreamFormat, Option<&TrackName>)> {
        match self {
            PublicPath::Live {
                object: LiveObject::Stream { format, track },
                ..
            } => Some((*format, track.as_ref())),
            _ => None,
        }
    }

    pub fn cache_class(&self) -> CacheClass {
        match self {
            PublicPath::Health | PublicPath::Metrics => CacheClass::Local,
            PublicPath::Player { .. } | PublicPath::Script(_) => CacheClass::Page,
            PublicPath::Live { object, .. } => match object {
                LiveObject::MediaPlaylist {
                    blocking: Some(_), ..
                } => CacheClass::BlockingPlaylist,
                LiveObject::Master
                | LiveObject::MediaPlaylist { .. }
                | LiveObject::Manifest
                | LiveObject::TsMaster
                | LiveObject::TsMediaPlaylist { .. } => CacheClass::Playlist,
                LiveObject::Init { .. }
                | LiveObject::Segment { .. }
                | LiveObject::Part { .. }
                | LiveObject::TsSegment { .. } => CacheClass::Immutable,
                LiveObject::Stream { .. } => CacheClass::Stream,
            },
            PublicPath::Vod { object, .. } => match object {
                VodObject::Master | VodObject::MediaPlaylist { .. } => CacheClass::Playlist,
                VodObject::Init { .. } | VodObject::Segment { .. } => CacheClass::Immutable,
            },
        }
    }

    /// Whether the answer is a playlist or manifest (text that names other objects, into
    /// which an edge carries a viewer's keycard).
    pub fn is_playlist(&self) -> bool {
        matches!(
            self.cache_class(),
            CacheClass::Playlist | CacheClass::BlockingPlaylist
        )
    }

    /// Whether the answer is a DASH manifest (rather than an HLS playlist).
    pub fn is_manifest(&self) -> bool {
        matches!(
            self,
            PublicPath::Live {
                object: LiveObject::Manifest,
                ..
            }
        )
    }

    /// The path alone, without the query: what a keycard's ACL is matched against.
    pub fn path(&self) -> String {
        let mut path = String::new();
        let _ = self.write_path(&mut path);
        path
    }

    fn write_path(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            PublicPath::Player { channel: None } => out.write_str("/"),
            PublicPath::Player {
                channel: Some(channel),
            } => write!(out, "/play/{channel}"),
            PublicPath::Health => out.write_str("/healthz"),
            PublicPath::Metrics => out.write_str("/metrics"),
            PublicPath::Script(script) => write!(out, "/web/{}", script.file_name()),
            PublicPath::Live { channel, object } => {
                write!(out, "/live/{channel}/")?;
                match object {
                    LiveObject::Master => out.write_str("master.m3u8"),
                    LiveObject::MediaPlaylist { track, .. } => write!(out, "{track}/media.m3u8"),
                    LiveObject::Init { track } => write!(out, "{track}/init.mp4"),
                    LiveObject::Segment { track, msn } => write!(out, "{track}/{msn}.m4s"),
                    LiveObject::Part { track, msn, part } => {
                        write!(out, "{track}/{msn}.{part}.m4s")
                    }
                    LiveObject::Manifest => out.write_str("manifest.mpd"),
                    LiveObject::TsMaster => out.write_str("ts/master.m3u8"),
                    LiveObject::TsMediaPlaylist { track } => write!(out, "ts/{track}/media.m3u8"),
                    LiveObject::TsSegment { track, msn } => write!(out, "ts/{track}/{msn}.ts"),
                    LiveObject::Stream { format, .. } => {
                        write!(out, "stream.{}", format.extension())
                    }
                }
            }
            PublicPath::Vod {
                channel,
                range,
                object,
            } => {
                write!(out, "/vod/{channel}/{}-{}/", range.start, range.end)?;
                match object {
                    VodObject::Master => out.write_str("master.m3u8"),
                    VodObject::MediaPlaylist { track } => write!(out, "{track}/media.m3u8"),
                    VodObject::Init { track, number } => write!(out, "{track}/init-{number}.mp4"),
                    VodObject::Segment { track, msn } => write!(out, "{track}/{msn}.m4s"),
                }
            }
        }
    }

    fn write_query(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let PublicPath::Live { object, .. } = self else {
            return Ok(());
        };
        let mut separator = '?';
        let mut parameter = |out: &mut dyn fmt::Write, name: &str, value: &dyn fmt::Display| {
            let written = write!(out, "{separator}{name}={value}");
            separator = '&';
            written
        };
        match object {
            LiveObject::MediaPlaylist { blocking, skip, .. } => {
                if let Some(blocking) = blocking {
                    parameter(out, "_HLS_msn", &blocking.msn)?;
                    if let Some(part) = blocking.part {
                        parameter(out, "_HLS_part", &part)?;
                    }
                }
                match skip {
                    Skip::No => Ok(()),
                    Skip::Yes => parameter(out, "_HLS_skip", &"YES"),
                    Skip::V2 => parameter(out, "_HLS_skip", &"v2"),
                }
            }
            LiveObject::Stream {
                track: Some(track), ..
            } => parameter(out, "track", track),
            _ => Ok(()),
        }
    }
}

/// The canonical request target: the path, then the query parameters the layout defines, in
/// a fixed order. Two requests for the same object write the same text (a cache key).
impl fmt::Display for PublicPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_path(f)?;
        self.write_query(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(target: &str) -> Result<PublicPath, PublicPathError> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        PublicPath::parse(path, query)
    }

    fn channel() -> ChannelName {
        ChannelName::new("demo").unwrap()
    }

    fn track(name: &str) -> TrackName {
        TrackName::new(name).unwrap()
    }

    #[test]
    fn every_row_of_the_layout_parses_and_writes_back() {
        let live = |object| PublicPath::Live {
            channel: channel(),
            object,
        };
        let range = VodRange {
            start: 1_795_219_200,
            end: 1_795_219_260,
        };
        let vod = |object| PublicPath::Vod {
            channel: channel(),
            range,
            object,
        };
        let rows = [
            ("/live/demo/master.m3u8", live(LiveObject::Master)),
            (
                "/live/demo/v720/media.m3u8",
                live(LiveObject::MediaPlaylist {
                    track: track("v720"),
                    blocking: None,
                    skip: Skip::No,
                }),
            ),
            (
                "/live/demo/v720/media.m3u8?_HLS_msn=897609600&_HLS_part=3&_HLS_skip=YES",
                live(LiveObject::MediaPlaylist {
                    track: track("v720"),
                    blocking: Some(Blocking {
                        msn: 897_609_600,
                        part: Some(3),
                    }),
                    skip: Skip::Yes,
                }),
            ),
            (
                "/live/demo/a128/init.mp4",
                live(LiveObject::Init {
                    track: track("a128"),
                }),
            ),
            (
                "/live/demo/v720/897609600.m4s",
                live(LiveObject::Segment {
                    track: track("v720"),
                    msn: 897_609_600,
                }),
            ),
            (
                "/live/demo/v720/897609600.0.m4s",
                live(LiveObject::Part {
                    track: track("v720"),
                    msn: 897_609_600,
                    part: 0,
                }),
            ),
            ("/live/demo/manifest.mpd", live(LiveObject::Manifest)),
            ("/live/demo/ts/master.m3u8", live(LiveObject::TsMaster)),
            (
                "/live/demo/ts/v360/media.m3u8",
                live(LiveObject::TsMediaPlaylist {
                    track: track("v360"),
                }),
            ),
            (
                "/live/demo/ts/v360/12.ts",
                live(LiveObject::TsSegment {
                    track: track("v360"),
                    msn: 12,
                }),
            ),
            (
                "/live/demo/stream.mp3",
                live(LiveObject::Stream {
                    format: StreamFormat::Mp3,
                    track: None,
                }),
            ),
            (
                "/live/demo/stream.ts?track=v360",
                live(LiveObject::Stream {
                    format: StreamFormat::Ts,
                    track: Some(track("v360")),
                }),
            ),
            (
                "/vod/demo/1795219200-1795219260/master.m3u8",
                vod(VodObject::Master),
            ),
            (
                "/vod/demo/1795219200-1795219260/v720/media.m3u8",
                vod(VodObject::MediaPlaylist {
                    track: track("v720"),
                }),
            ),
            (
                "/vod/demo/1795219200-1795219260/v720/init-897609600.mp4",
                vod(VodObject::Init {
                    track: track("v720"),
                    number: 897_609_600,
                }),
            ),
            (
                "/vod/demo/1795219200-1795219260/v720/897609600.m4s",
                vod(VodObject::Segment {
                    track: track("v720"),
                    msn: 897_609_600,
                }),
            ),
            ("/healthz", PublicPath::Health),
            ("/metrics", PublicPath::Metrics),
            ("/", PublicPath::Player { channel: None }),
            (
                "/play/demo",
                PublicPath::Player {
                    channel: Some(channel()),
                },
            ),
            ("/web/hls.min.js", PublicPath::Script(Script::Hls)),
            ("/web/dash.all.min.js", PublicPath::Script(Script::Dash)),
            ("/web/mpegts.js", PublicPath::Script(Script::Mpegts)),
        ];
        for (target, expected) in rows {
            assert_eq!(parse(target), Ok(expected.clone()), "{target}");
            assert_eq!(expected.to_string(), target);
        }
    }

    #[test]
    fn other_spellings_of_a_protected_path_are_not_it() {
        for target in [
            "//live/demo/master.m3u8",
            "///live/demo/master.m3u8",
            "/live//demo/master.m3u8",
            "/live/demo//master.m3u8",
            "/live/demo/master.m3u8/",
            "/live/%64emo/master.m3u8",
            "/live%2fdemo/master.m3u8",
            "/live/demo/%2e/master.m3u8",
            "/live/demo/./master.m3u8",
            "/live/demo/../demo/master.m3u8",
            "/live/demo/x/../master.m3u8",
            "/live/%252fdemo/master.m3u8",
            "/live/demo/master.m3u8;x=1",
            "/live;/demo/master.m3u8",
            "/live\\demo\\master.m3u8",
            "/LIVE/demo/master.m3u8",
            "/Live/demo/master.m3u8",
            "/live/demo/MASTER.m3u8",
            "/live/demo/master.M3U8",
            "http://edge/live/demo/master.m3u8",
            "live/demo/master.m3u8",
            "/live/demo/v720/0897609600.m4s",
            "/live/demo/v720/+1.m4s",
            "/live/demo/v720/1.01.m4s",
            "/live/demo/v720/1..m4s",
            "/live/demo/v720/1.2.3.m4s",
            "/live/demo/stream.ogg",
            "/live/demo/stream.",
            "/live/demo /master.m3u8",
            "/live/demo/master.m3u8\0",
            "/vod/demo/60-0/master.m3u8",
            "/vod/demo/060-100/master.m3u8",
            "//vod/demo/0-60/master.m3u8",
            "/vod/demo/0-60/../../live/demo/master.m3u8",
            "/admin/metadata",
            "/ingest/demo/v720",
            "/web/../../etc/passwd",
            "/web/other.js",
        ] {
            assert!(parse(target).is_err(), "{target} parsed");
        }
        let long = format!("/live/{}/master.m3u8", "a".repeat(MAX_PATH));
        assert!(parse(&long).is_err());
    }

    #[test]
    fn only_the_layouts_query_parameters_count() {
        let plain = parse("/live/demo/v720/1.m4s").unwrap();
        assert_eq!(parse("/live/demo/v720/1.m4s?x=1&keycard=abc"), Ok(plain));
        let playlist = parse("/live/demo/v720/media.m3u8?_HLS_part=2&cb=9&_HLS_msn=5").unwrap();
        assert_eq!(
            playlist.to_string(),
            "/live/demo/v720/media.m3u8?_HLS_msn=5&_HLS_part=2"
        );
        // A parameter of another object is no part of this one.
        assert_eq!(
            parse("/live/demo/master.m3u8?track=v720&_HLS_msn=1")
                .unwrap()
                .to_string(),
            "/live/demo/master.m3u8"
        );
        for (target, status) in [
            ("/live/demo/v720/media.m3u8?_HLS_msn=x", 400),
            ("/live/demo/v720/media.m3u8?_HLS_msn=1&_HLS_msn=2", 400),
            ("/live/demo/v720/media.m3u8?_HLS_part=1", 400),
            (
                "/live/demo/v720/media.m3u8?_HLS_msn=1&_HLS_part=99999999999",
                400,
            ),
            ("/live/demo/v720/media.m3u8?_HLS_skip=no", 400),
            ("/live/demo/stream.ts?track=../v1", 404),
            ("/live/demo/stream.ts?track=", 404),
            ("/live/demo/stream.ts?track=%76360", 404),
        ] {
            let error = parse(target).unwrap_err();
            assert_eq!(error.status(), status, "{target}: {error}");
        }
    }

    #[test]
    fn cache_classes_follow_the_contract() {
        let class = |target: &str| parse(target).unwrap().cache_class();
        assert_eq!(class("/live/demo/v720/1.m4s"), CacheClass::Immutable);
        assert_eq!(class("/live/demo/v720/1.2.m4s"), CacheClass::Immutable);
        assert_eq!(class("/live/demo/master.m3u8"), CacheClass::Playlist);
        assert_eq!(
            class("/live/demo/v720/media.m3u8?_HLS_msn=1"),
            CacheClass::BlockingPlaylist
        );
        assert_eq!(class("/live/demo/stream.mp3"), CacheClass::Stream);
        assert_eq!(class("/metrics"), CacheClass::Local);
        assert!(parse("/live/demo/manifest.mpd").unwrap().is_manifest());
        assert!(parse("/vod/demo/1-2/v1/media.m3u8").unwrap().is_playlist());
        assert!(!parse("/web/mpegts.js").unwrap().is_media());
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,64}"
    }

    fn any_track() -> impl Strategy<Value = TrackName> {
        name().prop_map(|name| TrackName::new(&name).unwrap())
    }

    fn live_object() -> impl Strategy<Value = LiveObject> {
        prop_oneof![
            Just(LiveObject::Master),
            Just(LiveObject::Manifest),
            Just(LiveObject::TsMaster),
            (
                any_track(),
                proptest::option::of((any::<u64>(), proptest::option::of(any::<u32>()))),
                prop_oneof![Just(Skip::No), Just(Skip::Yes), Just(Skip::V2)]
            )
                .prop_map(|(track, blocking, skip)| LiveObject::MediaPlaylist {
                    track,
                    blocking: blocking.map(|(msn, part)| Blocking { msn, part }),
                    skip
                }),
            any_track().prop_map(|track| LiveObject::Init { track }),
            (any_track(), any::<u64>()).prop_map(|(track, msn)| LiveObject::Segment { track, msn }),
            (any_track(), any::<u64>(), any::<u32>())
                .prop_map(|(track, msn, part)| LiveObject::Part { track, msn, part }),
            any_track().prop_map(|track| LiveObject::TsMediaPlaylist { track }),
            (any_track(), any::<u64>())
                .prop_map(|(track, msn)| LiveObject::TsSegment { track, msn }),
            (
                proptest::sample::select(StreamFormat::ALL.to_vec()),
                proptest::option::of(any_track())
            )
                .prop_map(|(format, track)| LiveObject::Stream { format, track }),
        ]
    }

    fn vod_object() -> impl Strategy<Value = VodObject> {
        prop_oneof![
            Just(VodObject::Master),
            any_track().prop_map(|track| VodObject::MediaPlaylist { track }),
            (any_track(), any::<u64>())
                .prop_map(|(track, number)| VodObject::Init { track, number }),
            (any_track(), any::<u64>()).prop_map(|(track, msn)| VodObject::Segment { track, msn }),
        ]
    }

    fn public_path() -> impl Strategy<Value = PublicPath> {
        let channel = || name().prop_map(|name| ChannelName::new(&name).unwrap());
        prop_oneof![
            (channel(), live_object())
                .prop_map(|(channel, object)| PublicPath::Live { channel, object }),
            (channel(), 0..1u64 << 40, vod_object()).prop_map(|(channel, start, object)| {
                PublicPath::Vod {
                    channel,
                    range: VodRange {
                        start,
                        end: start + 1 + start % 7200,
                    },
                    object,
                }
            }),
            Just(PublicPath::Health),
            Just(PublicPath::Metrics),
            proptest::option::of(channel()).prop_map(|channel| PublicPath::Player { channel }),
            proptest::sample::select(Script::ALL.to_vec()).prop_map(PublicPath::Script),
        ]
    }

    proptest! {
        #[test]
        fn parse_undoes_display(path in public_path()) {
            let written = path.to_string();
            prop_assert_eq!(parse(&written), Ok(path));
        }

        #[test]
        fn what_parses_is_written_back_as_it_came(target in "/[a-z0-9./_%;-]{0,40}") {
            if let Ok(path) = parse(&target) {
                prop_assert_eq!(path.to_string(), target);
            }
        }

        #[test]
        fn nothing_panics(path in "\\PC{0,80}", query in proptest::option::of("\\PC{0,80}")) {
            let _ = PublicPath::parse(&path, query.as_deref());
        }
    }
}
