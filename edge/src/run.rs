//! Runs an edge: the node built from its configuration, its listeners (TCP, and QUIC beside it
//! with TLS; bound, or taken over from the edge it upgrades), the revocation list watched,
//! reports sent to control; then what it is asked (reload, drain, stop) until it stops. A drain
//! keeps serving whoever is here (players come back for their next part, listeners stay on
//! their stream) while the reports say the edge is draining, so that control sends it no one
//! new; the edge stops when nobody is left, or when the grace period ends. When a new edge has
//! taken its listeners over ([`crate::takeover`]), it stops accepting and reporting and
//! finishes what it serves the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use estuary_http::lifecycle::{Request, Requester, Requests};
use estuary_http::listen::Connections;
use estuary_proto::systemd::{self, State};

use crate::config::EdgeConfig;
use crate::listen::{self, bind, serve};
use crate::node::{ConfigSource, Edge, EdgeError};
use crate::takeover::{self, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How a running edge is driven.
pub struct Lifecycle {
    /// What the edge is asked (signals, and its own admin endpoint).
    pub requests: Requests,
    /// The sending end of `requests`, for the admin endpoint.
    pub requester: Requester,
    /// Reads the configuration again for a reload; none: reloads are refused.
    pub source: Option<ConfigSource>,
    /// Take the listening sockets of the edge offering them at this path instead of binding.
    pub takeover: Option<PathBuf>,
}

/// Runs the edge until it is asked to stop, has drained, or has handed its sockets to the edge
/// that upgrades it and served what it had.
pub async fn run(config: EdgeConfig, lifecycle: Lifecycle) -> Result<(), EdgeError> {
    let Lifecycle {
        mut requests,
        requester,
        source,
        takeover,
    } = lifecycle;
    let edge = Edge::new(config.clone())?;
    if let Some(source) = source {
        edge.attach(source, requester);
    }
    let (listener, taken_udp, taken) = match &takeover {
        Some(path) => {
            let (listeners, taken) = takeover::take(path).map_err(|error| EdgeError::Listen {
                address: config.listen,
                reason: error.to_string(),
            })?;
            let listener = tokio_listener(listeners.tcp, config.listen)?;
            (listener, listeners.udp, Some(taken))
        }
        None => (bind(&config).await?, None, None),
    };
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
    let reporter = config.control.clone().map(|(control, identity)| {
        tokio::spawn(crate::report::run(edge.clone(), control, identity))
    });
    let (quic, offered_udp) = match listen::http3::bind(&edge, address, taken_udp)? {
        Some((endpoint, offered)) => {
            tracing::info!(%address, "HTTP/3 on UDP");
            tokio::spawn(listen::http3::serve(endpoint.clone(), edge.clone()));
            (Some(endpoint), Some(offered))
        }
        None => (None, None),
    };
    let offered = match &config.takeover_socket {
        Some(_) => Some(Listeners {
            tcp: duplicate(&listener, address)?,
            udp: offered_udp,
        }),
        None => None,
    };
    let connections = Connections::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut stop = Some(stop);
    let serving = tokio::spawn(serve(listener, edge.clone(), connections.clone(), async {
        let _ = stopped.await;
    }));
    systemd::notify(State::Ready);
    if let Some(taken) = taken {
        // The edge that had the sockets stops accepting from now on, and hands its
        // continuous-stream viewers over.
        match taken.ready() {
            Ok(incoming) => {
                tokio::spawn(crate::handover::take_viewers(edge.clone(), incoming));
            }
            Err(error) => {
                tracing::warn!(%error, "the edge taken over did not hear that this one serves")
            }
        }
        tracing::info!(%address, "took over the listening sockets");
    }
    let mut handed_over = offer(config.takeover_socket.clone(), offered);
    let grace = config.drain_grace;
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(Request::Reload) => {
                    systemd::notify(State::Reloading);
                    let _ = edge.reload_now();
                    systemd::notify(State::Ready);
                }
                Some(Request::Drain) => {
                    systemd::notify(State::Stopping);
                    edge.drain();
                    // Connections close once their answers are done (GOAWAY on HTTP/2), so
                    // that clients open new ones, which the edge still takes.
                    connections.close_gracefully();
                    drained(&edge, &connections, grace).await;
                    break;
                }
                Some(Request::Stop) | None => break,
            },
            Ok(handover) = &mut handed_over => {
                // The new edge serves on the same sockets and reports as this one: this one
                // says nothing more to control, takes no one new, hands its continuous-stream
                // viewers over, and finishes what else it serves.
                tracing::info!("the listening sockets were taken over: finishing what is served here");
                systemd::notify(State::Stopping);
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(reporter) = &reporter {
                    reporter.abort();
                }
                if let Some(quic) = &quic {
                    quic.close(0u32.into(), b"upgraded");
                }
                // Clients' next requests go to the new edge: HTTP/2 connections get GOAWAY,
                // HTTP/1.1 ones close after their answer.
                connections.close_gracefully();
                crate::handover::send_viewers(&edge, handover).await;
                break drained(&edge, &connections, grace).await;
            }
        }
    }
    tracing::info!("stopping");
    if let Some(stop) = stop.take() {
        let _ = stop.send(());
    }
    let _ = serving.await;
    Ok(())
}

/// Offers `listeners` at `path` on a thread of its own (accepting on a Unix socket blocks); the
/// receiver resolves once an edge has taken them (with the connection the viewers go on), and
/// never when there is nothing to offer or the offer failed.
fn offer(
    path: Option<PathBuf>,
    listeners: Option<Listeners>,
) -> oneshot::Receiver<takeover::Handover> {
    let (taken, handed_over) = oneshot::channel();
    if let (Some(path), Some(listeners)) = (path, listeners) {
        std::thread::spawn(move || match takeover::offer(&path, &listeners) {
            Ok(handover) => {
                let _ = taken.send(handover);
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot offer the sockets for a takeover");
                // Held, so that the receiver waits forever rather than failing.
                std::mem::forget(taken);
            }
        });
    } else {
        std::mem::forget(taken);
    }
    handed_over
}

/// A second handle on `listener`'s socket, to offer while the first one accepts.
fn duplicate(
    listener: &TcpListener,
    address: SocketAddr,
) -> Result<std::net::TcpListener, EdgeError> {
    use std::os::fd::AsFd as _;
    listener
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::TcpListener::from)
        .map_err(|error| EdgeError::Listen {
            address,
            reason: format!("cannot keep the socket to offer: {error}"),
        })
}

/// A listening socket received from another edge, ready for the runtime.
fn tokio_listener(
    socket: std::net::TcpListener,
    address: SocketAddr,
) -> Result<TcpListener, EdgeError> {
    socket
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(socket))
        .map_err(|error| EdgeError::Listen {
            address,
            reason: format!("the socket taken over: {error}"),
        })
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
