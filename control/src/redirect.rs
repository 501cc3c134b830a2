//! A viewer's answer in HTTP, written once for the front door and for axum: a `302` to the
//! edge (no-store, open to every origin), or an RFC 9457 problem with its reason (`404` for a
//! channel no origin has or a path that is not media, `503` and `Retry-After` when no site can
//! take the viewer, `400`/`404` for a path the public layout does not have). Also the axum
//! handler for the viewers' requests that reach axum rather than the front door.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use estuary_http::Body;
use estuary_proto::url::{PublicPath, PublicPathError};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::state::Control;
use crate::viewer::Answer;

/// How long a viewer no site could take should wait before asking again.
const RETRY_AFTER_SECONDS: &str = "2";

/// The response that says `answer`.
pub fn response(answer: &Answer) -> Response<Body> {
    match answer {
        Answer::Redirect(redirect) => {
            let Ok(location) = HeaderValue::try_from(redirect.location.as_str()) else {
                // Edge URLs are checked when reports come in; this is the last line.
                return estuary_http::problem(
                    StatusCode::BAD_GATEWAY,
                    "the chosen edge's URL is not a usable Location",
                );
            };
            let mut response = estuary_http::respond(StatusCode::FOUND, "", Body::empty());
            let headers = response.headers_mut();
            headers.remove(header::CONTENT_TYPE);
            headers.insert(header::LOCATION, location);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Answer::ChannelAbsent(channel) => estuary_http::problem(
            StatusCode::NOT_FOUND,
            format!("no origin has a live channel {channel:?}"),
        ),
        Answer::NoSite(decision) => {
            let mut response =
                estuary_http::problem(StatusCode::SERVICE_UNAVAILABLE, decision.reason());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            response
        }
        Answer::NotMedia => estuary_http::problem(
            StatusCode::NOT_FOUND,
            "control sends viewers of /live/… and /vod/… paths to edges, and has nothing else here",
        ),
    }
}

/// The problem for a request whose path is not one of the public layout.
pub fn not_in_layout(path: &str, error: &PublicPathError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let shown: String = path.chars().take(128).collect();
    estuary_http::problem(status, format!("{shown:?}: {error}"))
}

/// The viewers' requests that reach axum (after another kind of request on the same
/// connection, or a GET with a body), and every path no other route has: a path of the
/// public layout is answered as at the front door; any other is a problem.
pub(crate) async fn viewer(
    State(control): State<Arc<Control>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (uri, headers) = (request.uri(), request.headers());
    let path = match PublicPath::parse(uri.path(), uri.query()) {
        Ok(path) => path,
        Err(error) => return not_in_layout(uri.path(), &error).map(axum::body::Body::new),
    };
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let status = if path.is_media() {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            StatusCode::NOT_FOUND
        };
        let mut refused = estuary_http::problem(
            status,
            format!("{method} is not how {} is asked for", uri.path()),
        );
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused.map(axum::body::Body::new);
    }
    let forwarded_for = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    let answer = control.answer(peer.ip(), &path, forwarded_for);
    response(&answer).map(axum::body::Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Decision, Group};

    #[test]
    fn answers_are_redirects_or_problems() {
        let redirect = response(&Answer::Redirect(crate::viewer::Redirect {
            location: "http://lon-1:8090/live/demo/master.m3u8?keycard=k".into(),
            keycard_id: None,
            decision: Arc::new(decision()),
        }));
        assert_eq!(redirect.status(), StatusCode::FOUND);
        assert_eq!(
            redirect.headers()[header::LOCATION],
            "http://lon-1:8090/live/demo/master.m3u8?keycard=k"
        );
        assert_eq!(redirect.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(redirect.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(redirect.headers().get(header::CONTENT_TYPE).is_none());

        let busy = response(&Answer::NoSite(Arc::new(decision())));
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            busy.headers()[header::CONTENT_TYPE],
            estuary_http::problem::PROBLEM_JSON
        );
        let broken = response(&Answer::Redirect(crate::viewer::Redirect {
            location: "http://lon-1\r\nset-cookie: x".into(),
            keycard_id: None,
            decision: Arc::new(decision()),
        }));
        assert_eq!(broken.status(), StatusCode::BAD_GATEWAY);

        let error = PublicPath::parse("/live/../x", None).unwrap_err();
        assert_eq!(
            not_in_layout("/live/../x", &error).status(),
            StatusCode::BAD_REQUEST
        );
        let error = PublicPath::parse("/api/v2/nothing", None).unwrap_err();
        assert_eq!(
            not_in_layout("/api/v2/nothing", &error).status(),
            StatusCode::NOT_FOUND
        );
    }

    fn decision() -> Decision {
        Decision {
            client: [192, 0, 2, 1].into(),
            channel: "demo".into(),
            policy: crate::config::Policy::Closest,
            group: Group {
                name: "default".into(),
                source: "default",
                country: None,
                city: None,
                latitude: None,
                longitude: None,
            },
            candidates: Vec::new(),
            site: None,
            edge: None,
        }
    }
}
