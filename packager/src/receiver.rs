//! The ingest receiver: CMAF tracks arrive at `/ingest/{channel}/{track}` as one long chunked
//! POST or PUT (DASH-IF live media ingest, interface 1) or as one request per segment. Each
//! body is read as it streams in; every chunk reaches the window the moment its last byte does.
//!
//! A refused ingest is answered with the reason and counted by the reason alone (a fixed set,
//! [`Refusal`]): it leaves no state named after what it asked for, and a track its header
//! created is forgotten again if the request is refused before a chunk was taken.

use std::sync::Arc;
use std::time::Duration;

use estuary_http::{Body, problem, respond};
use estuary_packager_core::cmaf::{self, CmafReader, Piece, TrackHeader};
use estuary_packager_core::window::{Accepted, Event, WindowError};
use estuary_proto::url::{ChannelName, TrackName};
use estuary_proto::utc::unix_now;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::auth::{check_keycard, client};
use crate::service::Service;
use crate::tally::Refusal;

/// An ingest refused: the status, why (named for metrics) and the reason told to the sender.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: Refusal,
    pub message: String,
}

impl Refused {
    fn new(status: StatusCode, reason: Refusal, message: impl Into<String>) -> Self {
        Refused {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl From<WindowError> for Refused {
    fn from(error: WindowError) -> Self {
        let (status, reason) = match &error {
            WindowError::NoHeader { .. } => (StatusCode::BAD_REQUEST, Refusal::NoHeader),
            WindowError::TooManyTracks { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Refusal::TooManyTracks)
            }
            WindowError::TooManyChannels { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Refusal::TooManyChannels)
            }
            WindowError::AheadOfClock { .. } => (StatusCode::BAD_REQUEST, Refusal::AheadOfClock),
        };
        Refused::new(status, reason, error.to_string())
    }
}

/// `POST` or `PUT /ingest/{channel}/{track}`: checks the names and the keycard (when the
/// packager has keys), then reads the body into the window. The answer comes when the body
/// ends, or the moment it is refused.
pub async fn ingest(
    service: Arc<Service>,
    channel: &str,
    track: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let (channel, track) = match (ChannelName::new(channel), TrackName::new(track)) {
        (Ok(channel), Ok(track)) => (channel, track),
        (Err(error), _) | (_, Err(error)) => {
            service.refusals.count(Refusal::Name);
            return problem(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let rules = service.rules();
    let outcome = if rules.keys.is_empty() {
        Ok(())
    } else {
        let path = estuary_proto::url::ingest_path(&channel, &track);
        let client = client(&request);
        check_keycard(
            &rules.keys,
            request.headers(),
            client,
            &path,
            unix_now().as_secs(),
        )
        .map_err(|refusal| Refused::new(refusal.status(), Refusal::Keycard, refusal.to_string()))
    };
    let outcome = match outcome {
        Ok(()) => receive(&service, &channel, &track, request.into_body()).await,
        Err(refused) => Err(refused),
    };
    match outcome {
        Ok((chunks, duplicates)) => {
            let mut response = respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                Body::text(format!(
                    "{channel}/{track}: {chunks} chunks taken, {duplicates} already had\n"
                )),
            );
            response.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(refused) => {
            service.refusals.count(refused.reason);
            tracing::warn!(%channel, %track, reason = refused.reason.label(), message = %refused.message, "ingest refused");
            problem(refused.status, refused.message)
        }
    }
}

/// Reads one ingest body into the window: how many chunks were taken and how many were
/// copies of what it had. A track this request created is forgotten again if the request is
/// refused before one of its chunks was taken.
async fn receive(
    service: &Service,
    channel: &ChannelName,
    track: &TrackName,
    body: Incoming,
) -> Result<(u64, u64), Refused> {
    let mut created = false;
    let mut counts = (0, 0);
    let outcome = read_body(service, channel, track, body, &mut created, &mut counts).await;
    if outcome.is_err() && created {
        service
            .state
            .apply(|window| window.forget_if_empty(channel, track));
    }
    outcome.map(|()| counts)
}

async fn read_body(
    service: &Service,
    channel: &ChannelName,
    track: &TrackName,
    mut body: Incoming,
    created: &mut bool,
    (chunks, duplicates): &mut (u64, u64),
) -> Result<(), Refused> {
    let bad = |what: String| Refused::new(StatusCode::BAD_REQUEST, Refusal::Cmaf, what);
    let mut reader = CmafReader::new();
    // A request per segment carries no header: it continues the track's known one.
    let mut header: Option<TrackHeader> = service.state.header(channel, track);
    let timeout = service.rules().ingest_timeout;
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(stalled(channel, track, timeout)),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(error))) => {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    Refusal::BrokenBody,
                    format!("the body broke off: {error}"),
                ));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let pieces = reader
            .push(&data)
            .map_err(|error| bad(format!("{channel}/{track}: {error}")))?;
        for piece in pieces {
            match piece {
                Piece::Header(bytes) => {
                    let parsed = cmaf::parse_header(bytes)
                        .map_err(|error| bad(format!("{channel}/{track}: header: {error}")))?;
                    let events = service.state.try_apply(|window| {
                        window.push_header(channel, track, parsed.clone(), unix_now())
                    })?;
                    *created |= events
                        .iter()
                        .any(|event| matches!(event, Event::TrackStarted { .. }));
                    header = Some(parsed);
                }
                Piece::Chunk(bytes) => {
                    let Some(known) = header.as_ref() else {
                        return Err(Refused::new(
                            StatusCode::BAD_REQUEST,
                            Refusal::NoHeader,
                            format!("{channel}/{track}: a chunk came before any CMAF header"),
                        ));
                    };
                    let chunk = cmaf::parse_chunk(bytes, known)
                        .map_err(|error| bad(format!("{channel}/{track}: chunk: {error}")))?;
                    match service
                        .state
                        .try_apply(|window| window.push_chunk(channel, track, chunk, unix_now()))?
                    {
                        Accepted::New(_) => {
                            *chunks += 1;
                            *created = false;
                        }
                        Accepted::Duplicate => *duplicates += 1,
                    }
                }
            }
        }
    }
    reader
        .finish()
        .map_err(|error| bad(format!("{channel}/{track}: {error}")))
}

fn stalled(channel: &ChannelName, track: &TrackName, limit: Duration) -> Refused {
    Refused::new(
        StatusCode::REQUEST_TIMEOUT,
        Refusal::Stalled,
        format!(
            "{channel}/{track}: nothing arrived for {} s (an ingest sends a chunk every part): the connection is closed",
            limit.as_secs_f64()
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::{self, TrackSpec, exchange};
    use estuary_packager_core::window::{Window, WindowConfig};

    async fn post(address: std::net::SocketAddr, path: &str, body: &[u8]) -> String {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        exchange(address, &request, Duration::from_secs(5)).await.0
    }

    /// Refused ingests are answered with the reason and counted by it alone: the track a
    /// refused request's header made is forgotten, and no label names it.
    #[tokio::test]
    async fn refused_ingests_leave_nothing_behind() {
        let config = WindowConfig {
            max_tracks: 2,
            max_channels: 2,
            ..Default::default()
        };
        let (service, address) = testing::serve_window(Window::new(config), |_| {}).await;
        let spec = TrackSpec::video();
        let now = unix_now().as_secs();
        let live = testing::stream_at(&spec, now - 2, 1);
        let future = testing::stream_at(&spec, now + 24 * 3600, 1);

        let answer = post(address, "/ingest/good/v1", &live).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = post(address, "/ingest/evil/v1", &future).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("ahead of the packager's clock"), "{answer}");
        let answer = post(address, "/ingest/good/v2", &live).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = post(address, "/ingest/good/v3", &live).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("already has 2 tracks"), "{answer}");
        let answer = post(address, "/ingest/second/v1", &live).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = post(address, "/ingest/third/v1", &live).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("2 channels"), "{answer}");

        let channels: Vec<String> = service
            .state
            .read(|window| window.channels().map(|c| c.to_string()).collect());
        assert_eq!(channels, ["good", "second"]);
        let metrics = testing::get(address, "GET", "/metrics").await;
        for absent in ["evil", "third", "v3"] {
            assert!(!metrics.contains(absent), "{absent} in {metrics}");
        }
        for (reason, count) in [
            ("ahead_of_clock", 1),
            ("too_many_tracks", 1),
            ("too_many_channels", 1),
        ] {
            let line =
                format!("estuary_packager_ingest_refused_total{{reason=\"{reason}\"}} {count}");
            assert!(metrics.contains(&line), "{line} not in {metrics}");
        }
    }
}
