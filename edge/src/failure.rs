//! Who failed, when an object could not be had: the upstreams (502), their silence (504), or
//! the edge itself (500). The cache hands the same failure to every viewer who waited for
//! the fetch.

use hyper::StatusCode;

use crate::upstream::UpstreamError;

/// Why an object could not be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The upstreams failed: refused, unreachable, or answered 5xx.
    #[error("{0}")]
    Upstream(String),
    /// No upstream answered in time.
    #[error("{0}")]
    TimedOut(String),
    /// The edge could not ask (a request it could not build).
    #[error("{0}")]
    Internal(String),
}

impl FetchError {
    pub fn status(&self) -> StatusCode {
        match self {
            FetchError::Upstream(_) => StatusCode::BAD_GATEWAY,
            FetchError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            FetchError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<UpstreamError> for FetchError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Unreachable(_) => FetchError::Upstream(error.to_string()),
            UpstreamError::TimedOut(_) => FetchError::TimedOut(error.to_string()),
            UpstreamError::BadUrl(_) => FetchError::Internal(error.to_string()),
        }
    }
}
