//! Connections that axum serves (through hyper, HTTP/1.1): the rest of a front-door connection
//! after its first request that is not a redirect, and every connection to the admin address.
//! Each is kept to control's [`Limits`]: a request head must arrive within the head timeout
//! (hyper counts it from the end of the previous response, so it bounds an idle kept-alive
//! connection too; heads are at most the head limit), and a write that makes no progress for
//! the write timeout ends the connection.
//!
//! Why not `estuary_http::connection::serve`: axum's bodies (the event stream among them) are
//! not estuary-http's, and the event stream needs the write timeout, which a client that never
//! reads its events would otherwise escape.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use estuary_http::Limits;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// axum serves `stream` from `peer` until it ends, kept to `limits`.
pub async fn serve_http<S>(app: axum::Router, stream: S, peer: SocketAddr, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower_service::Service::call(&mut app.clone(), request)
    });
    let stream = WriteDeadline::new(stream, limits.write_timeout);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.head_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, %peer, "connection ended");
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
