//! `estuary packager`: its flags, laid over its configuration file, and the run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use estuary_packager::Config;

use super::runtime;

/// Every flag is also an `ESTUARY_*` environment variable and a key of the configuration file
/// (`--config`, as deploy/packager.toml documents them); a flag given wins over the file, the
/// file over the defaults.
#[derive(Args, Clone)]
pub(crate) struct PackagerArgs {
    /// A configuration file (TOML, as deploy/packager.toml); flags given override its keys.
    #[arg(long, env = "ESTUARY_PACKAGER_CONFIG")]
    config: Option<PathBuf>,
    /// Address for ingest (/ingest/{channel}/{track}) and players (/live/...)
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "ESTUARY_PACKAGER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Segment duration the ingests use; segment numbers are floor(utc / segment)
    /// [default: 2s].
    #[arg(long, env = "ESTUARY_PACKAGER_SEGMENT", value_parser = duration)]
    segment: Option<Duration>,
    /// How much recent media each track keeps [default: 60s].
    #[arg(long, env = "ESTUARY_PACKAGER_WINDOW", value_parser = duration)]
    window: Option<Duration>,
    /// Hex key ingest keycards must be signed with; without it ingest is open, which the
    /// packager allows only on a loopback --listen address (or with --open-ingest).
    #[arg(long, env = "ESTUARY_KEYCARD_SECRET", hide_env_values = true)]
    keycard_secret: Option<String>,
    /// Key id of --keycard-secret (keycards naming another key are refused).
    #[arg(long, env = "ESTUARY_KEYCARD_KEY_ID")]
    keycard_key_id: Option<String>,
    /// Accept ingest without keycards on a --listen address that is not loopback: only for a
    /// network where everyone who can reach the port may publish channels.
    #[arg(long, env = "ESTUARY_PACKAGER_OPEN_INGEST")]
    open_ingest: bool,
    /// Token that /admin/metadata accepts (Authorization: Bearer TOKEN), at least 16
    /// characters; an ingest keycard for the channel is accepted too. Without either, /admin
    /// refuses every request.
    #[arg(long, env = "ESTUARY_PACKAGER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The most tracks a channel may have; an ingest of one more is refused (503)
    /// [default: 16].
    #[arg(long, env = "ESTUARY_PACKAGER_MAX_TRACKS")]
    max_tracks: Option<usize>,
    /// The most channels the packager holds; an ingest of one more is refused (503)
    /// [default: 64].
    #[arg(long, env = "ESTUARY_PACKAGER_MAX_CHANNELS")]
    max_channels: Option<usize>,
    /// A track that takes no header or new chunk for this long is retired (its streams end,
    /// its counters go); a channel goes with its last track [default: 120s].
    #[arg(long, env = "ESTUARY_PACKAGER_RETIRE_AFTER", value_parser = duration)]
    retire_after: Option<Duration>,
    /// A request head must be whole within this long of the connection opening (and, in
    /// HTTP/1.1, of the previous response): slow clients are cut off [default: 10s].
    #[arg(long, env = "ESTUARY_PACKAGER_HEADER_TIMEOUT", value_parser = duration)]
    header_timeout: Option<Duration>,
    /// An ingest body that brings nothing for this long is refused (408) and its connection
    /// closed; the ingest sends a chunk every part [default: 10s].
    #[arg(long, env = "ESTUARY_PACKAGER_INGEST_TIMEOUT", value_parser = duration)]
    ingest_timeout: Option<Duration>,
    /// A connection with no request in flight for this long is closed [default: 60s].
    #[arg(long, env = "ESTUARY_PACKAGER_IDLE_TIMEOUT", value_parser = duration)]
    idle_timeout: Option<Duration>,
    /// Folder of the player page served at / and /play/{channel} [default: web].
    #[arg(long, env = "ESTUARY_WEB")]
    web: Option<PathBuf>,
    /// Keep every segment in DIR too, served as VOD at /vod/{channel}/{start}-{end}/
    /// (start and end in UTC seconds).
    #[arg(long, env = "ESTUARY_PACKAGER_ARCHIVE")]
    archive: Option<PathBuf>,
}

/// The flags given, over the file (or the defaults).
fn layered(args: PackagerArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    macro_rules! set {
        ($($flag:ident),* $(,)?) => {
            $(if let Some(value) = args.$flag { config.$flag = value; })*
        };
    }
    macro_rules! set_some {
        ($($flag:ident),* $(,)?) => {
            $(if args.$flag.is_some() { config.$flag = args.$flag; })*
        };
    }
    set! {
        listen, segment, window, max_tracks, max_channels, retire_after, header_timeout,
        ingest_timeout, idle_timeout,
    }
    set_some! { keycard_secret, keycard_key_id, admin_token, web, archive }
    if args.open_ingest {
        config.open_ingest = true;
    }
    Ok(config)
}

/// The settings the flags and the file give, resolved; errors name where they came from.
fn configuration(args: &PackagerArgs) -> anyhow::Result<estuary_packager::Settings> {
    let source = args.config.as_ref().map_or("the flags".to_owned(), |path| {
        format!("{} and the flags", path.display())
    });
    layered(args.clone())?
        .resolve()
        .with_context(|| format!("the configuration from {source}"))
}

pub(crate) fn packager(args: PackagerArgs) -> anyhow::Result<()> {
    let settings = configuration(&args)?;
    // A reload (SIGHUP, POST /admin/reload) reads the file again, with the same flags over it;
    // without a file there is nothing that could have changed.
    let source: Option<estuary_packager::service::ConfigSource> =
        args.config.is_some().then(|| {
            Arc::new(move || configuration(&args).map_err(|error| format!("{error:#}")))
                as estuary_packager::service::ConfigSource
        });
    runtime()?.block_on(async {
        let (_, requests) = estuary_http::lifecycle::signals();
        let lifecycle = estuary_packager::run::Lifecycle { requests, source };
        estuary_packager::run::run(settings, lifecycle).await
    })?;
    Ok(())
}

/// A duration flag: `2s`, `500ms`, `5m`.
fn duration(text: &str) -> Result<Duration, String> {
    estuary_proto::duration::parse_duration(text).map_err(|error| error.to_string())
}
