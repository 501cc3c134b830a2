//! The packager's process: binds its address (once the configuration is known to be safe
//! there), serves ingest and origin requests on it (HTTP/1.1 and HTTP/2, kept to the
//! packager's limits by `estuary_http`), retires idle tracks, and drains at shutdown.

use std::sync::{Arc, Weak};
use std::time::Duration;

use estuary_http::listen::Connections;
use estuary_proto::systemd::{self, State};
use estuary_proto::utc::unix_now;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::error::PackagerError;
use crate::service::{ConfigSource, Service};
use estuary_http::lifecycle::{Request, Requests};

/// How often idle tracks are looked for.
const RETIRE_EVERY: Duration = Duration::from_secs(1);

/// How long requests in flight at shutdown have to finish (a blocking playlist request, a
/// segment being streamed) before the process ends anyway; continuous streams and ingests
/// never finish on their own, and are cut.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Binds the configured address, once the configuration is known to be safe there: ingest
/// needs keycards on any address but loopback, unless it is opened on purpose.
pub async fn bind(settings: &Settings) -> Result<TcpListener, PackagerError> {
    settings.check_ingest_is_guarded(settings.listen)?;
    estuary_http::listen(settings.listen).map_err(|error| PackagerError::Listen {
        address: settings.listen,
        error,
    })
}

/// Serves ingest and origin requests on `listener` until `shutdown` resolves (then it stops
/// accepting; the connections it started are counted in `connections`), and retires idle
/// tracks meanwhile.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    connections: Arc<Connections>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::spawn(retire_idle(Arc::downgrade(&service)));
    let counted = connections.clone();
    estuary_http::listen::accept(listener, connections, shutdown, move |stream, peer| {
        let service = service.clone();
        let closing = counted.closing();
        async move {
            let limits = service.rules().limits;
            estuary_http::connection::serve(stream, &limits, closing, move |mut request| {
                // Who asked, for keycards bound to an address.
                request.extensions_mut().insert(peer);
                crate::origin::handle(service.clone(), request)
            })
            .await;
        }
    })
    .await;
}

/// Every [`RETIRE_EVERY`], retires the tracks that have taken nothing for the configured time;
/// ends when the packager is gone.
async fn retire_idle(service: Weak<Service>) {
    loop {
        tokio::time::sleep(RETIRE_EVERY).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.state.apply(|window| window.retire_idle(unix_now()));
    }
}

/// What the packager is asked while it runs (signals: SIGHUP reloads, SIGTERM and SIGINT
/// stop it), and where a reload reads the configuration (none: reloads are refused).
pub struct Lifecycle {
    pub requests: Requests,
    pub source: Option<ConfigSource>,
}

/// Runs the packager until it is asked to stop: then it stops accepting connections and gives
/// the requests in flight [`DRAIN_GRACE`] to finish. Reloads meanwhile.
pub async fn run(settings: Settings, lifecycle: Lifecycle) -> Result<(), PackagerError> {
    let listener = bind(&settings).await?;
    let address = listener.local_addr().unwrap_or(settings.listen);
    tracing::info!(%address, "packager listening: ingest at /ingest/{{channel}}/{{track}}, players at /live/…");
    let connections = Connections::new();
    let service = Service::new(&settings)?;
    if let Some(source) = lifecycle.source {
        service.set_source(source);
    }
    systemd::notify(State::Ready);
    let shutdown = until_stopped(service.clone(), lifecycle.requests);
    serve(listener, service, connections.clone(), shutdown).await;
    tracing::info!(open = connections.open(), "stopping");
    connections.close_gracefully();
    connections.drained(DRAIN_GRACE).await;
    Ok(())
}

/// Answers reloads, telling systemd while one is under way, until a stop is asked.
async fn until_stopped(service: Arc<Service>, mut requests: Requests) {
    // A drain, a stop or the end of the signals ends the loop.
    while let Some(Request::Reload) = requests.recv().await {
        systemd::notify(State::Reloading);
        let reloading = service.clone();
        // The outcome is logged and shown in /healthz by the reload itself.
        let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
        systemd::notify(State::Ready);
    }
    systemd::notify(State::Stopping);
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::testing::{self, Channel, TrackSpec};

    /// The header, ingest and idle timeouts of these tests.
    struct Short {
        header: Duration,
        ingest: Duration,
        idle: Duration,
    }

    const SHORT: Short = Short {
        header: Duration::from_millis(400),
        ingest: Duration::from_millis(400),
        idle: Duration::from_millis(600),
    };

    async fn packager() -> std::net::SocketAddr {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..13);
        testing::serve_window(channel.window, |settings| {
            settings.limits.head_timeout = SHORT.header;
            settings.limits.idle_timeout = SHORT.idle;
            settings.ingest_timeout = SHORT.ingest;
        })
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
