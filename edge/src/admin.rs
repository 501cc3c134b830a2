//! The edge's own admin endpoints, for its operator: `POST /admin/reload` (read the
//! configuration again) and `POST /admin/drain` (drain, then stop). They exist only when an admin
//! token is configured, and need it as `Authorization: Bearer`; without a token they are not
//! there at all (404), as nothing under `/admin` is forwarded to a packager.

use std::sync::Arc;

use estuary_http::lifecycle::Request as LifecycleRequest;
use estuary_http::{Body, problem, respond};
use hyper::header::{self, HeaderMap};
use hyper::{Response, StatusCode};

use crate::node::Edge;

/// What an admin request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Reload,
    Drain,
}

impl Action {
    /// The action at `path`, for `POST` only.
    pub fn at(path: &str) -> Option<Action> {
        match path {
            "/admin/reload" => Some(Action::Reload),
            "/admin/drain" => Some(Action::Drain),
            _ => None,
        }
    }
}

/// Answers an admin request.
pub async fn answer(edge: &Arc<Edge>, action: Action, headers: &HeaderMap) -> Response<Body> {
    let Some(token) = edge.admin_token() else {
        return problem(
            StatusCode::NOT_FOUND,
            "nothing of the public layout is at this path",
        );
    };
    if !token.admits(headers) {
        let mut refused = problem(
            StatusCode::UNAUTHORIZED,
            "the admin token is required (Authorization: Bearer …)",
        );
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    match action {
        Action::Reload => match edge.reload_now() {
            Ok(reloaded) => {
                let list = |keys: &[&str]| {
                    keys.iter()
                        .map(|key| format!("\"{key}\""))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                respond(
                    StatusCode::OK,
                    "application/json",
                    Body::text(format!(
                        "{{\"reloaded\":true,\"applied\":[{}],\"needs_restart\":[{}]}}\n",
                        list(&reloaded.applied),
                        list(&reloaded.needs_restart)
                    )),
                )
            }
            Err(reason) => problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("nothing changed: {reason}"),
            ),
        },
        Action::Drain => {
            edge.request(LifecycleRequest::Drain).await;
            respond(
                StatusCode::ACCEPTED,
                "application/json",
                Body::text("{\"draining\":true}\n"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_token::AdminToken;
    use hyper::header::HeaderValue;

    #[test]
    fn the_token_is_checked_whole() {
        let token = AdminToken::new("s3cret-token-of-some-length");
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert!(token.admits(&with("Bearer s3cret-token-of-some-length")));
        assert!(!token.admits(&with("Bearer s3cret-token-of-some-lengt")));
        assert!(!token.admits(&with("Basic s3cret-token-of-some-length")));
        assert!(!token.admits(&HeaderMap::new()));
        assert_eq!(Action::at("/admin/reload"), Some(Action::Reload));
        assert_eq!(Action::at("/admin/drain"), Some(Action::Drain));
        assert_eq!(Action::at("/admin/metadata"), None);
    }
}
