//! Control: what turns edges in several places into a CDN. It keeps the registry of edges fed
//! by their reports, maps each viewer to a client group (coverage zones, then GeoIP), picks a
//! site by the channel's policy and an edge in it by consistent hashing with bounded loads, and
//! redirects the viewer there with a fresh keycard, explaining every decision.
//!
//! The layers, from the bottom: the sans-IO core ([`routing`], [`viewer`], [`reports`],
//! [`keycards`]); the state ([`state`]: the [`registry`], the [`origins`], the [`activity`]);
//! the two HTTP layers on top of it ([`front`], the front door, and [`api`], axum's API, both
//! answering viewers through [`redirect`]); and [`server`], which listens.

pub mod activity;
pub mod api;
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
pub mod state;
pub mod viewer;

pub use config::{Config, ConfigError};
pub use state::{Control, Keys, StartError};
