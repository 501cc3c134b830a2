//! Continuous-stream viewers moved from an edge to the edge upgrading it, over the takeover
//! connection ([`crate::takeover`]), so that no listener is cut by an upgrade. The old edge
//! names its viewers' streams; the new one opens them (each ring filling from the upstream)
//! before it asks for the viewers, so that each viewer goes on from the chunk after the one it
//! had, with no gap and no byte twice. Viewers on HTTP/2, HTTP/3 or TLS stay on the old edge
//! until its drain grace ends.

use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::fanout::{Baton, Fanout, Handed, Hold};
use crate::node::Edge;
use crate::takeover::{BATCH_SOCKETS, Handover, Incoming};

/// How long the old edge keeps handing viewers over: a viewer whose header is part-way out
/// goes a moment later, and one that never gets it out stays here until the drain ends.
const HANDOVER_PATIENCE: Duration = Duration::from_secs(5);
/// How long the new edge waits for the streams it opens to be live before it asks for the
/// viewers anyway (a viewer of a stream not live yet waits for its next chunk).
const OPEN_PATIENCE: Duration = Duration::from_secs(5);
/// How long the new edge keeps the streams open after the last viewer arrived: the viewers
/// hold them from then on.
const HOLD_AFTER: Duration = Duration::from_secs(2);
/// The most streams the new edge opens for the old one.
const MAX_STREAMS: usize = 10_000;

/// The old edge's side: hands every plain HTTP/1 viewer to the new edge, in batches. Gives
/// how many went.
pub async fn send_viewers(edge: &Edge, handover: Handover) -> usize {
    let fanout = edge.fanout().clone();
    let keys = fanout.stream_keys();
    let offered = tokio::task::spawn_blocking(move || {
        let mut handover = handover;
        handover.offer_streams(&keys).map(|()| handover)
    })
    .await;
    let mut handover = match offered {
        Ok(Ok(handover)) => handover,
        Ok(Err(error)) => {
            tracing::warn!(%error, "the new edge did not ask for the viewers: they stay here");
            return 0;
        }
        Err(_) => return 0,
    };
    let mut handed = fanout.hand_over();
    let deadline = tokio::time::Instant::now() + HANDOVER_PATIENCE;
    let mut sent = 0;
    loop {
        let batch = gather(&fanout, &mut handed, deadline).await;
        if batch.is_empty() {
            break;
        }
        let count = batch.len();
        let result = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            for handed in &batch {
                records.extend(handed.baton.encode());
            }
            let sockets: Vec<_> = batch.iter().map(|handed| handed.socket.as_fd()).collect();
            // The sockets close here once sent: the new edge holds its own copies.
            handover.send_batch(&records, &sockets).map(|()| handover)
        })
        .await;
        handover = match result {
            Ok(Ok(handover)) => handover,
            Ok(Err(error)) => {
                tracing::warn!(%error, lost = count, "handing viewers over failed: those in the batch are cut");
                return sent;
            }
            Err(_) => return sent,
        };
        sent += count;
    }
    let left = fanout.not_handed_over();
    if let Ok(Err(error)) = tokio::task::spawn_blocking(move || handover.finish()).await {
        tracing::warn!(%error, "the new edge did not hear the end of the viewers");
    }
    tracing::info!(
        handed_over = sent,
        left,
        "continuous-stream viewers handed to the new edge"
    );
    sent
}

/// The next viewers handed over (up to a batch), waiting for the first until every viewer has
/// gone or the deadline passes; empty when there is none to come.
async fn gather(
    fanout: &Fanout,
    handed: &mut mpsc::UnboundedReceiver<Handed>,
    deadline: tokio::time::Instant,
) -> Vec<Handed> {
    let mut batch = Vec::new();
    while batch.len() < BATCH_SOCKETS {
        match handed.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) if !batch.is_empty() => break,
            Err(_) => {
                if fanout.not_handed_over() == 0 && handed.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                // Viewers arrive as their engines let them go: a moment apart.
                let _ = tokio::time::timeout(Duration::from_millis(20), async {
                    if let Some(next) = handed.recv().await {
                        batch.push(next);
                    }
                })
                .await;
            }
        }
    }
    batch
}

/// The new edge's side: opens the streams the old edge names, asks for the viewers and serves
/// each from where it was. Gives how many arrived.
pub async fn take_viewers(edge: Arc<Edge>, incoming: Incoming) -> usize {
    let named = tokio::task::spawn_blocking(move || {
        let mut incoming = incoming;
        incoming.streams().map(|keys| (incoming, keys))
    })
    .await;
    let (mut incoming, keys) = match named {
        Ok(Ok(named)) => named,
        Ok(Err(error)) => {
            tracing::warn!(%error, "the old edge named no streams: its viewers stay there");
            return 0;
        }
        Err(_) => return 0,
    };
    let fanout = edge.fanout().clone();
    let mut opening = tokio::task::JoinSet::new();
    for key in keys.iter().take(MAX_STREAMS) {
        let (fanout, key) = (fanout.clone(), key.clone());
        opening.spawn(async move { fanout.hold(&key).await });
    }
    let mut holds: Vec<Hold> = Vec::new();
    let _ = tokio::time::timeout(OPEN_PATIENCE, async {
        while let Some(opened) = opening.join_next().await {
            holds.extend(opened.ok().flatten());
        }
    })
    .await;
    tracing::debug!(
        streams = keys.len(),
        open = holds.len(),
        "streams open for the viewers"
    );
    let (batches, mut arriving) = mpsc::channel(4);
    let reader = tokio::task::spawn_blocking(move || {
        incoming.ask_for_viewers()?;
        while let Some(batch) = incoming.next_batch()? {
            if batches.blocking_send(batch).is_err() {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    });
    let revoked = edge.gate().revoked().cloned();
    let mut arrived = 0;
    while let Some((records, sockets)) = arriving.recv().await {
        let mut rest = &records[..];
        for socket in sockets {
            let socket = std::net::TcpStream::from(socket);
            let baton = match Baton::decode(rest) {
                Ok((baton, used)) => {
                    rest = &rest[used..];
                    baton
                }
                Err(error) => {
                    // The rest of the batch cannot be read: its viewers are cut.
                    tracing::warn!(%error, "a viewer handed over does not parse");
                    rest = &[];
                    drop(socket);
                    continue;
                }
            };
            arrived += 1;
            let (fanout, revoked) = (fanout.clone(), revoked.clone());
            tokio::spawn(async move {
                fanout.adopt(Handed { baton, socket }, revoked).await;
            });
        }
    }
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the viewers' handover broke off"),
        Err(_) => {}
    }
    tracing::info!(arrived, "continuous-stream viewers taken over");
    tokio::time::sleep(HOLD_AFTER).await;
    drop(holds);
    arrived
}
