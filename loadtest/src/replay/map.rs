//! `--map` rules: how logged paths are moved onto content the target has. A prefix rule
//! rewrites the path; a live rule turns a request into one a viewer of a live channel makes
//! now (its media playlist, or its newest segment), found by reading the channel's playlists
//! as public paths of the layout.

use std::collections::BTreeMap;
use std::sync::RwLock;

use bytes::Bytes;
use estuary_proto::url::{BadName, ChannelName, LiveObject, PublicPath};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::REQUEST_TIMEOUT;

/// Logged responses at least this long are mapped onto segments by a live mapping; shorter
/// ones onto the playlist.
const SEGMENT_SIZED: u64 = 16 * 1024;

/// A rule that moves logged paths onto the target's content. Rules are tried in order; the
/// first whose prefix the path starts with applies; a path no rule matches is sent as logged.
#[derive(Clone, Debug, PartialEq)]
pub enum Map {
    /// `FROM=TO`: the prefix `FROM` becomes `TO` (the query is kept).
    Prefix { from: String, to: String },
    /// `FROM=live:CHANNEL`: the request becomes one a viewer of the live channel makes now:
    /// for its media playlist when the logged response was small, for its newest segment when
    /// it was large.
    Live { from: String, channel: ChannelName },
}

/// A `--map` rule that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadMap {
    #[error("{0:?} is not a mapping: expected FROM=TO or FROM=live:CHANNEL")]
    NotAMapping(String),
    #[error("{0:?}: FROM must be a path prefix starting with /")]
    From(String),
    #[error("{0:?}: TO must be a path starting with / (or live:CHANNEL)")]
    To(String),
    #[error("{text:?}: {name}")]
    Channel { text: String, name: BadName },
}

impl std::str::FromStr for Map {
    type Err = BadMap;

    fn from_str(text: &str) -> Result<Map, BadMap> {
        let Some((from, to)) = text.split_once('=') else {
            return Err(BadMap::NotAMapping(text.to_owned()));
        };
        if !from.starts_with('/') {
            return Err(BadMap::From(text.to_owned()));
        }
        if let Some(channel) = to.strip_prefix("live:") {
            let channel = ChannelName::new(channel).map_err(|name| BadMap::Channel {
                text: text.to_owned(),
                name,
            })?;
            return Ok(Map::Live {
                from: from.into(),
                channel,
            });
        }
        if !to.starts_with('/') {
            return Err(BadMap::To(text.to_owned()));
        }
        Ok(Map::Prefix {
            from: from.into(),
            to: to.into(),
        })
    }
}

/// What a live channel offers now, as its media playlist says.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct LiveObjects {
    /// e.g. `/live/demo/v720/media.m3u8`.
    playlist: String,
    /// The newest whole segment's path, once the playlist has been read.
    segment: Option<String>,
}

/// The live channels' objects, by channel, as the refresher last read them.
pub(super) type Live = BTreeMap<ChannelName, RwLock<LiveObjects>>;

/// Where a logged request goes, by the rules.
pub(super) fn mapped(maps: &[Map], live: &Live, target: &str, logged_bytes: u64) -> String {
    for map in maps {
        match map {
            Map::Prefix { from, to } if target.starts_with(from.as_str()) => {
                return format!("{to}{}", &target[from.len()..]);
            }
            Map::Live { from, channel } if target.starts_with(from.as_str()) => {
                let objects = live[channel].read().unwrap_or_else(|e| e.into_inner());
                return match (&objects.segment, logged_bytes >= SEGMENT_SIZED) {
                    (Some(segment), true) => segment.clone(),
                    _ => objects.playlist.clone(),
                };
            }
            _ => {}
        }
    }
    target.to_owned()
}

/// The first media playlist a multivariant playlist names, and the newest segment a media
/// playlist names (the last URI line: parts and hints are tags, not URI lines).
fn first_uri(playlist: &str) -> Option<&str> {
    playlist
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
}

fn last_uri(playlist: &str) -> Option<&str> {
    playlist
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !line.starts_with('#'))
}

/// A path relative to the playlist at `base` (a path), as the playlist's URI lines are.
fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_owned();
    }
    let folder = &base[..base.rfind('/').map_or(0, |at| at + 1)];
    format!("{folder}{uri}")
}

/// Why a live channel's objects could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    #[error("{path}: {reason}")]
    Request { path: String, reason: String },
    #[error("{path}: no answer in {REQUEST_TIMEOUT:?}")]
    Silent { path: String },
    #[error("{path}: {status}")]
    Status { path: String, status: u16 },
    #[error("{path}: not text")]
    NotText { path: String },
    #[error("{path} names no media playlist")]
    NoMediaPlaylist { path: String },
    #[error("{path} names {named:?}, which is not {what} of the channel in the public layout")]
    NotInLayout {
        path: String,
        named: String,
        what: &'static str,
    },
}

/// GETs `path` from `target` as text.
async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    target: &str,
    path: &str,
) -> Result<String, LiveError> {
    let failed = |reason: String| LiveError::Request {
        path: path.to_owned(),
        reason,
    };
    let request = Request::get(format!("{target}{path}"))
        .body(Empty::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .map_err(|_| LiveError::Silent {
            path: path.to_owned(),
        })?
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(LiveError::Status {
            path: path.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| LiveError::NotText {
        path: path.to_owned(),
    })
}

/// Whether `target` (a path, maybe with a query) is, in the public layout, an object of
/// `channel` that `wanted` accepts.
fn is_object_of(target: &str, channel: &ChannelName, wanted: fn(&LiveObject) -> bool) -> bool {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    matches!(
        PublicPath::parse(path, query),
        Ok(PublicPath::Live { channel: named, object }) if &named == channel && wanted(&object)
    )
}

/// Reads the channel's playlists: the first media playlist of its multivariant playlist
/// (kept from `known` once found), and the newest segment that one names. Each must be an
/// object of the channel in the public layout.
pub(super) async fn live_objects(
    client: &Client<HttpConnector, Empty<Bytes>>,
    target: &str,
    channel: &ChannelName,
    known: Option<LiveObjects>,
) -> Result<LiveObjects, LiveError> {
    let playlist = match known {
        Some(known) => known.playlist,
        None => {
            let master = PublicPath::Live {
                channel: channel.clone(),
                object: LiveObject::Master,
            }
            .to_string();
            let text = get(client, target, &master).await?;
            let uri = first_uri(&text).ok_or_else(|| LiveError::NoMediaPlaylist {
                path: master.clone(),
            })?;
            // Query strings (a carried keycard) stay with the URI.
            let playlist = resolve(&master, uri);
            if !is_object_of(&playlist, channel, |object| {
                matches!(object, LiveObject::MediaPlaylist { .. })
            }) {
                return Err(LiveError::NotInLayout {
                    path: master,
                    named: playlist,
                    what: "a media playlist",
                });
            }
            playlist
        }
    };
    let text = get(client, target, &playlist).await?;
    let segment = last_uri(&text).map(|uri| resolve(&playlist, uri));
    if let Some(segment) = &segment
        && !is_object_of(segment, channel, |object| {
            matches!(object, LiveObject::Segment { .. })
        })
    {
        return Err(LiveError::NotInLayout {
            path: playlist,
            named: segment.clone(),
            what: "a segment",
        });
    }
    Ok(LiveObjects { playlist, segment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_read_and_applied_in_order() {
        let maps: Vec<Map> = ["/images/=/live/demo/v360/", "/=live:demo"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        assert_eq!(
            maps[1],
            Map::Live {
                from: "/".into(),
                channel: ChannelName::new("demo").unwrap()
            }
        );
        let mut live = BTreeMap::new();
        live.insert(
            ChannelName::new("demo").unwrap(),
            RwLock::new(LiveObjects {
                playlist: "/live/demo/v720/media.m3u8".into(),
                segment: Some("/live/demo/v720/900.m4s".into()),
            }),
        );
        assert_eq!(
            mapped(&maps, &live, "/images/a.png?x=1", 5),
            "/live/demo/v360/a.png?x=1"
        );
        assert_eq!(
            mapped(&maps, &live, "/blog/", 4000),
            "/live/demo/v720/media.m3u8"
        );
        assert_eq!(
            mapped(&maps, &live, "/video.mp4", 2_000_000),
            "/live/demo/v720/900.m4s"
        );
        assert_eq!(mapped(&[], &live, "/as/logged", 1), "/as/logged");
        assert!("images=/x".parse::<Map>().is_err());
        assert!("/x=y".parse::<Map>().is_err());
        assert!("/x=live:../etc".parse::<Map>().is_err());
    }

    #[test]
    fn live_objects_must_be_the_channels_in_the_layout() {
        let demo = ChannelName::new("demo").unwrap();
        let playlist = |object: &LiveObject| matches!(object, LiveObject::MediaPlaylist { .. });
        assert!(is_object_of(
            "/live/demo/v720/media.m3u8?keycard=k",
            &demo,
            playlist
        ));
        assert!(!is_object_of(
            "/live/other/v720/media.m3u8",
            &demo,
            playlist
        ));
        assert!(!is_object_of("/live/demo/v720/1.m4s", &demo, playlist));
        assert!(!is_object_of(
            "/live/demo//v720/media.m3u8",
            &demo,
            playlist
        ));
        assert!(!is_object_of("/elsewhere/media.m3u8", &demo, playlist));
    }

    #[test]
    fn playlists_name_their_media_playlists_and_newest_segments() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv720/media.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nv360/media.m3u8\n";
        assert_eq!(first_uri(master), Some("v720/media.m3u8"));
        let media = "#EXTM3U\n#EXTINF:2.0,\n10.m4s\n#EXTINF:2.0,\n11.m4s\n#EXT-X-PART:DURATION=0.33,URI=\"12.0.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.1.m4s\"\n";
        assert_eq!(last_uri(media), Some("11.m4s"));
        assert_eq!(
            resolve("/live/demo/master.m3u8", "v720/media.m3u8"),
            "/live/demo/v720/media.m3u8"
        );
        assert_eq!(
            resolve("/live/demo/v720/media.m3u8", "/x/1.m4s"),
            "/x/1.m4s"
        );
    }
}
