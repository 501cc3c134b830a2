//! Where connections come in: the accept loop, then the porter, which reads the first request
//! head and hands the connection to the edge's own HTTP/1 engine (plain HTTP/1.x), to hyper
//! (HTTP/2, and everything over TLS), or, for HTTP/3, the QUIC endpoint beside them. Transport
//! only: every request is answered by `answer`.

pub mod h2_guard;
pub mod http1;
pub mod http3;
pub mod porter;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Request;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::answer::handle;
use crate::config::EdgeConfig;
use crate::net;
use crate::node::{Edge, EdgeError};

/// Binds the configured address.
pub async fn bind(config: &EdgeConfig) -> Result<TcpListener, EdgeError> {
    estuary_proto::io::listen(config.listen).map_err(|error| EdgeError::Listen {
        address: config.listen,
        reason: error.to_string(),
    })
}

/// Serves viewers on `listener` until the process ends.
pub async fn serve(listener: TcpListener, edge: Arc<Edge>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        tokio::spawn(async move {
            let open = &edge.metrics().open_connections;
            open.fetch_add(1, Ordering::Relaxed);
            serve_connection(&edge, stream, peer).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_connection(edge: &Arc<Edge>, mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    let refused = |error: porter::HeadError| {
        if error != porter::HeadError::Closed {
            edge.metrics().refused_heads.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %error, "connection refused by the porter");
        }
    };
    let config = edge.config();
    let proxy_protocol =
        config.proxy_protocol && net::any_contains(&config.trusted_proxies, peer.ip());
    let (proxied, already) = if proxy_protocol {
        match porter::read_proxy(&mut stream).await {
            Ok(found) => found,
            Err(error) => return refused(error),
        }
    } else {
        (None, bytes::Bytes::new())
    };
    // The client a PROXY header names stands where the socket's peer would.
    let client = proxied.unwrap_or(peer.ip());
    match edge.tls() {
        None => match porter::admit(stream, already).await {
            Ok((head, connection)) if !head.http2 => {
                let (read, stream) = connection.into_parts();
                http1::serve(edge, stream, bytes::BytesMut::from(read), client).await;
            }
            Ok((_, connection)) => serve_http(edge, connection, client, peer).await,
            Err(error) => refused(error),
        },
        Some(tls) => {
            let handshake = tls.acceptor.accept(porter::Prefixed::new(already, stream));
            let tls = match tokio::time::timeout(porter::HEAD_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    edge.metrics().refused_heads.fetch_add(1, Ordering::Relaxed);
                    return tracing::debug!(%peer, %error, "TLS handshake failed");
                }
                Err(_) => return refused(porter::HeadError::TimedOut),
            };
            match porter::admit(tls, bytes::Bytes::new()).await {
                Ok((_head, connection)) => serve_http(edge, connection, client, peer).await,
                Err(error) => refused(error),
            }
        }
    }
}

/// An HTTP/2 connection is pinged this often when quiet...
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// ...and closed when a ping goes this long unanswered.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one HTTP/2 connection may have open at once.
pub const H2_MAX_STREAMS: u32 = 256;

/// HTTP/1.1 or HTTP/2 (by ALPN, or by the prior-knowledge preface) on an admitted connection.
/// HTTP/1.1 has hyper's header timeout; HTTP/2 is guarded ([`h2_guard`]) so that a
/// request dribbled a byte at a time is cut off after the same head timeout, and a connection
/// with nothing open closes after the idle timeout; unanswered pings close it too.
async fn serve_http<S>(edge: &Arc<Edge>, connection: S, client: IpAddr, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use h2_guard::{Guarded, OpenRequests};
    let requests = OpenRequests::new();
    let counted = requests.clone();
    let service_edge = edge.clone();
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let edge = service_edge.clone();
        let open = counted.open();
        // The edge answers GET and HEAD, so a request's body is never read.
        let request = request.map(|_| ());
        async move {
            let response = handle(edge, client, request).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| body.holding(open)))
        }
    });
    let connection = Guarded::new(
        connection,
        requests,
        porter::HEAD_TIMEOUT,
        http1::IDLE_TIMEOUT,
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(porter::HEAD_TIMEOUT)
        .max_buf_size(porter::MAX_HEAD.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(porter::MAX_HEAD as u32);
    if let Err(error) = builder
        .serve_connection(TokioIo::new(connection), service)
        .await
    {
        tracing::debug!(%peer, %error, "connection ended");
    }
}
