//! What a request asks the edge to do, decided from its method and target alone (sans IO): the
//! public layout parsed into a [`PublicPath`], or a refusal. Nothing that does not parse goes
//! further: not to the bouncers, the cache, the fan-out engine or an upstream. So a packager's
//! `/ingest/…` and `/admin/…` are not reachable through an edge, and a path that needs a keycard
//! has exactly one spelling, the one its keycard's ACL is matched against.

use estuary_proto::url::{CacheClass, PublicPath};
use hyper::{Method, StatusCode, Uri};

/// The edge's decision for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Answered at once with this status and reason; nothing else is done.
    Refuse { status: StatusCode, reason: String },
    /// A CORS preflight.
    Preflight,
    /// `/healthz`, answered by the edge itself.
    Health,
    /// `/metrics`, answered by the edge itself.
    Metrics,
    /// `POST /admin/reload` or `/admin/drain`: the edge's own, never forwarded.
    Admin(crate::admin::Action),
    /// A continuous stream, for the fan-out engine (never the cache).
    Stream(PublicPath),
    /// An object of the layout, through the cache from the upstreams.
    Object(PublicPath),
}

impl Route {
    /// Whether the bouncers judge the request before it is served.
    pub fn is_guarded(&self) -> bool {
        match self {
            Route::Stream(path) | Route::Object(path) => path.is_media(),
            _ => false,
        }
    }
}

/// Routes a request by its target, then its method: a path that is not of the layout is not
/// there for any method (a packager's `POST /ingest/…` through an edge is a 404).
pub fn route(method: &Method, uri: &Uri) -> Route {
    if method == Method::POST
        && let Some(action) = crate::admin::Action::at(uri.path())
    {
        return Route::Admin(action);
    }
    let path = match PublicPath::parse(uri.path(), uri.query()) {
        Ok(path) => path,
        Err(error) => {
            return Route::Refuse {
                status: StatusCode::from_u16(error.status()).unwrap_or(StatusCode::NOT_FOUND),
                reason: error.to_string(),
            };
        }
    };
    if method == Method::OPTIONS {
        return Route::Preflight;
    }
    if method != Method::GET && method != Method::HEAD {
        return Route::Refuse {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "the edge serves GET and HEAD".into(),
        };
    }
    match path.cache_class() {
        CacheClass::Local if path == PublicPath::Health => Route::Health,
        CacheClass::Local => Route::Metrics,
        CacheClass::Stream => Route::Stream(path),
        _ => Route::Object(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(method: &Method, target: &str) -> Route {
        route(method, &target.parse().unwrap())
    }

    /// The canonical target of what `target` routes to, or the refusal's status.
    fn outcome(method: &Method, target: &str) -> Result<(&'static str, String), u16> {
        match routed(method, target) {
            Route::Refuse { status, .. } => Err(status.as_u16()),
            Route::Preflight => Ok(("preflight", String::new())),
            Route::Health => Ok(("health", String::new())),
            Route::Metrics => Ok(("metrics", String::new())),
            Route::Admin(action) => Ok(("admin", format!("{action:?}"))),
            Route::Stream(path) => Ok(("stream", path.to_string())),
            Route::Object(path) => Ok(("object", path.to_string())),
        }
    }

    #[test]
    fn every_row_of_the_layout_is_routed() {
        let get = Method::GET;
        let rows: &[(&str, &str, &str)] = &[
            ("/live/demo/master.m3u8", "object", "/live/demo/master.m3u8"),
            (
                "/live/demo/v720/media.m3u8?_HLS_msn=10&_HLS_part=2&keycard=x",
                "object",
                "/live/demo/v720/media.m3u8?_HLS_msn=10&_HLS_part=2",
            ),
            (
                "/live/demo/v720/media.m3u8?_HLS_skip=YES",
                "object",
                "/live/demo/v720/media.m3u8?_HLS_skip=YES",
            ),
            (
                "/live/demo/v720/init.mp4",
                "object",
                "/live/demo/v720/init.mp4",
            ),
            (
                "/live/demo/v720/10.m4s?cb=1",
                "object",
                "/live/demo/v720/10.m4s",
            ),
            (
                "/live/demo/v720/10.3.m4s",
                "object",
                "/live/demo/v720/10.3.m4s",
            ),
            (
                "/live/demo/manifest.mpd",
                "object",
                "/live/demo/manifest.mpd",
            ),
            (
                "/live/demo/ts/master.m3u8",
                "object",
                "/live/demo/ts/master.m3u8",
            ),
            (
                "/live/demo/ts/v360/media.m3u8",
                "object",
                "/live/demo/ts/v360/media.m3u8",
            ),
            (
                "/live/demo/ts/v360/10.ts",
                "object",
                "/live/demo/ts/v360/10.ts",
            ),
            ("/live/demo/stream.ts", "stream", "/live/demo/stream.ts"),
            (
                "/live/demo/stream.mp4?keycard=x&track=v360",
                "stream",
                "/live/demo/stream.mp4?track=v360",
            ),
            ("/live/demo/stream.webm", "stream", "/live/demo/stream.webm"),
            ("/live/demo/stream.aac", "stream", "/live/demo/stream.aac"),
            ("/live/demo/stream.mp3", "stream", "/live/demo/stream.mp3"),
            (
                "/vod/demo/100-200/master.m3u8",
                "object",
                "/vod/demo/100-200/master.m3u8",
            ),
            (
                "/vod/demo/100-200/v720/media.m3u8",
                "object",
                "/vod/demo/100-200/v720/media.m3u8",
            ),
            (
                "/vod/demo/100-200/v720/init-50.mp4",
                "object",
                "/vod/demo/100-200/v720/init-50.mp4",
            ),
            (
                "/vod/demo/100-200/v720/50.m4s",
                "object",
                "/vod/demo/100-200/v720/50.m4s",
            ),
            ("/healthz", "health", ""),
            ("/metrics", "metrics", ""),
            ("/", "object", "/"),
            ("/play/demo?format=dash", "object", "/play/demo"),
            ("/web/hls.min.js", "object", "/web/hls.min.js"),
        ];
        for (target, kind, canonical) in rows {
            assert_eq!(
                outcome(&get, target),
                Ok((*kind, canonical.to_string())),
                "{target}"
            );
            assert_eq!(
                outcome(&Method::HEAD, target),
                outcome(&get, target),
                "HEAD {target}"
            );
        }
    }

    #[test]
    fn what_is_not_the_layout_goes_nowhere() {
        let get = Method::GET;
        for (target, status) in [
            ("//live/demo/master.m3u8", 400),
            ("/live//demo/stream.mp3", 400),
            ("/live/%64emo/master.m3u8", 400),
            ("/live/demo/%2e%2e/x", 400),
            ("/live/demo/../x", 400),
            ("/live/demo;/master.m3u8", 400),
            ("/LIVE/demo/master.m3u8", 404),
            (
                "/admin/metadata?mount=/live/demo/stream.mp3&mode=updinfo&song=x",
                404,
            ),
            ("/ingest/demo/v720", 404),
            ("/live/demo/v720/media.m3u8?_HLS_msn=x", 400),
            ("/live/demo/stream.mp3?track=a/b", 404),
            ("/favicon.ico", 404),
        ] {
            assert_eq!(outcome(&get, target), Err(status), "{target}");
        }
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(
                outcome(&method, "/live/demo/master.m3u8"),
                Err(405),
                "{method}"
            );
            assert_eq!(outcome(&method, "/ingest/demo/v720"), Err(404), "{method}");
        }
        assert_eq!(
            outcome(&Method::OPTIONS, "/live/demo/master.m3u8"),
            Ok(("preflight", String::new()))
        );
        assert_eq!(outcome(&Method::OPTIONS, "/admin/metadata"), Err(404));
        // The edge's own admin endpoints, by POST alone; the rest of /admin is no path.
        assert_eq!(
            outcome(&Method::POST, "/admin/reload"),
            Ok(("admin", "Reload".into()))
        );
        assert_eq!(
            outcome(&Method::POST, "/admin/drain"),
            Ok(("admin", "Drain".into()))
        );
        assert_eq!(outcome(&Method::GET, "/admin/reload"), Err(404));
        assert_eq!(outcome(&Method::POST, "//admin/reload"), Err(400));
    }

    #[test]
    fn media_is_guarded_and_the_rest_is_not() {
        let guarded = |target: &str| routed(&Method::GET, target).is_guarded();
        assert!(guarded("/live/demo/master.m3u8"));
        assert!(guarded("/live/demo/stream.mp3"));
        assert!(guarded("/vod/demo/1-2/master.m3u8"));
        assert!(!guarded("/play/demo"));
        assert!(!guarded("/web/mpegts.js"));
        assert!(!guarded("/healthz"));
        assert!(!guarded("//live/demo/master.m3u8"));
    }

    #[test]
    fn an_absolute_form_target_is_routed_by_its_path() {
        assert_eq!(
            outcome(&Method::GET, "http://edge.example/live/demo/master.m3u8"),
            Ok(("object", "/live/demo/master.m3u8".into()))
        );
        assert!(routed(&Method::GET, "http://edge.example/live/demo/master.m3u8").is_guarded());
    }
}
