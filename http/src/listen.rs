//! Listening: a socket with room for a crowd, an accept loop that backs off when the process
//! runs out of file descriptors instead of spinning, stops on shutdown and can wait for the
//! connections it started to end; reading a request without a wasted system call, and
//! handing a connection on with the bytes already read put back in front.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

/// Connections the kernel may hold for a listener before it is accepted. Tokio's `bind` asks
/// for 128: a crowd of viewers arriving at once overflows that, and each connection whose
/// SYN is dropped waits a second for its retry. The kernel caps the figure at
/// `net.core.somaxconn` (4096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `address` with [`LISTEN_BACKLOG`]. Must be called within a tokio runtime.
pub fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long the accept loop waits after an error (out of file descriptors, say) before it
/// accepts again: long enough for connections to end, short enough not to be noticed.
pub const ACCEPT_BACK_OFF: Duration = Duration::from_millis(50);

/// Connections being served, counted so that a server can wait for them to end, and told when
/// the server is closing.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    ended: Notify,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            open: AtomicUsize::new(0),
            ended: Notify::new(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Connections {
    pub fn new() -> Arc<Connections> {
        Arc::default()
    }

    /// Asks every connection to close once what it is answering is done: HTTP/2 connections
    /// send GOAWAY (the client opens a new connection for its next request), HTTP/1.1
    /// connections close after their response instead of waiting for another request.
    pub fn close_gracefully(&self) {
        self.closing.send_replace(true);
    }

    /// Whether, and when, the server closes its connections ([`Connections::close_gracefully`]).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Waits until no connection is open, at most `grace`; says whether none is.
    pub async fn drained(&self, grace: Duration) -> bool {
        let wait = async {
            loop {
                let ended = self.ended.notified();
                if self.open() == 0 {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }
}

/// A connection counted open until it is dropped.
struct Counted(Arc<Connections>);

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

/// Accepts connections on `listener` until `shutdown` resolves, serving each on a task of its
/// own (with `TCP_NODELAY`: answers go out at once) and counting it in `connections`. An
/// accept that fails (no file descriptor left, no memory for the socket) is logged and tried
/// again after [`ACCEPT_BACK_OFF`]: the connections being served end, and free what they hold.
pub async fn accept<S, F>(
    listener: TcpListener,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed; trying again shortly");
                tokio::time::sleep(ACCEPT_BACK_OFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.open.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(connections.clone());
        let served = serve(stream, peer);
        tokio::spawn(async move {
            served.await;
            drop(counted);
        });
    }
}

/// Reads what `stream` has into `buffer` (at least 4 KiB of room is made), waiting for it if
/// need be; 0 when the peer closed. (A read that does not fill the room took everything the
/// socket held: tokio then waits for the poller before the next `recv`, as nginx does. It
/// clears the readiness it saw before the read, so data that arrives during the read is never
/// forgotten; clearing again after the read could forget it, and stall a pipelining client
/// whose bytes sit unread while it waits for answers.)
pub async fn read_request_bytes(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
) -> io::Result<usize> {
    buffer.reserve(4096);
    stream.read_buf(buffer).await
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }

    /// The bytes not read again yet, and the connection.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let count = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..count]);
            self.prefix.advance(count);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(context, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn the_accept_loop_stops_on_shutdown_and_its_connections_can_be_waited_for() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Connections::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let accepting = tokio::spawn(accept(
            listener,
            connections.clone(),
            async {
                let _ = stopped.await;
            },
            |mut stream: TcpStream, _| async move {
                let mut byte = [0u8; 1];
                let _ = stream.read(&mut byte).await;
            },
        ));
        let client = TcpStream::connect(address).await.unwrap();
        while connections.open() == 0 {
            tokio::task::yield_now().await;
        }
        stop.send(()).unwrap();
        accepting.await.unwrap();
        assert!(!connections.drained(Duration::from_millis(50)).await);
        drop(client);
        assert!(connections.drained(Duration::from_secs(5)).await);
        assert!(
            TcpStream::connect(address).await.is_err(),
            "no longer listening"
        );
    }

    #[tokio::test]
    async fn the_prefix_is_read_before_the_connection() {
        let (mut near, far) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut near, b" world")
            .await
            .unwrap();
        drop(near);
        let mut joined = Prefixed::new(Bytes::from_static(b"hello"), far);
        let mut text = String::new();
        joined.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello world");
    }

    #[tokio::test]
    async fn bytes_sent_after_a_draining_read_still_wake_the_reader() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut buffer = BytesMut::new();
        for round in 0..50u8 {
            client.write_all(&[round; 10]).await.unwrap();
            let count = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                read_request_bytes(&mut server, &mut buffer),
            )
            .await
            .expect("the next bytes wake the reader")
            .unwrap();
            assert_eq!(count, 10);
            assert_eq!(&buffer[..], &[round; 10]);
            buffer.clear();
        }
        drop(client);
        assert_eq!(
            read_request_bytes(&mut server, &mut buffer).await.unwrap(),
            0
        );
    }
}
