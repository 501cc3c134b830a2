//! The edge: what viewers talk to. Connections come in through `listen` (the porter reads the
//! request head and hands the connection on: the edge's own HTTP/1 engine for plain HTTP/1.x,
//! hyper for HTTP/2 and everything over TLS; with TLS, a QUIC endpoint on the same port number
//! serves HTTP/3). Every request is answered by `answer` in three steps: `route` (what the
//! request asks for, in the public URL layout), `admit` (the revocation list and the
//! bouncers), then `fetch` (the pull-through cache, coalescing however many viewers miss at
//! once into one upstream fetch, stale playlists when the upstream fails) or the fan-out
//! engine (`fanout`: continuous streams from one upstream connection each to all their
//! viewers). `node` holds what every connection shares; `run` starts it all. Everything an
//! edge knows comes from its upstreams and its configuration.

pub mod admin;
pub mod admin_token;
pub mod admit;
pub mod answer;
pub mod bouncer;
pub mod cache;
pub mod carry;
pub mod config;
pub mod failure;
pub mod fanout;
pub mod fetch;
pub mod geo;
pub mod handover;
pub mod htpasswd;
pub mod listen;
pub mod metrics;
pub mod node;
pub mod report;
pub mod revoked;
pub mod route;
pub mod run;
pub mod takeover;
pub mod upstream;

pub use config::EdgeConfig;
pub use estuary_proto::net;
pub use node::{Edge, EdgeError};
pub use run::{Lifecycle, run};
