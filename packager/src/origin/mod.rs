//! The origin: every request to the packager goes through [`handle`]. Ingest goes to the
//! receiver; `/live/…` is answered from the window at the paths of DESIGN.md (LL-HLS here,
//! segments and parts in `media`, HLS-TS in `ts`, continuous streams in `continuous`, the MPD
//! here too), `/vod/…` from the
//! archive (`vod`), with the Cache-Control the design gives each kind of object, CORS for
//! browser players, and blocking playlist reload and part requests that answer the moment the
//! part lands.

mod body;
mod continuous;
mod media;
mod ts;
mod vod;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use estuary_proto::url::{ChannelName, TrackName};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::dash::Manifest;
use crate::hls::{MasterPlaylist, MediaPlaylist, RenditionReport};
use crate::receiver;
use crate::server::{Shared, TrackCounters};
use crate::window::Window;
use estuary_proto::url::StreamFormat;

pub use body::Body;
pub use continuous::{Streams, VIEWER_QUEUE};
pub use ts::Remuxed;

pub(crate) const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Playlists change every part (a third of a second): caches may only coalesce them.
const PLAYLIST: &str = "public, max-age=0";
/// A segment or part that will exist soon.
const NOT_YET: &str = "public, max-age=1";

pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    cache: &str,
    body: Body,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(cache) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}

pub(crate) fn problem(status: StatusCode, reason: impl Into<String>) -> Response<Body> {
    let mut reason = reason.into();
    if !reason.ends_with('\n') {
        reason.push('\n');
    }
    let cache = if status == StatusCode::NOT_FOUND {
        NOT_YET
    } else {
        "no-store"
    };
    respond(
        status,
        "text/plain; charset=utf-8",
        cache,
        Body::text(reason),
    )
}

pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let Some(kind) = request_kind(&path, request.uri().query()) {
        shared.count_request(kind);
    }
    let response = match (request.method(), parts.as_slice()) {
        (&Method::OPTIONS, _) => preflight(),
        (&Method::POST | &Method::PUT, ["ingest", channel, track]) => {
            ingest(shared, channel, track, request).await
        }
        (&Method::GET | &Method::HEAD, ["live", channel, rest @ ..]) => {
            match ChannelName::new(channel) {
                Ok(channel) => {
                    let head = request.method() == Method::HEAD;
                    let framed = request
                        .headers()
                        .get(header::ACCEPT)
                        .is_some_and(|accept| accept == estuary_proto::chunks::CONTENT_TYPE);
                    let icy = request
                        .headers()
                        .get(estuary_proto::icy::REQUEST_HEADER)
                        .is_some_and(|value| estuary_proto::icy::wanted(value.as_bytes()));
                    let query = request.uri().query();
                    live(&shared, &channel, rest, query, head, framed, icy).await
                }
                Err(error) => problem(StatusCode::NOT_FOUND, error.to_string()),
            }
        }
        (&Method::GET | &Method::HEAD, ["vod", channel, range, rest @ ..]) => {
            vod::serve(&shared, channel, range, rest).await
        }
        (&Method::GET, [""] | ["play", _]) => {
            let html = &shared.player.html;
            asset(
                html,
                "text/html; charset=utf-8",
                "no-cache",
                "the player page",
            )
        }
        (&Method::GET, ["web", "hls.min.js"]) => {
            let script = &shared.player.hls_js;
            asset(script, "text/javascript", "public, max-age=3600", "hls.js")
        }
        (&Method::GET, ["web", "dash.all.min.js"]) => {
            let script = &shared.player.dash_js;
            asset(script, "text/javascript", "public, max-age=3600", "dash.js")
        }
        (&Method::GET, ["web", "mpegts.js"]) => {
            let script = &shared.player.mpegts_js;
            asset(
                script,
                "text/javascript",
                "public, max-age=3600",
                "mpegts.js",
            )
        }
        (&Method::GET, ["admin", "metadata"]) => set_title(&shared, &request),
        (&Method::GET, ["healthz"]) => healthz(&shared),
        (&Method::GET, ["metrics"]) => metrics(&shared),
        (_, ["ingest", ..]) => problem(StatusCode::METHOD_NOT_ALLOWED, "ingest takes POST or PUT"),
        _ => problem(StatusCode::NOT_FOUND, format!("nothing at {path}")),
    };
    Ok(response)
}

/// `GET /admin/metadata?mount=/live/{channel}/stream.mp3&mode=updinfo&song=TITLE`: a radio's
/// playout sets the channel's "now playing", the way it does on Icecast (the mount names the
/// channel; any of its streams will do). When ingest needs a keycard, this does too: one that
/// lets its holder ingest the channel.
fn set_title(shared: &Shared, request: &Request<Incoming>) -> Response<Body> {
    let query = request.uri().query().unwrap_or("");
    let value = |name: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            // Form encoding: a `+` is a space.
            (key == name).then(|| estuary_proto::url::percent_decode(&value.replace('+', " ")))
        })
    };
    if value("mode").as_deref() != Some("updinfo") {
        return problem(StatusCode::BAD_REQUEST, "mode must be updinfo");
    }
    let Some(song) = value("song") else {
        return problem(StatusCode::BAD_REQUEST, "song=TITLE is missing");
    };
    let mount = value("mount").unwrap_or_default();
    let channel = match mount.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
        ["live", channel, ..] => ChannelName::new(channel).map_err(|error| error.to_string()),
        _ => Err(format!(
            "mount {mount:?} is not /live/{{channel}}/stream.{{ext}}"
        )),
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(reason) => return problem(StatusCode::BAD_REQUEST, reason),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let path = format!("/ingest/{channel}/metadata");
    if let Err(verdict) = receiver::check_keycard(shared, request, &path, now) {
        return problem(verdict.status, verdict.message);
    }
    tracing::info!(%channel, title = %song, "now playing");
    shared.continuous.set_title(&channel, &song);
    respond(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        "no-store",
        Body::text("Metadata update successful\n"),
    )
}

/// What a request for media asks for, for `/metrics`.
fn request_kind(path: &str, query: Option<&str>) -> Option<&'static str> {
    if !path.starts_with("/live/") && !path.starts_with("/vod/") {
        return None;
    }
    let blocking = query.is_some_and(|q| q.contains("_HLS_msn"));
    let name = path.rsplit('/').next().unwrap_or("");
    if continuous_format(name).is_some() {
        return Some("continuous");
    }
    Some(
        match name.rsplit_once('.').map(|(_, extension)| extension) {
            Some("m3u8") if blocking => "blocking_playlist",
            Some("m3u8") => "playlist",
            Some("mpd") => "manifest",
            Some("mp4") => "init",
            Some("m4s") if name.matches('.').count() == 2 => "part",
            Some("m4s") => "segment",
            Some("ts") => "ts_segment",
            _ => "other",
        },
    )
}

/// A playlist, or a 404 saying why there is none yet.
pub(crate) fn playlist(text: Option<String>, missing: impl FnOnce() -> String) -> Response<Body> {
    match text {
        Some(text) => respond(
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            PLAYLIST,
            Body::text(text),
        ),
        None => problem(StatusCode::NOT_FOUND, missing()),
    }
}

/// A file of the player page, or why it is missing.
fn asset(bytes: &Option<Bytes>, content_type: &str, cache: &str, what: &str) -> Response<Body> {
    match bytes {
        Some(bytes) => respond(
            StatusCode::OK,
            content_type,
            cache,
            Body::bytes(bytes.clone()),
        ),
        None => problem(
            StatusCode::NOT_FOUND,
            format!("{what} is not installed: run `npm ci` in web/"),
        ),
    }
}

fn preflight() -> Response<Body> {
    let mut response = respond(
        StatusCode::NO_CONTENT,
        "text/plain",
        "public, max-age=86400",
        Body::text(""),
    );
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    response
}

async fn ingest(
    shared: Arc<Shared>,
    channel: &str,
    track: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let (channel, track) = match (ChannelName::new(channel), TrackName::new(track)) {
        (Ok(channel), Ok(track)) => (channel, track),
        (Err(error), _) | (_, Err(error)) => {
            return problem(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let path = estuary_proto::url::ingest_path(&channel, &track);
    if let Err(verdict) = receiver::check_keycard(&shared, &request, &path, now) {
        shared.count(&channel, &track, |c| c.refused += 1);
        tracing::warn!(%channel, %track, reason = %verdict.message, "ingest refused");
        return problem(verdict.status, verdict.message);
    }
    let verdict = receiver::receive(
        shared.clone(),
        channel.clone(),
        track.clone(),
        request.into_body(),
    )
    .await;
    if verdict.status != StatusCode::OK {
        shared.count(&channel, &track, |c| c.refused += 1);
        tracing::warn!(%channel, %track, reason = %verdict.message, "ingest refused");
    }
    problem(verdict.status, verdict.message)
}

/// How long a blocked request may wait: three target durations, as RFC 8216bis says.
pub(crate) fn block_limit(shared: &Shared) -> Duration {
    shared.read(|window| {
        window
            .config()
            .segment
            .mul_f64(3.0)
            .max(Duration::from_secs(1))
    })
}

/// Players are sent to a channel's tracks once each has a whole segment to play.
pub(crate) fn is_playable(window: &Window, channel: &ChannelName) -> bool {
    let mut tracks = window.tracks(channel).peekable();
    tracks.peek().is_some()
        && tracks.all(|(_, track)| track.segments().any(|segment| segment.complete))
}

async fn live(
    shared: &Arc<Shared>,
    channel: &ChannelName,
    rest: &[&str],
    query: Option<&str>,
    head: bool,
    framed: bool,
    icy: bool,
) -> Response<Body> {
    match rest {
        [name] if let Some(format) = continuous_format(name) => {
            continuous::serve(shared, channel, format, query, head, framed, icy)
        }
        ["master.m3u8"] => {
            let text = shared.read(|window| {
                is_playable(window, channel)
                    .then(|| MasterPlaylist::build(window.tracks(channel)).to_string())
            });
            playlist(text, || {
                format!("channel {channel} has no whole segment yet")
            })
        }
        ["ts", rest @ ..] => ts::serve(shared, channel, rest).await,
        ["manifest.mpd"] => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            let text = shared.read(|window| {
                is_playable(window, channel)
                    .then(|| Manifest::build(window.tracks(channel), &window.config(), now))
                    .flatten()
                    .map(|manifest| manifest.to_string())
            });
            match text {
                Some(text) => respond(
                    StatusCode::OK,
                    "application/dash+xml",
                    PLAYLIST,
                    Body::text(text),
                ),
                None => problem(
                    StatusCode::NOT_FOUND,
                    format!("channel {channel} has no whole segment yet"),
                ),
            }
        }
        [track, file] => {
            let Ok(track) = TrackName::new(track) else {
                return problem(StatusCode::NOT_FOUND, format!("no track {track}"));
            };
            if shared.read(|window| window.track(channel, &track).is_none()) {
                return problem(
                    StatusCode::NOT_FOUND,
                    format!("channel {channel} has no track {track}"),
                );
            }
            match *file {
                "media.m3u8" => media_playlist(shared, channel, &track, query).await,
                "init.mp4" => {
                    let header = shared.header(channel, &track).map(|h| h.bytes);
                    match header {
                        Some(bytes) => respond(
                            StatusCode::OK,
                            media::content_type(shared, channel, &track),
                            IMMUTABLE,
                            Body::bytes(bytes),
                        ),
                        None => problem(StatusCode::NOT_FOUND, "no header yet"),
                    }
                }
                name => match name.strip_suffix(".m4s").map(parse_media_name) {
                    Some(Some((msn, None))) => media::segment(shared, channel, &track, msn).await,
                    Some(Some((msn, Some(part)))) => {
                        media::part(shared, channel, &track, msn, part).await
                    }
                    _ => problem(StatusCode::NOT_FOUND, format!("nothing called {name}")),
                },
            }
        }
        _ => problem(StatusCode::NOT_FOUND, "not part of the live layout"),
    }
}

/// `stream.ts`, `stream.mp4`, `stream.webm`, `stream.aac`, `stream.mp3`.
fn continuous_format(name: &str) -> Option<StreamFormat> {
    name.strip_prefix("stream.")
        .and_then(StreamFormat::from_extension)
}

/// `1234.m4s` is segment 1234; `1234.5.m4s` is its part 5.
fn parse_media_name(stem: &str) -> Option<(u64, Option<usize>)> {
    match stem.split_once('.') {
        None => Some((stem.parse().ok()?, None)),
        Some((msn, part)) => Some((msn.parse().ok()?, Some(part.parse().ok()?))),
    }
}

/// The playlist's query: `_HLS_msn`, `_HLS_part`, `_HLS_skip`.
#[derive(Debug, Default, PartialEq, Eq)]
struct PlaylistQuery {
    msn: Option<u64>,
    part: Option<usize>,
    skip: bool,
}

fn parse_query(query: Option<&str>) -> Result<PlaylistQuery, String> {
    let mut parsed = PlaylistQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "_HLS_msn" => {
                parsed.msn = Some(
                    value
                        .parse()
                        .map_err(|_| format!("_HLS_msn={value} is not a number"))?,
                )
            }
            "_HLS_part" => {
                parsed.part = Some(
                    value
                        .parse()
                        .map_err(|_| format!("_HLS_part={value} is not a number"))?,
                )
            }
            "_HLS_skip" => parsed.skip = value == "YES" || value == "v2",
            _ => {}
        }
    }
    if parsed.part.is_some() && parsed.msn.is_none() {
        return Err("_HLS_part needs _HLS_msn".into());
    }
    Ok(parsed)
}

/// Whether the window has what a blocking request asks for: part `part` of segment `msn`, or
/// (without a part) the whole segment; a later segment also answers it.
fn has(
    window: &Window,
    channel: &ChannelName,
    track: &TrackName,
    msn: u64,
    part: Option<usize>,
) -> bool {
    let Some(track) = window.track(channel, track) else {
        return false;
    };
    let Some((newest, _)) = track.newest() else {
        return false;
    };
    if newest > msn {
        return true;
    }
    match (track.segment(msn), part) {
        (Some(segment), Some(part)) => segment.parts.len() > part,
        (Some(segment), None) => segment.complete,
        (None, _) => false,
    }
}

async fn media_playlist(
    shared: &Shared,
    channel: &ChannelName,
    track: &TrackName,
    query: Option<&str>,
) -> Response<Body> {
    let query = match parse_query(query) {
        Ok(query) => query,
        Err(reason) => return problem(StatusCode::BAD_REQUEST, reason),
    };
    if let Some(msn) = query.msn {
        let newest = shared.read(|window| window.track(channel, track).and_then(|t| t.newest()));
        if newest.is_some_and(|(newest, _)| msn > newest + 2) {
            // RFC 8216bis 6.2.5.2: a request this far ahead will not be answered in time.
            return problem(
                StatusCode::BAD_REQUEST,
                format!("_HLS_msn={msn} is more than two segments ahead"),
            );
        }
        let ready = shared
            .wait_until(block_limit(shared), |window| {
                has(window, channel, track, msn, query.part)
            })
            .await;
        if !ready {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the requested part did not arrive in time",
            );
        }
    }
    let text = shared.read(|window| {
        let reports = window
            .tracks(channel)
            .filter(|(name, _)| *name != track)
            .filter_map(|(name, other)| {
                let (last_msn, parts) = other.newest()?;
                Some(RenditionReport {
                    track: name.clone(),
                    last_msn,
                    last_part: parts.checked_sub(1)?,
                })
            })
            .collect();
        let this = window.track(channel, track)?;
        MediaPlaylist::build(this, &window.config(), reports, query.skip).map(|p| p.to_string())
    });
    playlist(text, || "no media yet".to_owned())
}

fn healthz(shared: &Shared) -> Response<Body> {
    let moods = shared.moods();
    let overall = if moods
        .iter()
        .any(|(_, mood)| *mood == estuary_proto::Mood::Happy)
    {
        "happy"
    } else {
        "hungry"
    };
    let mut text = format!("{{\"role\":\"packager\",\"mood\":\"{overall}\",\"channels\":[");
    for (index, (channel, mood)) in moods.iter().enumerate() {
        let separator = if index > 0 { "," } else { "" };
        let _ = write!(
            text,
            "{separator}{{\"channel\":\"{channel}\",\"mood\":\"{mood}\"}}"
        );
    }
    text.push_str("]}\n");
    respond(
        StatusCode::OK,
        "application/json",
        "no-store",
        Body::text(text),
    )
}

fn metrics(shared: &Shared) -> Response<Body> {
    let counters = shared.counters();
    let mut text = String::new();
    type Family = (&'static str, &'static str, fn(&TrackCounters) -> u64);
    let families: [Family; 4] = [
        (
            "estuary_packager_parts_total",
            "Parts taken into the window.",
            |c| c.parts,
        ),
        (
            "estuary_packager_duplicate_chunks_total",
            "Chunks dropped as copies of parts already held (redundant ingest).",
            |c| c.duplicates,
        ),
        (
            "estuary_packager_ingest_refused_total",
            "Ingest requests refused (bad CMAF, bad keycard).",
            |c| c.refused,
        ),
        (
            "estuary_packager_gaps_total",
            "Times segments were missing from a track.",
            |c| c.gaps,
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
        for ((channel, track), counter) in &counters {
            let _ = writeln!(
                text,
                "{name}{{channel=\"{channel}\",track=\"{track}\"}} {}",
                value(counter)
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP estuary_packager_requests_total Requests for media and playlists, by kind.\n# TYPE estuary_packager_requests_total counter"
    );
    for (kind, count) in shared.requests() {
        let _ = writeln!(
            text,
            "estuary_packager_requests_total{{kind=\"{kind}\"}} {count}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP estuary_packager_continuous_viewers Viewers of continuous streams now, by format.\n# TYPE estuary_packager_continuous_viewers gauge"
    );
    let viewers = shared.continuous.viewers();
    for format in StreamFormat::ALL {
        let _ = writeln!(
            text,
            "estuary_packager_continuous_viewers{{format=\"{}\"}} {}",
            format.extension(),
            viewers.get(&format).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        text,
        "# HELP estuary_packager_mood 1 for each channel's current mood.\n# TYPE estuary_packager_mood gauge"
    );
    for (channel, current) in shared.moods() {
        for mood in estuary_proto::Mood::ALL {
            let _ = writeln!(
                text,
                "estuary_packager_mood{{channel=\"{channel}\",mood=\"{mood}\"}} {}",
                u8::from(mood == current)
            );
        }
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        "no-store",
        Body::text(text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind() {
        assert_eq!(
            request_kind("/live/demo/v720/12.m4s", None),
            Some("segment")
        );
        assert_eq!(request_kind("/live/demo/v720/12.3.m4s", None), Some("part"));
        assert_eq!(
            request_kind("/live/demo/v720/media.m3u8", Some("_HLS_msn=1")),
            Some("blocking_playlist")
        );
        assert_eq!(
            request_kind("/live/demo/manifest.mpd", None),
            Some("manifest")
        );
        assert_eq!(
            request_kind("/live/demo/stream.mp4", None),
            Some("continuous")
        );
        assert_eq!(request_kind("/metrics", None), None);
    }

    #[test]
    fn media_names() {
        assert_eq!(parse_media_name("897609600"), Some((897_609_600, None)));
        assert_eq!(
            parse_media_name("897609600.5"),
            Some((897_609_600, Some(5)))
        );
        assert_eq!(parse_media_name("x.5"), None);
        assert_eq!(parse_media_name("1.x"), None);
    }

    #[test]
    fn blocking_queries() {
        assert_eq!(parse_query(None), Ok(PlaylistQuery::default()));
        assert_eq!(
            parse_query(Some("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES")),
            Ok(PlaylistQuery {
                msn: Some(12),
                part: Some(3),
                skip: true
            })
        );
        assert!(parse_query(Some("_HLS_part=3")).is_err());
        assert!(parse_query(Some("_HLS_msn=x")).is_err());
    }
}
