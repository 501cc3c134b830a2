//! `estuary demo`: its flags, and the run.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::{parse_duration, runtime, shutdown_signal};
use crate::demo;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Address viewers connect to (the edge; the packager gets a port of its own).
    #[arg(long, env = "ESTUARY_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Stop after this long, e.g. 5m [default: run until stopped].
    #[arg(long)]
    duration: Option<String>,
    /// Folder of the player page (player.html and node_modules/hls.js).
    #[arg(long, env = "ESTUARY_WEB", default_value = "web")]
    web: PathBuf,
    /// Keep every segment in DIR too, served as VOD at /vod/{channel}/{start}-{end}/.
    #[arg(long, env = "ESTUARY_DEMO_ARCHIVE")]
    archive: Option<PathBuf>,
    /// Make the edge ask for keycards (a key is made up for the run; the URLs printed carry
    /// a keycard).
    #[arg(long)]
    keycards: bool,
}

pub(crate) fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_duration("--duration", d))
        .transpose()?;
    let config = demo::DemoConfig {
        listen: args.listen,
        duration,
        web: args.web,
        archive: args.archive,
        keycards: args.keycards,
    };
    runtime()?.block_on(async { demo::run(config, shutdown_signal()).await })
}
