//! One connection served by hyper, HTTP/1.1 or HTTP/2 (by ALPN over TLS, by the preface over
//! cleartext), kept to the server's [`Limits`]: hyper's header timeout and head size for
//! HTTP/1.1; for HTTP/2, pings every 20 s (closed when one goes unanswered for 10 s), at most
//! 256 requests open, and the [`guard`](crate::guard) for what hyper does not time (the first
//! request, frames dribbled a byte at a time, idle connections). Every response's body holds
//! the connection's count of open requests until it is over, so that a long answer (a
//! continuous stream, an ingest) keeps its connection from counting as idle.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::Body;
use crate::guard::{Guarded, OpenRequests};
use crate::limits::Limits;

/// An HTTP/2 connection is pinged this often when quiet...
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// ...and closed when a ping goes this long unanswered.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one HTTP/2 connection may have open at once.
pub const H2_MAX_STREAMS: u32 = 256;

/// Serves `connection` until it ends, answering each request with `answer`; once `closing`
/// turns true, it closes gracefully (GOAWAY on HTTP/2; no further request on HTTP/1.1) when
/// the requests open are answered. Errors of the connection (a client gone, a limit passed)
/// end it and are logged at debug level.
pub async fn serve<I, A, F>(
    connection: I,
    limits: &Limits,
    mut closing: tokio::sync::watch::Receiver<bool>,
    answer: A,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let requests = OpenRequests::new();
    let counted = requests.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let open = counted.open();
        let answered = answer(request);
        async move {
            let response = answered.await;
            Ok::<_, Infallible>(response.map(|body| body.holding(open)))
        }
    });
    let connection = Guarded::new(
        connection,
        requests,
        limits.head_timeout,
        limits.idle_timeout,
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.head_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.head_bytes).unwrap_or(u32::MAX));
    let served = builder.serve_connection(TokioIo::new(connection), service);
    tokio::pin!(served);
    let ended = tokio::select! {
        ended = served.as_mut() => ended,
        Ok(()) = async { closing.wait_for(|closing| *closing).await.map(drop) } => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended");
    }
}
