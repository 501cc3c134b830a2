//! Why the packager cannot start.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    #[error("cannot listen on {address}: {error}")]
    Listen {
        address: SocketAddr,
        error: std::io::Error,
    },
    #[error(
        "refusing to listen on {address} with open ingest: anyone who reaches it could publish channels. \
         Give a keycard key (--keycard-secret, ESTUARY_KEYCARD_SECRET, keycard_secret in the config file) \
         so that ingests must sign their requests, listen on a loopback address, or pass --open-ingest \
         if the network in front of it is trusted"
    )]
    OpenIngest { address: SocketAddr },
    #[error("cannot use {dir} as the archive: {error}")]
    Archive { dir: PathBuf, error: std::io::Error },
}
