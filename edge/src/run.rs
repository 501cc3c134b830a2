//! Runs an edge: the node built from its configuration, its listeners (TCP, and QUIC beside it
//! with TLS), the revocation list watched, reports sent to control; then what it is asked
//! (reload, drain, stop) until it stops. A drain keeps serving whoever is here (players come back
//! for their next part, listeners stay on their stream) while the reports say the edge is
//! draining, so that control sends it no one new; the edge stops when nobody is left, or when
//! the grace period ends.

use std::time::Duration;

use estuary_http::lifecycle::{Request, Requester, Requests};
use estuary_http::listen::Connections;
use estuary_proto::systemd::{self, State};

use crate::config::EdgeConfig;
use crate::listen::{self, bind, serve};
use crate::node::{ConfigSource, Edge, EdgeError};

/// How a running edge is driven.
pub struct Lifecycle {
    /// What the edge is asked (signals, and its own admin endpoint).
    pub requests: Requests,
    /// The sending end of `requests`, for the admin endpoint.
    pub requester: Requester,
    /// Reads the configuration again for a reload; none: reloads are refused.
    pub source: Option<ConfigSource>,
}

/// Runs the edge until it is asked to stop, or has drained.
pub async fn run(config: EdgeConfig, lifecycle: Lifecycle) -> Result<(), EdgeError> {
    let Lifecycle {
        mut requests,
        requester,
        source,
    } = lifecycle;
    let edge = Edge::new(config.clone())?;
    if let Some(source) = source {
        edge.attach(source, requester);
    }
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
    let connections = Connections::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, edge.clone(), connections.clone(), async {
        let _ = stopped.await;
    }));
    systemd::notify(State::Ready);
    let grace = config.drain_grace;
    loop {
        match requests.recv().await {
            Some(Request::Reload) => {
                systemd::notify(State::Reloading);
                let _ = edge.reload_now();
                systemd::notify(State::Ready);
            }
            Some(Request::Drain) => {
                systemd::notify(State::Stopping);
                edge.drain();
                drained(&edge, &connections, grace).await;
                break;
            }
            Some(Request::Stop) | None => break,
        }
    }
    tracing::info!("stopping");
    let _ = stop.send(());
    let _ = serving.await;
    Ok(())
}

/// Waits until nobody is served (no request in flight, no stream viewer; connections idle
/// between requests do not count), at most `grace`.
async fn drained(edge: &Edge, connections: &Connections, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let in_flight = edge
            .metrics()
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed);
        let (open, viewers) = (connections.open(), edge.stream_viewers());
        if in_flight <= 0 && viewers == 0 {
            tracing::info!("drained: nobody left");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(open, in_flight, viewers, ?grace, "the grace period is over");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
