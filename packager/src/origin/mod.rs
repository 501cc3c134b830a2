//! The origin: every request to the packager goes through [`handle`]. The packager's own
//! routes come first and stay apart from what viewers see: ingest (`POST`/`PUT
//! /ingest/{channel}/{track}`, the receiver) and `GET /admin/metadata` (admin). Everything
//! else is the public layout of DESIGN.md, parsed into a [`PublicPath`] from its one canonical
//! spelling and answered by matching on it: `/live/…` from the window (LL-HLS and the MPD
//! here, segments and parts in `media`, HLS-TS in `hls_ts`, continuous streams in `continuous`),
//! `/vod/…` from the archive (`vod`), `/healthz` and `/metrics` (`status`), the player page and
//! its scripts. A path that does not parse is answered with the parser's status and reason:
//! `//live/…`, `/live/%64emo/…` or `/live/demo/master.m3u8;x` name nothing here. Each answer
//! carries the Cache-Control of its path's [`CacheClass`], and CORS for browser players;
//! blocking playlist reloads and part requests answer the moment the part lands.

mod continuous;
mod hls_ts;
mod media;
mod status;
mod vod;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use estuary_http::{Body, preflight, problem, respond};
use estuary_packager_core::dash::Manifest;
use estuary_packager_core::hls::{MasterPlaylist, MediaPlaylist, RenditionReport};
use estuary_packager_core::window::Window;
use estuary_proto::url::{
    Blocking, CacheClass, ChannelName, LiveObject, PublicPath, Script, Skip, TrackName,
};
use estuary_proto::utc::unix_now;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::service::Service;
use crate::{admin, receiver};

/// Answers one request.
pub async fn handle(service: Arc<Service>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    if let Some(names) = path.strip_prefix("/ingest/") {
        let Some((channel, track)) = names.split_once('/') else {
            return problem(
                StatusCode::NOT_FOUND,
                "ingest is at /ingest/{channel}/{track}",
            );
        };
        if !matches!(*request.method(), Method::POST | Method::PUT) {
            return not_allowed("ingest takes POST or PUT", "POST, PUT");
        }
        let (channel, track) = (channel.to_owned(), track.to_owned());
        return receiver::ingest(service, &channel, &track, request).await;
    }
    if path == "/admin/metadata" {
        return match *request.method() {
            Method::GET => admin::set_title(&service, &request),
            _ => not_allowed("/admin/metadata takes GET", "GET"),
        };
    }
    if path == "/admin/reload" {
        return match *request.method() {
            Method::POST => admin::reload(&service, &request).await,
            _ => not_allowed("/admin/reload takes POST", "POST"),
        };
    }
    let public = match PublicPath::parse(path, request.uri().query()) {
        Ok(public) => public,
        Err(error) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::NOT_FOUND);
            return problem(status, error.to_string());
        }
    };
    match *request.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => return preflight("GET, HEAD, OPTIONS"),
        _ => {
            return not_allowed("this path takes GET or HEAD", "GET, HEAD, OPTIONS");
        }
    }
    if let Some(kind) = request_kind(&public) {
        service.requests.count(kind);
    }
    let class = public.cache_class();
    let media = matches!(public, PublicPath::Live { .. } | PublicPath::Vod { .. });
    let mut response = serve(&service, &request, public).await;
    // Every answer carries its path's Cache-Control; an error is not stored (the problem says
    // so), except a 404 for media, which may exist in a moment: caches keep that for a second.
    let cache = match response.status() {
        status if status.is_success() => Some(class.cache_control()),
        StatusCode::NOT_FOUND if media => Some(CacheClass::NOT_YET),
        _ => None,
    };
    if let Some(cache) = cache {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    response
}

/// Answers a request for `public`, an object of the public layout.
async fn serve(
    service: &Arc<Service>,
    request: &Request<Incoming>,
    public: PublicPath,
) -> Response<Body> {
    match public {
        PublicPath::Live { channel, object } => live(service, request, &channel, object).await,
        PublicPath::Vod {
            channel,
            range,
            object,
        } => vod::serve(service, &channel, range, object).await,
        PublicPath::Health => status::healthz(service),
        PublicPath::Metrics => status::metrics(service),
        PublicPath::Player { .. } => asset(
            &service.rules().player.html,
            "text/html; charset=utf-8",
            "the player page",
        ),
        PublicPath::Script(script) => {
            let rules = service.rules();
            let player = &rules.player;
            let (bytes, name) = match script {
                Script::Hls => (&player.hls_js, "hls.js"),
                Script::Dash => (&player.dash_js, "dash.js"),
                Script::Mpegts => (&player.mpegts_js, "mpegts.js"),
            };
            asset(bytes, "text/javascript", name)
        }
    }
}

fn not_allowed(reason: &str, allow: &'static str) -> Response<Body> {
    let mut response = problem(StatusCode::METHOD_NOT_ALLOWED, reason);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// What a request for media asks for, for `/metrics`.
fn request_kind(path: &PublicPath) -> Option<&'static str> {
    let kind = match path {
        PublicPath::Live { object, .. } => match object {
            LiveObject::Stream { .. } => "continuous",
            LiveObject::MediaPlaylist {
                blocking: Some(_), ..
            } => "blocking_playlist",
            LiveObject::Master
            | LiveObject::MediaPlaylist { .. }
            | LiveObject::TsMaster
            | LiveObject::TsMediaPlaylist { .. } => "playlist",
            LiveObject::Manifest => "manifest",
            LiveObject::Init { .. } => "init",
            LiveObject::Segment { .. } => "segment",
            LiveObject::Part { .. } => "part",
            LiveObject::TsSegment { .. } => "ts_segment",
        },
        PublicPath::Vod { object, .. } => match object {
            estuary_proto::url::VodObject::Master
            | estuary_proto::url::VodObject::MediaPlaylist { .. } => "playlist",
            estuary_proto::url::VodObject::Init { .. } => "init",
            estuary_proto::url::VodObject::Segment { .. } => "segment",
        },
        _ => return None,
    };
    Some(kind)
}

/// A playlist, or a 404 saying why there is none yet.
pub(crate) fn playlist(text: Option<String>, missing: impl FnOnce() -> String) -> Response<Body> {
    match text {
        Some(text) => respond(
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            Body::text(text),
        ),
        None => problem(StatusCode::NOT_FOUND, missing()),
    }
}

/// A file of the player page, or why it is missing.
fn asset(bytes: &Option<Bytes>, content_type: &str, what: &str) -> Response<Body> {
    match bytes {
        Some(bytes) => respond(StatusCode::OK, content_type, Body::bytes(bytes.clone())),
        None => problem(
            StatusCode::NOT_FOUND,
            format!("{what} is not installed: run `npm ci` in web/"),
        ),
    }
}

/// How long a blocked request may wait: three target durations, as RFC 8216bis says.
pub(crate) fn block_limit(service: &Service) -> Duration {
    service.state.read(|window| {
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
    service: &Arc<Service>,
    request: &Request<Incoming>,
    channel: &ChannelName,
    object: LiveObject,
) -> Response<Body> {
    let unplayable = || format!("channel {channel} has no whole segment yet");
    let known = |track: &TrackName| {
        service
            .state
            .read(|window| window.track(channel, track).is_some())
    };
    match object {
        LiveObject::Stream { format, track } => {
            let head = request.method() == Method::HEAD;
            let headers = request.headers();
            let framed = headers
                .get(header::ACCEPT)
                .is_some_and(|accept| accept == estuary_proto::chunks::CONTENT_TYPE);
            let icy = headers
                .get(estuary_proto::icy::REQUEST_HEADER)
                .is_some_and(|value| estuary_proto::icy::wanted(value.as_bytes()));
            let asked = crate::streams::Asked { head, framed, icy };
            continuous::serve(service, channel, format, track.as_ref(), asked)
        }
        LiveObject::Master => {
            let text = service.state.read(|window| {
                is_playable(window, channel)
                    .then(|| MasterPlaylist::build(window.tracks(channel)).to_string())
            });
            playlist(text, unplayable)
        }
        LiveObject::Manifest => {
            let now = unix_now().as_nanos() as u64;
            let text = service.state.read(|window| {
                is_playable(window, channel)
                    .then(|| Manifest::build(window.tracks(channel), &window.config(), now))
                    .flatten()
                    .map(|manifest| manifest.to_string())
            });
            match text {
                Some(text) => respond(StatusCode::OK, "application/dash+xml", Body::text(text)),
                None => problem(StatusCode::NOT_FOUND, unplayable()),
            }
        }
        LiveObject::TsMaster => hls_ts::master(service, channel),
        LiveObject::TsMediaPlaylist { track } => hls_ts::media_playlist(service, channel, &track),
        LiveObject::TsSegment { track, msn } => hls_ts::segment(service, channel, &track, msn),
        LiveObject::MediaPlaylist { track, .. }
        | LiveObject::Init { track }
        | LiveObject::Segment { track, .. }
        | LiveObject::Part { track, .. }
            if !known(&track) =>
        {
            problem(
                StatusCode::NOT_FOUND,
                format!("channel {channel} has no track {track}"),
            )
        }
        LiveObject::MediaPlaylist {
            track,
            blocking,
            skip,
        } => media_playlist(service, channel, &track, blocking, skip != Skip::No).await,
        LiveObject::Init { track } => match service.state.header(channel, &track) {
            Some(header) => respond(
                StatusCode::OK,
                media::content_type(service, channel, &track),
                Body::bytes(header.bytes),
            ),
            None => problem(StatusCode::NOT_FOUND, "no header yet"),
        },
        LiveObject::Segment { track, msn } => media::segment(service, channel, &track, msn).await,
        LiveObject::Part { track, msn, part } => {
            media::part(service, channel, &track, msn, part as usize).await
        }
    }
}

/// Whether the window has what a blocking request asks for: part `part` of segment `msn`, or
/// (without a part) the whole segment; a later segment also answers it.
fn has(window: &Window, channel: &ChannelName, track: &TrackName, blocking: Blocking) -> bool {
    let Some(track) = window.track(channel, track) else {
        return false;
    };
    let Some((newest, _)) = track.newest() else {
        return false;
    };
    if newest > blocking.msn {
        return true;
    }
    match (track.segment(blocking.msn), blocking.part) {
        (Some(segment), Some(part)) => segment.parts.len() > part as usize,
        (Some(segment), None) => segment.complete,
        (None, _) => false,
    }
}

async fn media_playlist(
    service: &Service,
    channel: &ChannelName,
    track: &TrackName,
    blocking: Option<Blocking>,
    skip: bool,
) -> Response<Body> {
    if let Some(blocking) = blocking {
        let msn = blocking.msn;
        let newest = service
            .state
            .read(|window| window.track(channel, track).and_then(|t| t.newest()));
        if newest.is_some_and(|(newest, _)| msn > newest + 2) {
            // RFC 8216bis 6.2.5.2: a request this far ahead will not be answered in time.
            return problem(
                StatusCode::BAD_REQUEST,
                format!("_HLS_msn={msn} is more than two segments ahead"),
            );
        }
        let ready = service
            .state
            .wait_until(block_limit(service), |window| {
                has(window, channel, track, blocking)
            })
            .await;
        if !ready {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the requested part did not arrive in time",
            );
        }
    }
    let text = service.state.read(|window| {
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
        MediaPlaylist::build(this, &window.config(), reports, skip).map(|p| p.to_string())
    });
    playlist(text, || "no media yet".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Channel, TrackSpec, get};

    fn kind(target: &str) -> Option<&'static str> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        request_kind(&PublicPath::parse(path, Some(query)).unwrap())
    }

    #[test]
    fn requests_are_counted_by_kind() {
        assert_eq!(kind("/live/demo/v720/12.m4s"), Some("segment"));
        assert_eq!(kind("/live/demo/v720/12.3.m4s"), Some("part"));
        assert_eq!(
            kind("/live/demo/v720/media.m3u8?_HLS_msn=1"),
            Some("blocking_playlist")
        );
        assert_eq!(kind("/live/demo/manifest.mpd"), Some("manifest"));
        assert_eq!(kind("/live/demo/stream.mp4"), Some("continuous"));
        assert_eq!(kind("/vod/demo/1-2/v720/7.m4s"), Some("segment"));
        assert_eq!(kind("/metrics"), None);
    }

    fn status(answer: &str) -> u16 {
        answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"))
    }

    fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
        answer.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The public layout is served from its canonical spelling only, with the Cache-Control
    /// of each object's class; the packager's own routes stay apart.
    #[tokio::test]
    async fn requests_are_routed_by_their_parsed_path() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..13);
        let (_, address) = crate::testing::serve_window(channel.window, |_| {}).await;
        let msn = crate::testing::DAY_START_SECONDS / 2;

        for (target, code, cache) in [
            ("/live/demo/master.m3u8", 200, Some("public, max-age=0")),
            ("/live/demo/v720/media.m3u8", 200, Some("public, max-age=0")),
            (
                &*format!("/live/demo/v720/{msn}.m4s"),
                200,
                Some(CacheClass::Immutable.cache_control()),
            ),
            (
                &*format!("/live/demo/v720/{msn}.2.m4s"),
                200,
                Some(CacheClass::Immutable.cache_control()),
            ),
            ("/live/demo/v720/init.mp4", 200, None),
            ("/live/demo/manifest.mpd", 200, None),
            ("/metrics", 200, Some("no-store")),
            ("/healthz", 200, Some("no-store")),
            // Other spellings of the same objects are bad requests…
            ("//live/demo/master.m3u8", 400, None),
            ("/live/%64emo/master.m3u8", 400, None),
            ("/live/demo/%2e/master.m3u8", 400, None),
            ("/live/demo/master.m3u8;x=1", 400, None),
            ("/live/demo/./master.m3u8", 400, None),
            ("/web/../../etc/passwd", 400, None),
            // …and well-formed paths outside the layout name nothing.
            (&*format!("/live/demo/v720/0{msn}.m4s"), 404, None),
            ("/LIVE/demo/master.m3u8", 404, None),
            ("/vod/demo/20-10/master.m3u8", 404, None),
            // A query the layout defines must be well formed.
            ("/live/demo/v720/media.m3u8?_HLS_msn=x", 400, None),
            ("/live/demo/v720/media.m3u8?_HLS_part=1", 400, None),
            // Names that parse but that the window does not have.
            ("/live/demo/v9/media.m3u8", 404, Some(CacheClass::NOT_YET)),
            ("/live/other/master.m3u8", 404, None),
        ] {
            let answer = get(address, "GET", target).await;
            assert_eq!(status(&answer), code, "{target}: {answer}");
            if let Some(cache) = cache {
                assert_eq!(header(&answer, "cache-control"), Some(cache), "{target}");
            }
        }
        let answer = get(address, "GET", "//live/demo/master.m3u8").await;
        assert!(answer.contains("canonical"), "{answer}");

        // Methods: public paths take GET, HEAD and OPTIONS; ingest POST or PUT.
        let answer = get(address, "POST", "/live/demo/master.m3u8").await;
        assert_eq!(status(&answer), 405, "{answer}");
        assert_eq!(header(&answer, "allow"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(
            status(&get(address, "HEAD", "/live/demo/master.m3u8").await),
            200
        );
        assert_eq!(
            status(&get(address, "OPTIONS", "/live/demo/master.m3u8").await),
            204
        );
        assert_eq!(status(&get(address, "GET", "/ingest/demo/v720").await), 405);
        assert_eq!(status(&get(address, "GET", "/ingest/demo").await), 404);
        assert_eq!(status(&get(address, "PUT", "/ingest/a%2Fb/v1").await), 400);
        let answer = get(
            address,
            "GET",
            "/admin/metadata?mount=/live/demo/stream.mp3&mode=updinfo&song=x",
        )
        .await;
        assert_eq!(status(&answer), 403, "{answer}");
        assert!(answer.contains("--admin-token"), "{answer}");
        assert_eq!(status(&get(address, "POST", "/admin/metadata").await), 405);
        assert_eq!(status(&get(address, "GET", "/admin/other").await), 404);
    }
}
