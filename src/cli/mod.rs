//! The command line of each role: its flags (every one also an `ESTUARY_*` environment
//! variable), turned into the role's configuration and run. What the roles share is here: the
//! runtime, the shutdown signal, and reading the few value types of flags.

pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod demo;
pub(crate) mod edge;
pub(crate) mod ingest;
pub(crate) mod loadtest;
pub(crate) mod packager;

use anyhow::Context;

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a role binds its port before it waits for the signal, and a signal
/// in between would otherwise kill the process instead of stopping it. Call it inside the
/// runtime.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let interrupt = received(signal(SignalKind::interrupt()).ok());
    let terminate = received(signal(SignalKind::terminate()).ok());
    async move {
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
}

pub(crate) fn parse_duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    estuary_proto::duration::parse_duration(text).with_context(|| flag.to_owned())
}

/// Writes a report to stdout; a reader that stopped early (`| head`) is not an error.
pub(crate) fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}
