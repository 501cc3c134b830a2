//! `estuary control`: its flags and configuration file, and the run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use estuary_proto::systemd::{self, State};

use super::{runtime, shutdown_signal};

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
        reload_on_hangup(&control)?;
        let shutdown = shutdown_signal();
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
        let shutdown = async {
            shutdown.await;
            systemd::notify(State::Stopping);
        };
        estuary_control::server::serve(listener, admin, control, shutdown).await?;
        anyhow::Ok(())
    })
}

/// Reloads control's configuration on each `SIGHUP`, telling systemd while it does.
fn reload_on_hangup(control: &Arc<estuary_control::Control>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let control = control.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            systemd::notify(State::Reloading);
            let reloading = control.clone();
            // The outcome is logged and shown in /healthz by the reload itself.
            let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
            systemd::notify(State::Ready);
        }
    });
    Ok(())
}
