//! The edge: what viewers talk to. Connections meet the porter (which reads the request head
//! and hands the connection on), then the edge's own HTTP/1 engine (plain HTTP/1.x, whole
//! bodies sent by `sendfile` from sealed memory files) or hyper (HTTP/2, and everything over
//! TLS); with TLS, a QUIC endpoint on the same port number serves HTTP/3. All of them answer
//! through one handler. Requests for `/live/…` and `/vod/…` meet the bouncers, then the
//! pull-through cache, which coalesces however many viewers miss at once into one upstream
//! fetch and serves stale playlists when the upstream fails. Continuous streams
//! (`/live/{channel}/stream.{ext}`) go from the HTTP/1 engine to the fan-out engine, which
//! relays each stream from one upstream connection to all its viewers. Everything an edge
//! knows comes from its upstreams and its configuration.

pub mod admit;
pub mod body;
pub mod bouncer;
pub mod cache;
pub mod carry;
pub mod fanout;
pub mod geo;
pub mod h2_guard;
pub mod htpasswd;
pub mod http1;
pub mod http3;
pub mod metrics;
pub mod porter;
pub mod report;
pub mod revoked;
pub mod route;
pub mod sealed;
pub mod server;
pub mod tls;
pub mod upstream;

pub use estuary_proto::net;
pub use server::{Edge, EdgeConfig, EdgeError};
