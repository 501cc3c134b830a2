//! `estuary`: one binary, one subcommand per role. This file only reads the command line and
//! hands each role its configuration.

use std::process::ExitCode;

mod cli;
mod demo;
mod keycards;

use clap::{Parser, Subcommand};

use cli::control::ControlArgs;
use cli::demo::DemoArgs;
use cli::edge::EdgeArgs;
use cli::ingest::IngestArgs;
use cli::loadtest::LoadtestCommand;
use cli::packager::PackagerArgs;

#[derive(Parser)]
#[command(
    name = "estuary",
    version,
    about = "Live-streaming delivery: capture, package, serve, steer"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Every role in one process on a test pattern; prints the player URLs.
    Demo(DemoArgs),
    /// Capture and encode live sources into UTC-locked CMAF tracks, to files or a packager.
    Ingest(Box<IngestArgs>),
    /// Receive CMAF tracks and serve them as LL-HLS, DASH and HLS-TS (the origin).
    Packager(PackagerArgs),
    /// Serve viewers: a pull-through cache with coalescing and bouncers before the packager.
    Edge(Box<EdgeArgs>),
    /// Send each viewer to the best edge by location, cost and load (302 redirects).
    Control(ControlArgs),
    /// Sign or check keycards (EdgeAuth 2.0 tokens).
    #[command(subcommand)]
    Keycard(keycards::KeycardCommand),
    /// Check a role's configuration file, or print a role's documented example.
    #[command(subcommand)]
    Config(cli::config::ConfigCommand),
    /// Measure the system: simulate a request log through control's routing, or make one.
    #[command(subcommand)]
    Loadtest(LoadtestCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ESTUARY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.role {
        Role::Demo(args) => cli::demo::demo(args),
        Role::Ingest(args) => cli::ingest::ingest(*args),
        Role::Packager(args) => cli::packager::packager(args),
        Role::Edge(args) => cli::edge::edge(*args),
        Role::Control(args) => cli::control::control(args),
        Role::Keycard(command) => match keycards::run(command) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(error) => Err(error),
        },
        Role::Config(command) => cli::config::run(command),
        Role::Loadtest(command) => cli::loadtest::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
