//! One HTTP connection to the packager (HTTP/1.1, or HTTP/2 over cleartext), with the
//! timeouts that keep a client from holding a connection without using it: the first request
//! head must be whole within the header timeout (HTTP/1.1 heads after it too, which hyper's own
//! timer enforces), an HTTP/2 peer must answer pings, and a connection with no request in
//! flight for the idle timeout is closed. A request in flight stays until its response has
//! been sent: a long continuous stream, or an ingest, which has a timeout of its own.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::origin::{self, Body};
use crate::server::Shared;

/// How often an HTTP/2 connection is pinged, and how long the peer has to answer: a peer that
/// vanished (a half-open TCP connection) is found within their sum.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a closed connection may take to finish what it was writing.
const CLOSING_GRACE: Duration = Duration::from_secs(1);

/// The timeouts of the packager's connections and requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A request head must be whole this long after the connection opened (or, in HTTP/1.1,
    /// after the previous response): slowloris clients are cut off.
    pub header: Duration,
    /// An ingest body that brings nothing for this long is refused and its connection closed.
    /// The ingest sends a chunk every part (a third of a second).
    pub ingest: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header: Duration::from_secs(10),
            ingest: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// Requests in flight on a connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    since: Mutex<Instant>,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection may be closed if nothing happens before, or `None` while a request
    /// is in flight.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let limit = if self.requests.load(Ordering::SeqCst) == 0 {
            timeouts.header
        } else {
            timeouts.idle
        };
        Some(*self.since.lock().unwrap_or_else(|e| e.into_inner()) + limit)
    }
}

/// One request in flight: it ends when its response body has been sent, or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its request's place in flight until it is done.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<std::io::Result<Frame<Bytes>>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `stream` until the client closes it, a timeout closes it, or it fails.
pub async fn serve(stream: TcpStream, peer: std::net::SocketAddr, shared: Arc<Shared>) {
    let timeouts = shared.timeouts;
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        since: Mutex::new(Instant::now()),
    });
    let service = {
        let activity = activity.clone();
        service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let in_flight = activity.begin();
            // Who asked, for keycards bound to an address.
            request.extensions_mut().insert(peer);
            let shared = shared.clone();
            async move {
                let response = origin::handle(shared, request).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    loop {
        let deadline = activity.deadline(&timeouts);
        // While a request is in flight, look again after a while: it ends on its own.
        let wake = deadline.unwrap_or_else(|| Instant::now() + timeouts.idle);
        tokio::select! {
            outcome = connection.as_mut() => {
                if let Err(error) = outcome {
                    tracing::debug!(%peer, %error, "connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if deadline.is_some_and(|deadline| deadline <= Instant::now())
                    && activity.deadline(&timeouts).is_some_and(|d| d <= Instant::now())
                {
                    break;
                }
            }
        }
    }
    let first = activity.requests.load(Ordering::SeqCst) == 0;
    tracing::debug!(%peer, waited_for = if first { "a request head" } else { "another request" }, "closing an idle connection");
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSING_GRACE, connection).await;
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::testing::{self, Channel, TrackSpec};

    const SHORT: Timeouts = Timeouts {
        header: Duration::from_millis(400),
        ingest: Duration::from_millis(400),
        idle: Duration::from_millis(600),
    };

    async fn packager() -> std::net::SocketAddr {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..13);
        testing::serve_window(channel.window, |config| config.timeouts = SHORT)
            .await
            .1
    }

    /// Reads until the server closes the connection; how long that took.
    async fn closed_after(mut stream: tokio::net::TcpStream, limit: Duration) -> Duration {
        let started = StdInstant::now();
        let mut sink = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut sink))
            .await
            .expect("the server closed the connection")
            .ok();
        started.elapsed()
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off_at_the_header_timeout() {
        let address = packager().await;
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let took = closed_after(stream, Duration::from_secs(5)).await;
        assert!(took >= SHORT.header && took < SHORT.header * 4, "{took:?}");
        // Half an HTTP/2 preface does not hold the connection either.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let took = closed_after(stream, Duration::from_secs(5)).await;
        assert!(took < SHORT.header * 4, "{took:?}");
    }

    /// A head sent a line at a time, each well within the timeout, never finishes in time.
    #[tokio::test]
    async fn a_slow_head_is_cut_off_at_the_header_timeout() {
        let address = packager().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let started = StdInstant::now();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut cut = false;
        for line in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let header = format!("X-Slow-{line}: 1\r\n");
            if stream.write_all(header.as_bytes()).await.is_err() {
                cut = true;
                break;
            }
        }
        let took = started.elapsed();
        let closed = closed_after(stream, Duration::from_secs(5)).await;
        assert!(
            cut || took + closed < SHORT.header * 4,
            "{took:?} {closed:?}"
        );
        assert!(took < SHORT.header * 4, "sent for {took:?}");
    }

    /// After a response, a keep-alive connection left alone is closed.
    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let address = packager().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        let took = closed_after(stream, Duration::from_secs(5)).await;
        assert!(took < SHORT.idle * 3, "{took:?}");
    }

    /// An ingest that opened its body and then sends nothing is refused with 408 once the
    /// ingest timeout passes, and its connection ends.
    #[tokio::test]
    async fn a_stalled_ingest_is_refused_and_its_connection_ends() {
        let address = packager().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let header = testing::header(&TrackSpec::video());
        let head =
            "POST /ingest/quiet/v1 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(format!("{:x}\r\n", header.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&header).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        let started = StdInstant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the connection ended")
            .unwrap();
        let took = started.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("nothing arrived"), "{answer}");
        assert!(took >= SHORT.ingest && took < SHORT.ingest * 4, "{took:?}");
        // The track its header made is gone again: a refused ingest leaves nothing.
        let metrics = testing::get(address, "GET", "/metrics").await;
        assert!(!metrics.contains("channel=\"quiet\""), "{metrics}");
        assert!(
            metrics.contains("estuary_packager_ingest_refused_total{reason=\"stalled\"} 1"),
            "{metrics}"
        );
    }
}
