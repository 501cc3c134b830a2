//! What every Estuary server shares of HTTP, written once: the limits a request must keep
//! ([`limits`]), a sans-IO reader of request heads and their refusals ([`head`]) and of the PROXY
//! protocol ([`proxy`]), the HTTP/1 response head writer ([`response`]), response bodies that
//! are whole, growing or sealed in memory files ([`body`], [`sealed`]), answers and RFC 9457
//! problems with CORS ([`problem`]), listening sockets and their accept loops ([`listen`]), and
//! hyper connections kept to the same limits over HTTP/1.1 and HTTP/2 ([`connection`],
//! [`guard`]). The edge, the packager and control serve through these.

pub mod body;
pub mod connection;
pub mod guard;
pub mod head;
pub mod lifecycle;
pub mod limits;
pub mod listen;
pub mod problem;
pub mod proxy;
pub mod response;
pub mod sealed;

pub use body::{Body, Growing, Now};
pub use head::{FirstLine, HeadError, ParsedRequest};
pub use limits::Limits;
pub use listen::{Prefixed, listen, read_request_bytes};
pub use problem::{preflight, problem, respond};
