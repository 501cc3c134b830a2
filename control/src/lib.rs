//! Control: what turns edges in several places into a CDN. It keeps the registry of edges fed
//! by their reports, maps each viewer to a client group (coverage zones, then GeoIP), picks a
//! site by the channel's policy and an edge in it by consistent hashing with bounded loads, and
//! redirects the viewer there with a fresh keycard, explaining every decision.

pub mod activity;
pub mod admin;
pub mod config;
pub mod connection;
pub mod coverage;
pub mod front;
pub mod geo;
pub mod keycards;
pub mod origins;
pub mod redirect;
pub mod registry;
pub mod reports;
pub mod routing;
pub mod server;

pub use config::Config;
pub use server::{Control, Keys};
