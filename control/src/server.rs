//! Control's listeners and background work: the public address (the front door, then axum),
//! the admin address if it has one (axum alone), each an estuary-http accept loop that stops
//! on shutdown, then gives the requests in flight [`DRAIN_GRACE`] to finish; meanwhile the
//! origins are asked for their channels and silent edges forgotten.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use estuary_http::listen::{self, Connections};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::state::Control;
use crate::{api, connection, front};

/// How long requests in flight (a redirect, a report, an event stream) may go on once control
/// stops accepting: longer than any of them but an event stream takes.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Serves control on `listener` (and the admin API on `admin`, if given) until `shutdown`
/// resolves: viewers at the front door, the rest by axum (see [`crate::front`]).
pub async fn serve(
    listener: TcpListener,
    admin: Option<TcpListener>,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let watcher = tokio::spawn({
        let control = control.clone();
        async move { control.origins().watch().await }
    });
    let sweeper = tokio::spawn({
        let control = control.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                control.sweep();
            }
        }
    });
    // One shutdown, heard by both accept loops.
    let (stop, stopped) = watch::channel(false);
    let stopping = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }
    };
    let connections = Connections::new();
    let limits = *control.limits();
    let public_app = match admin {
        Some(_) => api::public_app(control.clone()),
        None => api::app(control.clone()),
    };
    let admin = async {
        let Some(admin) = admin else {
            return;
        };
        let app = api::admin_app(control.clone());
        listen::accept(
            admin,
            connections.clone(),
            stopping(),
            move |stream: TcpStream, peer: SocketAddr| {
                connection::serve_http(app.clone(), stream, peer, limits)
            },
        )
        .await;
    };
    let public = listen::accept(
        listener,
        connections.clone(),
        stopping(),
        |stream: TcpStream, peer: SocketAddr| {
            front::connection(control.clone(), public_app.clone(), stream, peer)
        },
    );
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(signal, public, admin);
    tracing::info!(
        connections = connections.open(),
        "control stopped accepting connections"
    );
    if !connections.drained(DRAIN_GRACE).await {
        tracing::info!(
            connections = connections.open(),
            "the drain grace ended with connections open"
        );
    }
    watcher.abort();
    sweeper.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Keys;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn exchange(address: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn both_addresses_serve_until_shutdown() {
        let control = crate::state::tests::control("admin_token = \"t\"", Keys::default());
        let public = listen::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let admin = listen::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let (public_address, admin_address) =
            (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(serve(public, Some(admin), control, async {
            let _ = stopped.await;
        }));
        let redirect = exchange(
            public_address,
            "GET /live/demo/master.m3u8 HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(redirect.starts_with("HTTP/1.1 302 Found\r\n"), "{redirect}");
        // The admin API is on the admin address only; its errors are problems.
        let on_public = exchange(
            public_address,
            "GET /api/v1/sites HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(on_public.starts_with("HTTP/1.1 404 "), "{on_public}");
        assert!(
            on_public.contains("application/problem+json"),
            "{on_public}"
        );
        let sites = exchange(
            admin_address,
            "GET /api/v1/sites HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(sites.starts_with("HTTP/1.1 200 OK\r\n"), "{sites}");
        let unauthorized = exchange(
            admin_address,
            "GET /api/v1/decisions HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(unauthorized.starts_with("HTTP/1.1 401 "), "{unauthorized}");
        assert!(unauthorized.contains("\"status\":401"), "{unauthorized}");
        // A path outside the layout, after a handover: a problem naming the path.
        let outside = exchange(
            public_address,
            "GET /live/../etc/passwd HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(outside.starts_with("HTTP/1.1 400 "), "{outside}");
        assert!(outside.contains("canonical"), "{outside}");
        let wrong_method = exchange(
            admin_address,
            "DELETE /api/v1/sites HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(wrong_method.starts_with("HTTP/1.1 405 "), "{wrong_method}");
        assert!(wrong_method.contains("\"status\":405"), "{wrong_method}");

        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
        assert!(TcpStream::connect(public_address).await.is_err());
        assert!(TcpStream::connect(admin_address).await.is_err());
    }

    #[tokio::test]
    async fn a_request_begun_before_the_stop_is_answered_and_then_control_ends() {
        let control = crate::state::tests::control("", Keys::default());
        let public = listen::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = public.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(serve(public, None, control, async {
            let _ = stopped.await;
        }));
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /live/demo/master.m3u8 HTTP/1.1\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            TcpStream::connect(address).await.is_err(),
            "still accepting"
        );
        assert!(!serving.is_finished(), "ended with a request in flight");
        stream
            .write_all(b"Connection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 302 Found\r\n"), "{answer}");
        tokio::time::timeout(DRAIN_GRACE / 2, serving)
            .await
            .expect("control did not end once the last connection closed")
            .unwrap()
            .unwrap();
    }
}
