//! What a client may send and how long it may take: one set of limits for every server, each a
//! documented default that a role's configuration may change.

use std::time::Duration;

/// The limits on a client's requests and connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request head (request line and headers); larger is `431`.
    pub head_bytes: usize,
    /// The most request headers; more is `431`.
    pub headers: usize,
    /// The largest request body a server that does not want one reads past; larger is `413`.
    pub request_body: u64,
    /// How long a request head may take once its first byte came (and, for HTTP/2, a frame
    /// once begun); slower is `408` and a closed connection.
    pub head_timeout: Duration,
    /// How long a connection may stay with no request in flight.
    pub idle_timeout: Duration,
    /// How long a write to a client may make no progress.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes: 16 * 1024,
            headers: 64,
            request_body: 64 * 1024,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
        }
    }
}
