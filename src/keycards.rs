//! `estuary keycard sign|verify`: the operator's tools for keycards, with the same key file
//! (lines of `HEX` or `ID HEX`) that the edge reads.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use estuary_proto::keycard::{self, Keycard, KeycardKey, KeycardRequest};

#[derive(Subcommand)]
pub enum KeycardCommand {
    /// Print a keycard that lets its holder fetch the paths of --acl for --ttl.
    Sign(SignArgs),
    /// Say whether an edge with these keys would let KEYCARD fetch --path now, and if not why.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct SignArgs {
    /// Key file: lines of HEX or ID HEX; the key named by --key-id (else the first) signs.
    #[arg(long)]
    key_file: PathBuf,
    /// Which key of the file signs.
    #[arg(long)]
    key_id: Option<String>,
    /// Paths allowed, with * wildcards, several joined by !, e.g. '/live/demo/*'.
    #[arg(long)]
    acl: String,
    /// How long the keycard works, from now (or from --start-in), e.g. 300s or 2h.
    #[arg(long, default_value = "300s")]
    ttl: String,
    /// Not valid before this long from now.
    #[arg(long)]
    start_in: Option<String>,
    /// A session or viewer id written into the keycard (id=).
    #[arg(long)]
    id: Option<String>,
    /// Opaque data written into the keycard (data=).
    #[arg(long)]
    data: Option<String>,
    /// Let in only the client at this address (ip=).
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The keycard's text (st=…~exp=…~acl=…~hmac=…).
    keycard: String,
    /// The request path to check it against, e.g. /live/demo/master.m3u8.
    #[arg(long)]
    path: String,
    /// Key file: lines of HEX or ID HEX.
    #[arg(long)]
    key_file: PathBuf,
    /// Check at this Unix time instead of now.
    #[arg(long)]
    at: Option<u64>,
    /// The client's address, for a keycard bound to one (ip=).
    #[arg(long)]
    client: Option<std::net::IpAddr>,
}

pub fn read_key_file(path: &Path) -> anyhow::Result<Vec<KeycardKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    keycard::parse_key_file(&text).map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs a keycard command; `Ok(false)` when a keycard is refused.
pub fn run(command: KeycardCommand) -> anyhow::Result<bool> {
    match command {
        KeycardCommand::Sign(args) => {
            let keys = read_key_file(&args.key_file)?;
            let key = match &args.key_id {
                Some(wanted) => keys
                    .iter()
                    .find(|key| key.id.as_ref() == Some(wanted))
                    .with_context(|| {
                        format!("{} has no key named {wanted}", args.key_file.display())
                    })?,
                None => &keys[0],
            };
            let duration = |flag: &str, text: &str| {
                estuary_proto::duration::parse_duration(text).with_context(|| flag.to_owned())
            };
            let start = args
                .start_in
                .as_deref()
                .map(|d| duration("--start-in", d).map(|d| now() + d.as_secs()))
                .transpose()?;
            let ttl = duration("--ttl", &args.ttl)?;
            if ttl.is_zero() {
                bail!("--ttl must be longer than zero");
            }
            let request = KeycardRequest {
                ip: args.ip,
                start,
                expires: start.unwrap_or_else(now) + ttl.as_secs(),
                acl: args.acl,
                id: args.id,
                data: args.data,
            };
            println!("{}", keycard::sign(&request, key));
            Ok(true)
        }
        KeycardCommand::Verify(args) => {
            let keys = read_key_file(&args.key_file)?;
            let at = args.at.unwrap_or_else(now);
            match Keycard::parse(args.keycard.trim())
                .and_then(|card| card.verify(&keys, &args.path, args.client, at))
            {
                Ok(grant) => {
                    println!(
                        "accepted for {}: valid for {} s more (until {})",
                        args.path,
                        grant.until.saturating_sub(at),
                        grant.until
                    );
                    Ok(true)
                }
                Err(error) => {
                    println!("refused for {}: {error}", args.path);
                    Ok(false)
                }
            }
        }
    }
}
