//! Runs an edge: the node built from its configuration, its listeners (TCP, and QUIC beside it
//! with TLS), the revocation list watched, reports sent to control, until shutdown.

use estuary_http::listen::Connections;

use crate::config::EdgeConfig;
use crate::listen::{self, bind, serve};
use crate::node::{Edge, EdgeError};

/// Runs the edge until `shutdown` resolves.
pub async fn run(
    config: EdgeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), EdgeError> {
    let edge = Edge::new(config.clone())?;
    let listener = bind(&config).await?;
    let address = listener.local_addr().unwrap_or(config.listen);
    match edge.tls_fingerprint() {
        Some(fingerprint) => {
            let spki = edge
                .tls()
                .and_then(listen::tls::Tls::spki_sha256)
                .unwrap_or_default();
            tracing::info!(%address, upstreams = ?config.upstreams, certificate = %fingerprint, %spki, "edge listening (HTTPS)")
        }
        None => tracing::info!(%address, upstreams = ?config.upstreams, "edge listening"),
    }
    if let Some(revoked) = edge.gate().revoked() {
        tokio::spawn(revoked.clone().watch());
    }
    if let Some((control, identity)) = config.control.clone() {
        tokio::spawn(crate::report::run(edge.clone(), control, identity));
    }
    if let Some(endpoint) = listen::http3::bind(&edge, address)? {
        tracing::info!(%address, "HTTP/3 on UDP");
        tokio::spawn(listen::http3::serve(endpoint, edge.clone()));
    }
    serve(listener, edge, Connections::new(), shutdown).await;
    tracing::info!("stopping");
    Ok(())
}
