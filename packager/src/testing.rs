//! What the packager service's tests share: a packager serving a fixture window on loopback,
//! and raw HTTP/1.1 exchanges with it. The CMAF fixtures are the core's
//! (`estuary_packager_core::testing`).

use std::time::Duration;

pub use estuary_packager_core::testing::*;
use estuary_packager_core::window::Window;

/// A packager serving `window` (a fixture channel's, say) on an ephemeral port of 127.0.0.1,
/// configured by `configure`: its state and its address.
pub async fn serve_window(
    window: Window,
    configure: impl FnOnce(&mut crate::Settings),
) -> (
    std::sync::Arc<crate::service::Service>,
    std::net::SocketAddr,
) {
    let mut settings = crate::Settings::new(([127, 0, 0, 1], 0).into());
    configure(&mut settings);
    let listener = crate::run::bind(&settings).await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = crate::service::Service::new(&settings).unwrap();
    service.state.apply(|held| {
        *held = window;
        Vec::new()
    });
    tokio::spawn(crate::run::serve(
        listener,
        service.clone(),
        estuary_http::listen::Connections::new(),
        std::future::pending(),
    ));
    (service, address)
}

/// Sends `request` (the raw bytes of one HTTP/1.1 request) to `address` and reads until the
/// server closes the connection, at most `limit`: what came back, and whether it closed.
pub async fn exchange(
    address: std::net::SocketAddr,
    request: &[u8],
    limit: Duration,
) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut answer))
        .await
        .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

/// `GET target` on a connection of its own: the status line and headers, then the body.
pub async fn get(address: std::net::SocketAddr, method: &str, target: &str) -> String {
    let request = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    exchange(address, request.as_bytes(), Duration::from_secs(5))
        .await
        .0
}
