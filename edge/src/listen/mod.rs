//! Where connections come in: the accept loop, then the porter, which reads the first request
//! head and hands the connection to the edge's own HTTP/1 engine (plain HTTP/1.x), to hyper
//! (HTTP/2, and everything over TLS), or, for HTTP/3, the QUIC endpoint beside them. Transport
//! only: every request is answered by `answer`.

pub mod http1;
pub mod http3;
pub mod porter;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use estuary_http::listen::{self, Connections};
use tokio::net::TcpListener;

use crate::answer::handle;
use crate::config::EdgeConfig;
use crate::net;
use crate::node::{Edge, EdgeError};

/// Binds the configured address.
pub async fn bind(config: &EdgeConfig) -> Result<TcpListener, EdgeError> {
    listen::listen(config.listen).map_err(|error| EdgeError::Listen {
        address: config.listen,
        reason: error.to_string(),
    })
}

/// Serves viewers on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
    connections: Arc<Connections>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let counted = connections.clone();
    listen::accept(listener, connections, shutdown, |stream, peer| {
        let edge = edge.clone();
        let closing = counted.closing();
        async move {
            let open = &edge.metrics().open_connections;
            open.fetch_add(1, Ordering::Relaxed);
            serve_connection(&edge, stream, peer, closing).await;
            open.fetch_sub(1, Ordering::Relaxed);
        }
    })
    .await;
}

/// One connection, until it ends or, once `closing` turns true, its current answer is done.
async fn serve_connection(
    edge: &Arc<Edge>,
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    closing: tokio::sync::watch::Receiver<bool>,
) {
    let limits = edge.config().limits;
    let refused = |error: estuary_http::HeadError| {
        if error != estuary_http::HeadError::Closed {
            edge.metrics().refused_heads.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %error, "connection refused by the porter");
        }
    };
    let config = edge.config();
    let proxy_protocol =
        config.proxy_protocol && net::any_contains(&config.trusted_proxies, peer.ip());
    let (proxied, already) = if proxy_protocol {
        match porter::read_proxy(&mut stream, &limits).await {
            Ok(found) => found,
            Err(error) => return refused(error),
        }
    } else {
        (None, bytes::Bytes::new())
    };
    // The client a PROXY header names stands where the socket's peer would.
    let client = proxied.unwrap_or(peer.ip());
    match edge.tls() {
        None => match porter::admit(stream, already, &limits).await {
            Ok((head, connection)) if !head.http2 => {
                let (read, stream) = connection.into_parts();
                http1::serve(edge, stream, bytes::BytesMut::from(read), client, closing).await;
            }
            Ok((_, connection)) => serve_http(edge, connection, client, peer, closing).await,
            Err(error) => refused(error),
        },
        Some(tls) => {
            let handshake = tls
                .acceptor
                .accept(estuary_http::Prefixed::new(already, stream));
            let tls = match tokio::time::timeout(limits.head_timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    edge.metrics().refused_heads.fetch_add(1, Ordering::Relaxed);
                    return tracing::debug!(%peer, %error, "TLS handshake failed");
                }
                Err(_) => return refused(estuary_http::HeadError::TimedOut),
            };
            match porter::admit(tls, bytes::Bytes::new(), &limits).await {
                Ok((_head, connection)) => {
                    serve_http(edge, connection, client, peer, closing).await
                }
                Err(error) => refused(error),
            }
        }
    }
}

/// HTTP/1.1 or HTTP/2 (by ALPN, or by the prior-knowledge preface) on an admitted connection,
/// served by hyper within the edge's limits.
async fn serve_http<S>(
    edge: &Arc<Edge>,
    connection: S,
    client: IpAddr,
    peer: SocketAddr,
    closing: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_edge = edge.clone();
    tracing::trace!(%peer, "served by hyper");
    let limits = edge.config().limits;
    estuary_http::connection::serve(connection, &limits, closing, move |request| {
        let edge = service_edge.clone();
        // The edge answers GET and HEAD, so a request's body is never read.
        let request = request.map(|_| ());
        async move { handle(edge, client, request).await }
    })
    .await;
}
