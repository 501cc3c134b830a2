//! `--admin ADDR`: `/healthz` (moods as JSON; 503 when sad) and `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use estuary_proto::Mood;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::IngestError;
use crate::health::{self, ChannelHealth};

/// Binds `address` and serves until the runtime stops; returns the bound address.
pub async fn serve(
    address: SocketAddr,
    channels: Vec<Arc<ChannelHealth>>,
) -> Result<SocketAddr, IngestError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|error| IngestError::Output {
            target: format!("admin address {address}"),
            reason: error.to_string(),
        })?;
    let bound = listener.local_addr().unwrap_or(address);
    let channels: Arc<[Arc<ChannelHealth>]> = channels.into();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let channels = channels.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, channels.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    channels: Arc<[Arc<ChannelHealth>]>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => {
            let (mood, body) = health::healthz(&channels);
            let status = if mood == Mood::Sad {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, "application/json", body)
        }
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            health::metrics(&channels),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz or /metrics\n".into(),
        ),
    };
    let response = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)));
    // The builder's inputs are constants and a known status: it cannot fail.
    Ok(response.unwrap_or_default())
}
