//! A stream's upstream connection: the framed stream (`estuary_proto::chunks`) read into the
//! stream's ring, for as long as anybody watches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use estuary_proto::chunks::{self, Decoder, Kind};
use http_body_util::BodyExt as _;
use hyper::StatusCode;

use super::ring::{Entry, Limits, Ring};
use super::{Fanout, State, Stream};

/// How long a stream keeps trying its upstreams, its viewers waiting, before it ends.
const UPSTREAM_PATIENCE: Duration = Duration::from_secs(20);
/// How long a stream with no viewer keeps its upstream connection, for the next one.
const IDLE_LINGER: Duration = Duration::from_secs(5);

/// The stream's upstream connection: fetches the framed stream and fills the ring, connecting
/// again when the upstream breaks off, until nobody watches or the upstreams stay away.
pub(super) async fn feed(fanout: Arc<Fanout>, stream: Arc<Stream>) {
    let fanout = &fanout;
    let limits = fanout.config.read().unwrap_or_else(|e| e.into_inner()).ring;
    let mut generation = 0u64;
    let mut failing_since: Option<Instant> = None;
    let mut idle_since: Option<Instant> = None;
    loop {
        let failure = match fanout.upstreams.get_framed(&stream.key).await {
            Ok((response, _)) if response.status() == StatusCode::OK => {
                stream
                    .counters
                    .upstream_connections
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(media_type) = response
                    .headers()
                    .get(chunks::STREAM_TYPE)
                    .and_then(|value| value.to_str().ok())
                {
                    *stream.media_type.lock().unwrap_or_else(|e| e.into_inner()) =
                        media_type.to_owned();
                }
                let mut body = response.into_body();
                let mut decoder = Decoder::new();
                loop {
                    let piece = match body.frame().await {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => data,
                            Err(_) => continue,
                        },
                        Some(Err(error)) => break format!("the upstream broke off: {error}"),
                        None => break "the upstream ended the stream".to_owned(),
                    };
                    decoder.extend(&piece);
                    let mut added = false;
                    let bad = loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => {
                                added |= take(&stream, frame, limits, &mut generation);
                            }
                            Ok(None) => break None,
                            Err(error) => break Some(error.to_string()),
                        }
                    };
                    if added {
                        failing_since = None;
                        fanout.announce(&stream, State::Live { generation });
                    }
                    if let Some(bad) = bad {
                        break format!("the upstream's stream does not parse: {bad}");
                    }
                    if stream.counters.viewers.load(Ordering::Relaxed) == 0 {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= IDLE_LINGER && fanout.retire_if_idle(&stream) {
                            tracing::debug!(
                                path = stream.key,
                                "continuous stream closed: no viewers"
                            );
                            return;
                        }
                    } else {
                        idle_since = None;
                    }
                }
            }
            Ok((response, _)) => {
                let status = response.status();
                let text = response
                    .into_body()
                    .collect()
                    .await
                    .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_owned())
                    .unwrap_or_default();
                if stream.ring().is_none() {
                    // Never started: the viewers get the upstream's answer.
                    fanout.retire(&stream);
                    fanout.announce(
                        &stream,
                        State::Ended {
                            status: status.as_u16(),
                            reason: text,
                        },
                    );
                    return;
                }
                format!("the upstream answered {status}: {text}")
            }
            Err(error) => error.to_string(),
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        tracing::warn!(path = stream.key, %failure, "continuous stream: upstream lost, trying again");
        let never_started = stream.ring().is_none();
        if never_started || since.elapsed() >= UPSTREAM_PATIENCE {
            fanout.retire(&stream);
            fanout.announce(
                &stream,
                State::Ended {
                    status: StatusCode::BAD_GATEWAY.as_u16(),
                    reason: failure,
                },
            );
            return;
        }
        if stream.counters.viewers.load(Ordering::Relaxed) == 0 && fanout.retire_if_idle(&stream) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Puts one frame from the upstream into the ring; says whether a chunk was added. A header
/// unlike the one before starts a new generation: viewers of the old one are ended (their
/// players connect again and start on the new header).
fn take(stream: &Stream, frame: chunks::Frame, limits: Limits, generation: &mut u64) -> bool {
    let mut ring = stream.ring();
    match frame.kind {
        Kind::Header => {
            if ring
                .as_ref()
                .is_some_and(|ring| *ring.header() != frame.bytes)
            {
                *generation += 1;
                tracing::info!(path = stream.key, "continuous stream: the header changed");
            }
            if ring
                .as_ref()
                .is_none_or(|ring| *ring.header() != frame.bytes)
            {
                // The numbering runs on, so that no viewer mistakes new chunks for old ones.
                let end = ring.as_ref().map_or(0, Ring::end);
                *ring = Some(Ring::starting_at(frame.bytes, limits, end));
                return true;
            }
            false
        }
        Kind::Chunk { join } => {
            let Some(ring) = ring.as_mut() else {
                return false;
            };
            ring.push(Entry {
                bytes: frame.bytes,
                join,
                capture_micros: frame.capture_micros,
            });
            true
        }
        Kind::Title => {
            let title = String::from_utf8_lossy(&frame.bytes);
            tracing::debug!(path = stream.key, %title, "continuous stream: now playing");
            *stream.title.lock().unwrap_or_else(|e| e.into_inner()) = title.into();
            // Viewers see it with the next chunk.
            false
        }
    }
}
