//! Segments and parts. A whole segment or a part is answered from the window at once; a
//! segment still being written (low-latency DASH asks for it one part after it starts, and an
//! HLS player may too) is sent with chunked transfer, each part the moment it lands.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use estuary_http::{Body, problem, respond};
use estuary_packager_core::cmaf::Media;
use estuary_packager_core::window::Window;
use estuary_proto::url::{ChannelName, TrackName};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use super::block_limit;
use crate::service::Service;

pub fn content_type(service: &Service, channel: &ChannelName, track: &TrackName) -> &'static str {
    let audio = service.state.read(|window| {
        window
            .track(channel, track)
            .is_some_and(|t| matches!(t.header.media, Media::Audio { .. }))
    });
    if audio { "audio/mp4" } else { "video/mp4" }
}

/// Whether a request for `(msn, part)` is for media about to arrive (the preload hint, or a
/// little beyond): such requests wait rather than get a 404.
pub fn is_imminent(
    window: &Window,
    channel: &ChannelName,
    track: &TrackName,
    msn: u64,
    part: Option<usize>,
) -> bool {
    let Some((newest, parts)) = window.track(channel, track).and_then(|t| t.newest()) else {
        return false;
    };
    match part {
        Some(part) => (msn == newest && part <= parts + 1) || (msn == newest + 1 && part <= 1),
        None => msn == newest || msn == newest + 1,
    }
}

/// What the window holds of a segment: its parts so far and whether it is whole.
fn progress(
    window: &Window,
    channel: &ChannelName,
    track: &TrackName,
    msn: u64,
) -> Option<(usize, bool)> {
    let segment = window.track(channel, track)?.segment(msn)?;
    Some((segment.parts.len(), segment.complete))
}

pub async fn segment(
    service: &Arc<Service>,
    channel: &ChannelName,
    track: &TrackName,
    msn: u64,
) -> Response<Body> {
    let whole = service.state.read(|window| {
        let segment = window.track(channel, track)?.segment(msn)?;
        segment.complete.then(|| segment.body().collect::<Vec<_>>())
    });
    let body = match whole {
        Some(pieces) => Body::pieces(pieces),
        None if service
            .state
            .read(|window| is_imminent(window, channel, track, msn, None)) =>
        {
            Body::streaming(stream_segment(
                service.clone(),
                channel.clone(),
                track.clone(),
                msn,
            ))
        }
        None => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("segment {msn} of {channel}/{track} is not in the window"),
            );
        }
    };
    respond(StatusCode::OK, content_type(service, channel, track), body)
}

/// Sends the parts of segment `msn` as they arrive, until it is whole. If the ingest stops (no
/// part within the blocking limit) or the segment never begins, the body ends with an error.
fn stream_segment(
    service: Arc<Service>,
    channel: ChannelName,
    track: TrackName,
    msn: u64,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(async move {
        let limit = block_limit(&service);
        let mut sent = 0;
        loop {
            let moved = service
                .state
                .wait_until(limit, |window| {
                    progress(window, &channel, &track, msn)
                        .is_some_and(|(parts, complete)| parts > sent || complete)
                })
                .await;
            let (pieces, complete) = service.state.read(|window| {
                let Some(segment) = window.track(&channel, &track).and_then(|t| t.segment(msn))
                else {
                    return (Vec::new(), false);
                };
                let pieces = segment.parts[sent.min(segment.parts.len())..]
                    .iter()
                    .map(|part| part.bytes.clone())
                    .collect::<Vec<_>>();
                (pieces, segment.complete)
            });
            for piece in pieces {
                if sender.send(Ok(piece)).await.is_err() {
                    return; // the viewer left
                }
                sent += 1;
            }
            if complete {
                return;
            }
            if !moved {
                let reason = format!("segment {msn} of {channel}/{track} stopped growing");
                let _ = sender.send(Err(io::Error::other(reason))).await;
                return;
            }
        }
    });
    receiver
}

pub async fn part(
    service: &Service,
    channel: &ChannelName,
    track: &TrackName,
    msn: u64,
    part: usize,
) -> Response<Body> {
    if service
        .state
        .read(|window| is_imminent(window, channel, track, msn, Some(part)))
    {
        service
            .state
            .wait_until(block_limit(service), |window| {
                window
                    .track(channel, track)
                    .and_then(|t| t.part(msn, part))
                    .is_some()
            })
            .await;
    }
    let bytes = service.state.read(|window| {
        window
            .track(channel, track)?
            .part(msn, part)
            .map(|p| p.bytes.clone())
    });
    match bytes {
        Some(bytes) => respond(
            StatusCode::OK,
            content_type(service, channel, track),
            Body::bytes(bytes),
        ),
        None => problem(
            StatusCode::NOT_FOUND,
            format!("part {msn}.{part} of {channel}/{track} is not in the window"),
        ),
    }
}
