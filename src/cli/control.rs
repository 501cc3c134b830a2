//! `estuary control`: its flags and configuration file, and the run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use estuary_proto::systemd::{self, State};

use estuary_http::lifecycle::{self, Request};

use super::runtime;

#[derive(Args)]
pub(crate) struct ControlArgs {
    /// The configuration file (TOML): sites, coverage zones, GeoIP, keycards, policy,
    /// reports, timeouts; deploy/control.toml is an example with every key.
    #[arg(long, env = "ESTUARY_CONTROL_CONFIG")]
    config: PathBuf,
    /// Address viewers and edges connect to [default: the file's `listen`, else
    /// 127.0.0.1:8070].
    #[arg(long, env = "ESTUARY_CONTROL_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the admin API and dashboard on their own (edges may report there too); the
    /// public address then serves only redirects, reports and health [default: the file's
    /// `admin_listen`, else none: everything on --listen].
    #[arg(long, env = "ESTUARY_CONTROL_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
}

/// Runs control until Ctrl-C or SIGTERM; SIGHUP reads the configuration file again.
pub(crate) fn control(args: ControlArgs) -> anyhow::Result<()> {
    let config = estuary_control::Config::load(&args.config)?;
    let listen = args
        .listen
        .or(config.listen)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8070)));
    let admin_listen = args.admin_listen.or(config.admin_listen);
    let control = estuary_control::Control::new(&config)
        .with_context(|| format!("starting control with {}", args.config.display()))?;
    control.reload_from(args.config.clone());
    runtime()?.block_on(async {
        // Signals are heard from here on, before the ports are bound.
        let (_, requests) = lifecycle::signals();
        let listener = estuary_http::listen(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
        let admin = match admin_listen {
            Some(address) => {
                let admin = estuary_http::listen(address)
                    .with_context(|| format!("cannot listen on {address} (admin)"))?;
                tracing::info!(address = %admin.local_addr()?, "control's admin API listening");
                Some(admin)
            }
            None => None,
        };
        tracing::info!(address = %listener.local_addr()?, sites = config.sites.len(), "control listening");
        systemd::notify(State::Ready);
        let shutdown = until_stopped(control.clone(), requests);
        estuary_control::server::serve(listener, admin, control, shutdown).await?;
        anyhow::Ok(())
    })
}

/// Answers SIGHUP with a reload, telling systemd while it reloads, until SIGTERM or SIGINT.
async fn until_stopped(control: Arc<estuary_control::Control>, mut requests: lifecycle::Requests) {
    // Drain, stop or the end of the signals ends the loop.
    while let Some(Request::Reload) = requests.recv().await {
        systemd::notify(State::Reloading);
        let reloading = control.clone();
        // The outcome is logged and shown in /healthz by the reload itself.
        let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
        systemd::notify(State::Ready);
    }
    systemd::notify(State::Stopping);
}
