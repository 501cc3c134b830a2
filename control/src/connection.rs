//! Connections that axum serves (through hyper): the rest of a front-door connection after its
//! first request that is not a redirect, and every connection to the admin address. Each has
//! the configured timeouts: a request head must arrive within the header timeout (hyper counts
//! it from the end of the previous response, so it bounds an idle kept-alive connection too),
//! and a write that makes no progress for the write timeout ends the connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;

use crate::config::Timeouts;

/// axum serves `stream` from `peer` until it ends, with `timeouts`.
pub async fn serve_http<S>(app: axum::Router, stream: S, peer: SocketAddr, timeouts: Timeouts)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower_service::Service::call(&mut app.clone(), request)
    });
    let stream = WriteDeadline::new(stream, timeouts.write);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, %peer, "connection ended");
    }
}

/// Serves `app` on every connection to `listener` (the admin address) until `shutdown`.
pub async fn serve_admin(
    listener: TcpListener,
    app: axum::Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_http(app.clone(), stream, peer, timeouts));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept an admin connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

/// A stream whose writes fail with `TimedOut` once one has waited `limit` without progress: a
/// client that stops reading (an event stream it never drains, a response it never takes)
/// does not hold its connection, and the memory queued for it, for ever.
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed when a write is first told to wait, disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner write said `poll`: disarms on progress; on waiting, arms the timer and
    /// turns the wait into an error once it has fired.
    fn watch<T>(
        &mut self,
        context: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(ready) => {
                self.stalled = None;
                Poll::Ready(ready)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(context) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client took nothing for {limit:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(context, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(context, buf);
        self.watch(context, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(context, bufs);
        self.watch(context, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(context);
        self.watch(context, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(context);
        self.watch(context, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_takes_times_out_and_progress_resets_the_clock() {
        // A pipe with 64 bytes of room that nobody reads.
        let (writer, reader) = tokio::io::duplex(64);
        let mut writer = WriteDeadline::new(writer, Duration::from_secs(10));
        writer.write_all(&[0; 64]).await.unwrap();
        let started = tokio::time::Instant::now();
        let error = writer.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        // A slow reader that takes a byte every 5 s keeps the writer going.
        let (writer, mut slow) = tokio::io::duplex(1);
        let mut writer = WriteDeadline::new(writer, Duration::from_secs(10));
        let reading = tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut byte = [0u8; 1];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                slow.read_exact(&mut byte).await.unwrap();
            }
        });
        writer.write_all(&[1; 4]).await.unwrap();
        reading.await.unwrap();
        drop(reader);
    }
}
