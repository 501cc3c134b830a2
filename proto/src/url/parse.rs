//! Parsing the public layout's one canonical spelling: the path checked for canonical form
//! first (length, characters, empty and dot segments), then matched against the layout's
//! shapes; of the query, the parameters the layout defines, each at most once.

use super::public::{
    Blocking, LiveObject, MAX_PATH, PublicPath, PublicPathError, Script, Skip, StreamFormat,
    VodObject, VodRange,
};
use super::{ChannelName, TrackName};

impl PublicPath {
    /// Parses a request's path and query. Only the canonical spelling of a path is accepted;
    /// of the query, the parameters the layout defines for that object are read (and must be
    /// well formed, and given once) and every other parameter is ignored.
    pub fn parse(path: &str, query: Option<&str>) -> Result<PublicPath, PublicPathError> {
        let segments = canonical_segments(path)?;
        let query = Query::parse(query)?;
        let parsed = match segments.as_slice() {
            [""] => PublicPath::Player { channel: None },
            ["healthz"] => PublicPath::Health,
            ["metrics"] => PublicPath::Metrics,
            ["play", channel] => PublicPath::Player {
                channel: Some(ChannelName::new(channel)?),
            },
            ["web", script] => PublicPath::Script(
                Script::ALL
                    .into_iter()
                    .find(|s| s.file_name() == *script)
                    .ok_or(PublicPathError::NotInLayout)?,
            ),
            ["live", channel, rest @ ..] => PublicPath::Live {
                channel: ChannelName::new(channel)?,
                object: LiveObject::parse(rest, &query)?,
            },
            ["vod", channel, range, rest @ ..] => PublicPath::Vod {
                channel: ChannelName::new(channel)?,
                range: VodRange::parse(range)?,
                object: VodObject::parse(rest)?,
            },
            _ => return Err(PublicPathError::NotInLayout),
        };
        Ok(parsed)
    }
}

impl LiveObject {
    fn parse(rest: &[&str], query: &Query) -> Result<LiveObject, PublicPathError> {
        let object = match rest {
            ["master.m3u8"] => LiveObject::Master,
            ["manifest.mpd"] => LiveObject::Manifest,
            ["ts", "master.m3u8"] => LiveObject::TsMaster,
            ["ts", track, "media.m3u8"] => LiveObject::TsMediaPlaylist {
                track: TrackName::new(track)?,
            },
            ["ts", track, file] => LiveObject::TsSegment {
                track: TrackName::new(track)?,
                msn: file
                    .strip_suffix(".ts")
                    .and_then(canonical_number)
                    .ok_or(PublicPathError::NotInLayout)?,
            },
            [file] => {
                let format = file
                    .strip_prefix("stream.")
                    .and_then(StreamFormat::from_extension)
                    .ok_or(PublicPathError::NotInLayout)?;
                let track = query.track.map(TrackName::new).transpose()?;
                LiveObject::Stream { format, track }
            }
            [track, "media.m3u8"] => {
                let blocking = match (query.msn, query.part) {
                    (Some(msn), part) => Some(Blocking { msn, part }),
                    (None, Some(_)) => {
                        return Err(PublicPathError::BadQuery {
                            parameter: "_HLS_part",
                            problem: "needs _HLS_msn",
                        });
                    }
                    (None, None) => None,
                };
                LiveObject::MediaPlaylist {
                    track: TrackName::new(track)?,
                    blocking,
                    skip: query.skip,
                }
            }
            [track, "init.mp4"] => LiveObject::Init {
                track: TrackName::new(track)?,
            },
            [track, file] => {
                let track = TrackName::new(track)?;
                let stem = file
                    .strip_suffix(".m4s")
                    .ok_or(PublicPathError::NotInLayout)?;
                match stem.split_once('.') {
                    None => LiveObject::Segment {
                        track,
                        msn: canonical_number(stem).ok_or(PublicPathError::NotInLayout)?,
                    },
                    Some((msn, part)) => LiveObject::Part {
                        track,
                        msn: canonical_number(msn).ok_or(PublicPathError::NotInLayout)?,
                        part: canonical_number(part)
                            .and_then(|part| u32::try_from(part).ok())
                            .ok_or(PublicPathError::NotInLayout)?,
                    },
                }
            }
            _ => return Err(PublicPathError::NotInLayout),
        };
        Ok(object)
    }
}

impl VodObject {
    fn parse(rest: &[&str]) -> Result<VodObject, PublicPathError> {
        let object = match rest {
            ["master.m3u8"] => VodObject::Master,
            [track, "media.m3u8"] => VodObject::MediaPlaylist {
                track: TrackName::new(track)?,
            },
            [track, file] => {
                let track = TrackName::new(track)?;
                if let Some(number) = file.strip_prefix("init-") {
                    VodObject::Init {
                        track,
                        number: number
                            .strip_suffix(".mp4")
                            .and_then(canonical_number)
                            .ok_or(PublicPathError::NotInLayout)?,
                    }
                } else {
                    VodObject::Segment {
                        track,
                        msn: file
                            .strip_suffix(".m4s")
                            .and_then(canonical_number)
                            .ok_or(PublicPathError::NotInLayout)?,
                    }
                }
            }
            _ => return Err(PublicPathError::NotInLayout),
        };
        Ok(object)
    }
}

impl VodRange {
    /// `{start}-{end}` in UTC seconds, `end` after `start`.
    pub fn parse(text: &str) -> Result<VodRange, PublicPathError> {
        let (start, end) = text
            .split_once('-')
            .and_then(|(start, end)| Some((canonical_number(start)?, canonical_number(end)?)))
            .ok_or(PublicPathError::NotInLayout)?;
        if end <= start {
            return Err(PublicPathError::NotInLayout);
        }
        Ok(VodRange { start, end })
    }
}

/// The path's segments after the leading `/`, once the path is known to be canonical.
fn canonical_segments(path: &str) -> Result<Vec<&str>, PublicPathError> {
    if path.len() > MAX_PATH {
        return Err(PublicPathError::NotCanonical(
            "longer than any path of the layout",
        ));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PublicPathError::NotCanonical("it does not start with /"));
    };
    // Names and file names use these alone: anything escaped, a `;`, a backslash or a space
    // is another spelling, never the path itself.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/');
    if !rest.bytes().all(allowed) {
        return Err(PublicPathError::NotCanonical(
            "it holds a character other than letters, digits, '-', '_', '.' and '/'",
        ));
    }
    if rest.is_empty() {
        return Ok(vec![""]);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return Err(PublicPathError::NotCanonical("it has an empty segment"));
    }
    if segments
        .iter()
        .any(|segment| segment.bytes().all(|b| b == b'.'))
    {
        return Err(PublicPathError::NotCanonical("it has a dot segment"));
    }
    Ok(segments)
}

/// A decimal number as the layout writes it: digits only, no leading zero, fits in a `u64`.
fn canonical_number(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits || leading_zero {
        return None;
    }
    text.parse().ok()
}

/// The query parameters the layout defines, read once each.
#[derive(Default)]
struct Query<'a> {
    msn: Option<u64>,
    part: Option<u32>,
    skip: Skip,
    track: Option<&'a str>,
}

impl<'a> Query<'a> {
    fn parse(query: Option<&'a str>) -> Result<Query<'a>, PublicPathError> {
        let mut parsed = Query::default();
        let mut seen = [false; 4];
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (index, parameter) = match name {
                "_HLS_msn" => (0, "_HLS_msn"),
                "_HLS_part" => (1, "_HLS_part"),
                "_HLS_skip" => (2, "_HLS_skip"),
                "track" => (3, "track"),
                _ => continue,
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(PublicPathError::BadQuery {
                    parameter,
                    problem: "is given twice",
                });
            }
            let bad = |problem| PublicPathError::BadQuery { parameter, problem };
            match index {
                0 => parsed.msn = Some(canonical_number(value).ok_or(bad("is not a number"))?),
                1 => {
                    parsed.part = Some(
                        canonical_number(value)
                            .and_then(|part| u32::try_from(part).ok())
                            .ok_or(bad("is not a part number"))?,
                    )
                }
                2 => {
                    parsed.skip = match value {
                        "YES" => Skip::Yes,
                        "v2" => Skip::V2,
                        _ => return Err(bad("is neither YES nor v2")),
                    }
                }
                _ => parsed.track = Some(value),
            }
        }
        Ok(parsed)
    }
}
