//! The ingest receiver: CMAF tracks arrive at `/ingest/{channel}/{track}` as one long chunked
//! POST or PUT (DASH-IF live media ingest, interface 1) or as one request per segment. Each
//! body is read as it streams in; every chunk reaches the window the moment its last byte does.

use std::sync::Arc;

use estuary_proto::keycard::{self, Keycard};
use estuary_proto::url::{ChannelName, TrackName};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::cmaf::{self, CmafReader, Piece, TrackHeader};
use crate::server::Shared;
use crate::window::Accepted;

/// What the sender is told when the body has been read, or why it was refused.
pub struct Verdict {
    pub status: StatusCode,
    pub message: String,
}

impl Verdict {
    fn refuse(status: StatusCode, message: impl Into<String>) -> Self {
        Verdict {
            status,
            message: message.into(),
        }
    }
}

/// Checks the keycard of an ingest request, when the packager has keys.
pub fn check_keycard(
    shared: &Shared,
    request: &Request<Incoming>,
    path: &str,
    now: u64,
) -> Result<(), Verdict> {
    if shared.keys.is_empty() {
        return Ok(());
    }
    let text = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix(keycard::AUTHORIZATION_SCHEME))
        .map(str::trim)
        .ok_or_else(|| {
            Verdict::refuse(
                StatusCode::UNAUTHORIZED,
                "a keycard is required (Authorization: Bearer …)",
            )
        })?;
    let card = Keycard::parse(text)
        .map_err(|error| Verdict::refuse(StatusCode::UNAUTHORIZED, error.to_string()))?;
    card.verify(&shared.keys, path, None, now)
        .map(|_| ())
        .map_err(|error| Verdict::refuse(StatusCode::FORBIDDEN, error.to_string()))
}

/// Reads one ingest body into the window.
pub async fn receive(
    shared: Arc<Shared>,
    channel: ChannelName,
    track: TrackName,
    body: Incoming,
) -> Verdict {
    let mut body = body;
    let mut reader = CmafReader::new();
    // A request per segment carries no header: it continues the track's known one.
    let mut header: Option<TrackHeader> = shared.header(&channel, &track);
    let mut chunks = 0u64;
    let mut duplicates = 0u64;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                return Verdict::refuse(
                    StatusCode::BAD_REQUEST,
                    format!("the body broke off: {error}"),
                );
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let pieces = match reader.push(&data) {
            Ok(pieces) => pieces,
            Err(error) => {
                return Verdict::refuse(
                    StatusCode::BAD_REQUEST,
                    format!("{channel}/{track}: {error}"),
                );
            }
        };
        for piece in pieces {
            match piece {
                Piece::Header(bytes) => match cmaf::parse_header(bytes) {
                    Ok(parsed) => {
                        shared.apply(|window| window.push_header(&channel, &track, parsed.clone()));
                        header = Some(parsed);
                    }
                    Err(error) => {
                        return Verdict::refuse(
                            StatusCode::BAD_REQUEST,
                            format!("{channel}/{track}: header: {error}"),
                        );
                    }
                },
                Piece::Chunk(bytes) => {
                    let Some(known) = header.as_ref() else {
                        return Verdict::refuse(
                            StatusCode::BAD_REQUEST,
                            format!("{channel}/{track}: a chunk came before any CMAF header"),
                        );
                    };
                    let chunk = match cmaf::parse_chunk(bytes, known) {
                        Ok(chunk) => chunk,
                        Err(error) => {
                            return Verdict::refuse(
                                StatusCode::BAD_REQUEST,
                                format!("{channel}/{track}: chunk: {error}"),
                            );
                        }
                    };
                    match shared.try_apply(|window| window.push_chunk(&channel, &track, chunk)) {
                        Ok(Accepted::New(_)) => chunks += 1,
                        Ok(Accepted::Duplicate) => {
                            duplicates += 1;
                            shared.count(&channel, &track, |c| c.duplicates += 1);
                        }
                        Err(error) => {
                            return Verdict::refuse(StatusCode::BAD_REQUEST, error.to_string());
                        }
                    }
                }
            }
        }
    }
    if let Err(error) = reader.finish() {
        return Verdict::refuse(
            StatusCode::BAD_REQUEST,
            format!("{channel}/{track}: {error}"),
        );
    }
    Verdict {
        status: StatusCode::OK,
        message: format!("{channel}/{track}: {chunks} chunks taken, {duplicates} already had\n"),
    }
}
