//! `estuary ingest`: its flags or configuration file, and the run.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use estuary_ingest::IngestRun;
use estuary_ingest::config::{ChannelSpec, ConfigFile};

use super::{parse_duration, print_out, runtime, shutdown_signal};

#[derive(Args)]
pub(crate) struct IngestArgs {
    /// TOML file with outputs and [[channel]] tables (see deploy/ingest.toml); flags below
    /// override its outputs.
    #[arg(long, env = "ESTUARY_INGEST_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    channel: ChannelSpec,
    /// Write one file per track into DIR (v720.mp4, v360.mp4, a128.mp4).
    #[arg(long, env = "ESTUARY_INGEST_OUT")]
    out: Option<PathBuf>,
    /// Send each track as a chunked POST to URL/{channel}/{track}, e.g. http://127.0.0.1:8080/ingest.
    #[arg(long, env = "ESTUARY_INGEST_TO")]
    to: Option<String>,
    /// Hex key that signs the keycard sent with each POST.
    #[arg(long, env = "ESTUARY_KEYCARD_SECRET", hide_env_values = true)]
    keycard_secret: Option<String>,
    /// Key id written into the keycard (kid=), for key rotation.
    #[arg(long, env = "ESTUARY_KEYCARD_KEY_ID")]
    keycard_key_id: Option<String>,
    /// Serve /healthz and /metrics on this address, e.g. 127.0.0.1:9101.
    #[arg(long, env = "ESTUARY_INGEST_ADMIN")]
    admin: Option<SocketAddr>,
    /// Stop after this long, e.g. 12s or 5m (the last fragment is finished first).
    #[arg(long)]
    duration: Option<String>,
    /// Print which sources, devices and encoders this machine has, then exit.
    #[arg(long)]
    probe: bool,
    /// Print each channel's pipeline as a gst-launch-1.0 line, then exit.
    #[arg(long)]
    print_pipeline: bool,
}

pub(crate) fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    if args.probe {
        return print_out(&estuary_ingest::probe_report()?);
    }
    let (mut outputs, specs) = match &args.config {
        Some(path) => {
            if args.channel.has_any_field() {
                bail!(
                    "channel flags (--source, --renditions, …) go into the [[channel]] tables of {} \
                     when --config is given",
                    path.display()
                );
            }
            let file = ConfigFile::load(path)?;
            if file.channels.is_empty() {
                bail!("{} has no [[channel]] table", path.display());
            }
            (file.outputs, file.channels)
        }
        None => (Default::default(), vec![args.channel.clone()]),
    };
    let channels = specs
        .iter()
        .map(ChannelSpec::validate)
        .collect::<Result<Vec<_>, _>>()?;
    if args.print_pipeline {
        let mut text = String::from(
            "# cmafmux is built into estuary (gst-plugin-fmp4); gst-launch-1.0 finds it only where\n\
             # that plugin is installed (libgstfmp4.so in GST_PLUGIN_PATH).\n",
        );
        for (name, launch) in estuary_ingest::describe(&channels)? {
            text.push_str(&format!("# channel {name}\ngst-launch-1.0 -e {launch}\n"));
        }
        return print_out(&text);
    }
    outputs.out = args.out.or(outputs.out);
    outputs.to = args.to.or(outputs.to);
    outputs.keycard_secret = args.keycard_secret.or(outputs.keycard_secret);
    outputs.keycard_key_id = args.keycard_key_id.or(outputs.keycard_key_id);
    outputs.admin = args.admin.or(outputs.admin);
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_duration("--duration", d))
        .transpose()?;
    let run = IngestRun {
        channels,
        outputs,
        duration,
    };
    runtime()?.block_on(async { estuary_ingest::run(run, shutdown_signal()).await })?;
    Ok(())
}
