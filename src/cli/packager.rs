//! `estuary packager`: its flags, and the run.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::{parse_duration, runtime, shutdown_signal};

#[derive(Args)]
pub(crate) struct PackagerArgs {
    /// Address for ingest (/ingest/{channel}/{track}) and players (/live/...).
    #[arg(
        long,
        env = "ESTUARY_PACKAGER_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Segment duration the ingests use; segment numbers are floor(utc / segment).
    #[arg(long, env = "ESTUARY_PACKAGER_SEGMENT", default_value = "2s")]
    segment: String,
    /// How much recent media each track keeps.
    #[arg(long, env = "ESTUARY_PACKAGER_WINDOW", default_value = "60s")]
    window: String,
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
    /// The most tracks a channel may have; an ingest of one more is refused (503).
    #[arg(long, env = "ESTUARY_PACKAGER_MAX_TRACKS", default_value_t = 16)]
    max_tracks: usize,
    /// The most channels the packager holds; an ingest of one more is refused (503).
    #[arg(long, env = "ESTUARY_PACKAGER_MAX_CHANNELS", default_value_t = 64)]
    max_channels: usize,
    /// A track that takes no header or new chunk for this long is retired (its streams end,
    /// its counters go); a channel goes with its last track.
    #[arg(long, env = "ESTUARY_PACKAGER_RETIRE_AFTER", default_value = "120s")]
    retire_after: String,
    /// A request head must be whole within this long of the connection opening (and, in
    /// HTTP/1.1, of the previous response): slow clients are cut off.
    #[arg(long, env = "ESTUARY_PACKAGER_HEADER_TIMEOUT", default_value = "10s")]
    header_timeout: String,
    /// An ingest body that brings nothing for this long is refused (408) and its connection
    /// closed; the ingest sends a chunk every part.
    #[arg(long, env = "ESTUARY_PACKAGER_INGEST_TIMEOUT", default_value = "10s")]
    ingest_timeout: String,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "ESTUARY_PACKAGER_IDLE_TIMEOUT", default_value = "60s")]
    idle_timeout: String,
    /// Folder of the player page served at / and /play/{channel}.
    #[arg(long, env = "ESTUARY_WEB", default_value = "web")]
    web: PathBuf,
    /// Keep every segment in DIR too, served as VOD at /vod/{channel}/{start}-{end}/
    /// (start and end in UTC seconds).
    #[arg(long, env = "ESTUARY_PACKAGER_ARCHIVE")]
    archive: Option<PathBuf>,
}

pub(crate) fn packager(args: PackagerArgs) -> anyhow::Result<()> {
    let window = estuary_packager::window::WindowConfig {
        segment: parse_duration("--segment", &args.segment)?,
        window: parse_duration("--window", &args.window)?,
        max_tracks: args.max_tracks,
        max_channels: args.max_channels,
        retire_after: parse_duration("--retire-after", &args.retire_after)?,
    };
    if window.segment.is_zero() || window.window < window.segment {
        bail!(
            "--window ({:?}) must hold at least one --segment ({:?})",
            window.window,
            window.segment
        );
    }
    if window.max_tracks == 0 || window.max_channels == 0 {
        bail!("--max-tracks and --max-channels must be at least 1");
    }
    if window.retire_after < window.segment {
        bail!(
            "--retire-after ({:?}) must be at least one --segment ({:?})",
            window.retire_after,
            window.segment
        );
    }
    let keys = match &args.keycard_secret {
        Some(secret) => vec![
            estuary_proto::KeycardKey::from_hex(args.keycard_key_id.as_deref(), secret)
                .context("--keycard-secret")?,
        ],
        None => Vec::new(),
    };
    let admin_token = args
        .admin_token
        .as_deref()
        .map(estuary_packager::admin::AdminToken::new)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--admin-token")?;
    let limits = estuary_http::Limits {
        head_timeout: parse_duration("--header-timeout", &args.header_timeout)?,
        idle_timeout: parse_duration("--idle-timeout", &args.idle_timeout)?,
        ..estuary_http::Limits::default()
    };
    let ingest_timeout = parse_duration("--ingest-timeout", &args.ingest_timeout)?;
    if limits.head_timeout.is_zero() || ingest_timeout.is_zero() || limits.idle_timeout.is_zero()
    {
        bail!("--header-timeout, --ingest-timeout and --idle-timeout must be longer than zero");
    }
    let config = estuary_packager::PackagerConfig {
        listen: args.listen,
        window,
        keys,
        open_ingest: args.open_ingest,
        admin_token,
        limits,
        ingest_timeout,
        web: Some(args.web),
        archive: args.archive,
    };
    runtime()?
        .block_on(async { estuary_packager::server::run(config, shutdown_signal()).await })?;
    Ok(())
}
