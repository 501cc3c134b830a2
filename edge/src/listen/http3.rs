//! HTTP/3: a QUIC endpoint (quinn) on the UDP port with the number of the TCP listener's, with
//! the same certificate. Each request goes to the same handler as HTTP/1.1 and HTTP/2 and its
//! body is sent frame by frame as it comes, so growing segments stream here too. Responses over
//! TCP advertise the endpoint with Alt-Svc.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use h3::error::Code;
use h3::server::RequestStream;
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response};

use crate::answer::handle;
use crate::node::{Edge, EdgeError};

/// How long browsers may remember the Alt-Svc advertisement (RFC 7838 `ma`, seconds).
const ALT_SVC_MAX_AGE: u32 = 86_400;
/// Requests one connection may have open at once (HTTP/2's limit too).
pub const MAX_STREAMS: u32 = estuary_http::connection::H2_MAX_STREAMS;

/// The QUIC endpoint on `socket`, or on a UDP socket bound to `address` (the TCP listener's),
/// when the edge serves HTTPS with HTTP/3 on; with it, a second handle on its socket, to offer
/// to the edge that upgrades this one. From then on, responses carry the Alt-Svc header that
/// names it.
pub fn bind(
    edge: &Edge,
    address: SocketAddr,
    socket: Option<std::net::UdpSocket>,
) -> Result<Option<(quinn::Endpoint, std::net::UdpSocket)>, EdgeError> {
    let Some(tls) = edge.tls() else {
        return Ok(None);
    };
    if !edge.config().http3 {
        return Ok(None);
    }
    let mut config = quinn::ServerConfig::with_crypto(tls.quic.clone());
    let mut transport = quinn::TransportConfig::default();
    transport
        // A QUIC connection that carries nothing for the idle timeout is closed, as over TCP.
        .max_idle_timeout(quinn::IdleTimeout::try_from(edge.config().limits.idle_timeout).ok())
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        // HTTP/3 needs three of its own (control, QPACK encoder and decoder); no pushes.
        .max_concurrent_uni_streams(8u32.into());
    config.transport_config(Arc::new(transport));
    let failed = |error: std::io::Error| EdgeError::Listen {
        address,
        reason: format!("UDP for HTTP/3: {error}"),
    };
    let socket = match socket {
        Some(socket) => socket,
        None => std::net::UdpSocket::bind(address).map_err(failed)?,
    };
    let offered = socket.try_clone().map_err(failed)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(failed)?;
    let advertised = format!("h3=\":{}\"; ma={ALT_SVC_MAX_AGE}", address.port());
    edge.advertise(HeaderValue::try_from(advertised).expect("an Alt-Svc value is ASCII"));
    Ok(Some((endpoint, offered)))
}

/// Serves HTTP/3 connections on `endpoint` until it is closed.
pub async fn serve(endpoint: quinn::Endpoint, edge: Arc<Edge>) {
    while let Some(incoming) = endpoint.accept().await {
        let edge = edge.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    edge.metrics().refused_heads.fetch_add(1, Ordering::Relaxed);
                    return tracing::debug!(%peer, %error, "QUIC handshake failed");
                }
            };
            let open = &edge.metrics().open_connections;
            open.fetch_add(1, Ordering::Relaxed);
            serve_connection(&edge, connection, peer).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_connection(edge: &Arc<Edge>, connection: quinn::Connection, peer: SocketAddr) {
    let mut connection = match h3::server::builder()
        .max_field_section_size(edge.config().limits.head_bytes as u64)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await
    {
        Ok(connection) => connection,
        Err(error) => return tracing::debug!(%peer, %error, "HTTP/3 connection refused"),
    };
    loop {
        match connection.accept().await {
            Ok(Some(resolver)) => {
                let edge = edge.clone();
                tokio::spawn(async move {
                    // A request whose head does not come whole within the head timeout is
                    // given up, as over HTTP/1 and HTTP/2.
                    let head = resolver.resolve_request();
                    let Ok(resolved) =
                        tokio::time::timeout(edge.config().limits.head_timeout, head).await
                    else {
                        return tracing::debug!(%peer, "HTTP/3 request head timed out");
                    };
                    match resolved {
                        Ok((request, stream)) => {
                            let head = request.method() == Method::HEAD;
                            let response = handle(edge, peer.ip(), request).await;
                            if let Err(error) = send(response, stream, head).await {
                                tracing::debug!(%peer, %error, "HTTP/3 response cut short");
                            }
                        }
                        Err(error) => tracing::debug!(%peer, %error, "HTTP/3 request refused"),
                    }
                });
            }
            Ok(None) => break,
            Err(error) => {
                if !error.is_h3_no_error() {
                    tracing::debug!(%peer, %error, "HTTP/3 connection ended");
                }
                break;
            }
        }
    }
}

/// Sends a response's head, then its body as it comes (none for HEAD). A body that fails ends
/// the stream with an error, so the client does not take a cut-short body for whole.
async fn send<S>(
    response: Response<estuary_http::Body>,
    mut stream: RequestStream<S, Bytes>,
    head: bool,
) -> Result<(), h3::error::StreamError>
where
    S: h3::quic::BidiStream<Bytes>,
{
    let (mut parts, mut body) = response.into_parts();
    if let Some(length) = body.size_hint().exact() {
        parts
            .headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(length));
    }
    stream
        .send_response(Response::from_parts(parts, ()))
        .await?;
    if !head {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        stream.send_data(data).await?;
                    }
                }
                Err(_) => {
                    stream.stop_stream(Code::H3_INTERNAL_ERROR);
                    return Ok(());
                }
            }
        }
    }
    stream.finish().await
}
