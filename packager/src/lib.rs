//! The packager service (DESIGN.md "packager"): the I/O around `estuary-packager-core`. The
//! ingest [`receiver`] feeds the core's window, held in the [`state`]; the window's events go
//! to whoever subscribed: the continuous [`streams`] and the [`archive`]. The [`origin`]
//! answers every request (its routes read the state; blocked ones wake when it changes), the
//! [`admin`] endpoint sets titles, [`auth`] checks credentials, [`tally`] counts for
//! `/metrics`, and [`remux`] writes HLS-TS segments. [`config`] reads what an operator wrote,
//! the [`service`] holds what the routes share, and [`run`] binds, serves and drains.

pub mod admin;
pub mod archive;
pub mod auth;
pub mod config;
pub mod error;
pub mod origin;
pub mod player;
pub mod receiver;
pub mod remux;
pub mod run;
pub mod service;
pub mod state;
pub mod streams;
pub mod tally;

pub use config::{Config, ConfigError, Settings};
pub use error::PackagerError;

#[cfg(test)]
mod testing;
