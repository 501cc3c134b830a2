//! One viewer of a continuous stream on tokio's epoll reactor: its socket (or the response
//! body hyper sends), written as much as it takes whenever it takes more, with its [`Place`]
//! in the stream judged whenever a chunk lands. A viewer whose reader took nothing for the
//! client timeout is disconnected whatever the policy: its reader is gone.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::baton::{self, Baton};
use super::place::Place;
use super::{Arrival, Fanout, State, Stream};

/// How long a viewer waits for a new stream's upstream to answer.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// A viewer's socket send buffer (the kernel doubles it for its bookkeeping): a third of a
/// second of a 2 Mbit/s stream, twenty of a 128 kbit/s one. Fixed rather than grown by the
/// kernel up to megabytes, so that memory per viewer is bounded and a viewer that falls behind
/// is seen to within a second or two rather than after megabytes of buffering.
const SEND_BUFFER: libc::c_int = 64 * 1024;

/// Serves one viewer of a continuous stream on `socket` (whose request was read and let in)
/// until it leaves, falls behind past its policy, its credentials expire, or the stream ends:
/// once the response head is out, the io_uring engine's threads take the socket over when that
/// engine runs, else this task relays. Gives the status answered and the bytes of stream sent.
pub async fn serve_viewer(
    fanout: &Arc<Fanout>,
    mut socket: TcpStream,
    arrival: Arrival,
) -> (u16, u64) {
    let (stream, generation) = match open(fanout, &arrival).await {
        Ok(opened) => opened,
        Err(refusal) => {
            let _ = socket.write_all(refusal.http1().as_bytes()).await;
            return (refusal.status, 0);
        }
    };
    let media_type = stream.media_type();
    let icy = arrival.icy && !arrival.framed && stream.carries_icy();
    let content_type = if arrival.framed {
        format!(
            "{}\r\n{}: {media_type}",
            estuary_proto::chunks::CONTENT_TYPE,
            estuary_proto::chunks::STREAM_TYPE
        )
    } else {
        media_type
    };
    let icy_head = if icy {
        format!(
            "{}: {}\r\n",
            estuary_proto::icy::INTERVAL_HEADER,
            estuary_proto::icy::INTERVAL
        )
    } else {
        String::new()
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{icy_head}cache-control: no-store\r\naccess-control-allow-origin: *\r\nconnection: close\r\n\r\n"
    );
    if socket.write_all(head.as_bytes()).await.is_ok() && !arrival.head_only {
        set_send_buffer(&socket, SEND_BUFFER);
        let place = Place::new(arrival.framed, icy);
        let arrival = Arrival { icy, ..arrival };
        return (
            200,
            watch(fanout, socket, stream, place, arrival, generation).await,
        );
    }
    let _ = socket.shutdown().await;
    leave(&stream, 0);
    (200, 0)
}

/// A viewer handed over by the process this one upgrades: it goes on at its place, once
/// this process's stream is live; gives the bytes sent. Its head was answered long ago: a
/// viewer that cannot go on here is disconnected, and its player connects again.
pub(super) async fn adopt(
    fanout: &Arc<Fanout>,
    socket: std::net::TcpStream,
    baton: Baton,
    revoked: Option<Arc<crate::revoked::Revoked>>,
) -> u64 {
    let Ok(socket) = socket
        .set_nonblocking(true)
        .and_then(|()| TcpStream::from_std(socket))
    else {
        return 0;
    };
    let (stream, generation) = match open_for(fanout, &baton.key, true).await {
        Ok(opened) => opened,
        Err(refusal) => {
            tracing::info!(
                path = baton.key,
                reason = refusal.reason,
                "a viewer handed over cannot go on here"
            );
            return 0;
        }
    };
    let header = stream
        .ring()
        .as_ref()
        .map(|ring| baton::digest(ring.header()));
    if baton.position.next != super::place::Next::Fresh && header != Some(baton.header) {
        tracing::info!(
            path = baton.key,
            "a viewer handed over had another header: disconnected"
        );
        leave(&stream, 0);
        return 0;
    }
    let place = Place::resumed(baton.framed, baton.icy, baton.position);
    let arrival = Arrival {
        key: baton.key,
        head_only: false,
        framed: baton.framed,
        until: baton.until,
        revocable: revoked.zip(baton.keycard),
        icy: baton.icy,
    };
    watch(fanout, socket, stream, place, arrival, generation).await
}

/// Relays the stream to a viewer whose response head is out until it leaves (the socket is
/// shut down and closed then) or, during an upgrade, is handed to the new process with its
/// place; gives the bytes sent. The io_uring engine's threads write it when that engine runs,
/// else this task does.
async fn watch(
    fanout: &Arc<Fanout>,
    mut socket: TcpStream,
    stream: Arc<Stream>,
    place: Place,
    arrival: Arrival,
    generation: u64,
) -> u64 {
    fanout.socket_viewers.fetch_add(1, Ordering::Relaxed);
    let ticket = Ticket {
        key: arrival.key.clone(),
        framed: arrival.framed,
        icy: arrival.icy,
        until: arrival.until,
        keycard: arrival.revocable.as_ref().map(|(_, id)| id.clone()),
    };
    let (sent, handed) = match fanout.uring() {
        Some(engine) => {
            engine
                .relay(socket, &stream, place, arrival, generation)
                .await
        }
        None => {
            let handing = fanout.handing.subscribe();
            let out = Out::Socket(&mut socket);
            let (sent, place) =
                relay(&stream, out, place, &arrival, generation, Some(handing)).await;
            match place {
                Some(place) => (sent, socket.into_std().ok().map(|socket| (place, socket))),
                None => {
                    let _ = socket.shutdown().await;
                    (sent, None)
                }
            }
        }
    };
    if let Some((place, socket)) = handed {
        let header = stream
            .ring()
            .as_ref()
            .map_or(0, |ring| baton::digest(ring.header()));
        match place.position() {
            Some(position) => fanout.pass(
                Baton {
                    key: ticket.key,
                    framed: ticket.framed,
                    icy: ticket.icy,
                    position,
                    until: ticket.until,
                    keycard: ticket.keycard,
                    header,
                },
                socket,
            ),
            None => drop(socket),
        }
    }
    fanout.socket_viewers.fetch_sub(1, Ordering::Relaxed);
    leave(&stream, sent);
    sent
}

/// What a viewer was let in with, kept for its baton.
struct Ticket {
    key: String,
    framed: bool,
    icy: bool,
    until: Option<u64>,
    keycard: Option<String>,
}

/// A continuous stream as a response body, for connections the engine does not take over
/// (HTTP/2, TLS, HTTP/3): a task relays the stream into the body as the client takes it. The
/// answer's media type, whether it carries ICY metadata, and the body; or the refusal.
pub async fn stream_body(
    fanout: &Arc<Fanout>,
    arrival: Arrival,
) -> Result<(String, bool, estuary_http::Body), Refusal> {
    let (stream, generation) = open(fanout, &arrival).await?;
    let media_type = stream.media_type();
    let icy = arrival.icy && !arrival.framed && stream.carries_icy();
    if arrival.head_only {
        leave(&stream, 0);
        return Ok((media_type, icy, estuary_http::Body::empty()));
    }
    // A few chunks' worth: the client's pace comes through as the channel fills.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let place = Place::new(arrival.framed, icy);
        let out = Out::Channel(sender);
        let (sent, _) = relay(&stream, out, place, &arrival, generation, None).await;
        leave(&stream, sent);
    });
    Ok((media_type, icy, estuary_http::Body::streaming(receiver)))
}

/// Why a viewer was not let onto a stream.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
    /// Where to go instead (a full stream's overflow).
    pub location: Option<String>,
}

impl Refusal {
    /// The refusal as a whole HTTP/1.1 response that closes the connection.
    fn http1(&self) -> String {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = format!("{}\n", self.reason);
        let location = self
            .location
            .as_ref()
            .map(|location| format!("location: {location}\r\n"))
            .unwrap_or_default();
        let retry = if self.status == 503 {
            "retry-after: 5\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {}\r\n{location}{retry}content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
    }
}

/// Counts the viewer onto its stream (starting the stream when it is the first) and waits
/// until the stream is live: the stream and its generation, or why not.
async fn open(fanout: &Arc<Fanout>, arrival: &Arrival) -> Result<(Arc<Stream>, u64), Refusal> {
    open_for(fanout, &arrival.key, false).await
}

/// [`open`] for the stream `key`; `handed_over`: a viewer already served (by the process
/// this one upgrades), counted in even when the stream is full.
pub(super) async fn open_for(
    fanout: &Arc<Fanout>,
    key: &str,
    handed_over: bool,
) -> Result<(Arc<Stream>, u64), Refusal> {
    let stream = match fanout.attach(key, handed_over) {
        Ok(stream) => stream,
        Err(full) => {
            let location = full
                .policy
                .overflow
                .as_ref()
                .map(|base| format!("{}{}", base.trim_end_matches('/'), key));
            return Err(Refusal {
                status: if location.is_some() { 302 } else { 503 },
                reason: "the stream is full".into(),
                location,
            });
        }
    };
    let mut state = stream.state.subscribe();
    let started = state.wait_for(|state| *state != State::Connecting);
    let first = match tokio::time::timeout(CONNECT_PATIENCE, started).await {
        Ok(Ok(state)) => state.clone(),
        _ => State::Ended {
            status: 504,
            reason: "the upstream did not answer in time".into(),
        },
    };
    match first {
        State::Live { generation, .. } => Ok((stream, generation)),
        State::Ended { status, reason } => {
            leave(&stream, 0);
            Err(Refusal {
                status,
                reason,
                location: None,
            })
        }
        State::Connecting => unreachable!("waited for another state"),
    }
}

/// The viewer is gone, having been sent `sent` bytes.
pub(super) fn leave(stream: &Stream, sent: u64) {
    stream.counters.viewers.fetch_sub(1, Ordering::Relaxed);
    stream.counters.bytes_out.fetch_add(sent, Ordering::Relaxed);
}

/// Where a viewer's bytes go: its socket, or the body of a response that hyper sends.
enum Out<'a> {
    Socket(&'a mut TcpStream),
    Channel(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>),
}

impl Out<'_> {
    /// Writes what it can of `queue` (one `writev` on a socket; one piece into a body); gives
    /// the bytes taken.
    async fn write(&mut self, queue: &VecDeque<(Bytes, u64)>) -> std::io::Result<usize> {
        match self {
            Out::Socket(socket) => {
                // On the stack: a write for every chunk of every viewer allocates nothing.
                let mut slices = [IoSlice::new(&[]); 64];
                let mut count = 0;
                for ((bytes, _), slice) in queue.iter().zip(slices.iter_mut()) {
                    *slice = IoSlice::new(bytes);
                    count += 1;
                }
                socket.write_vectored(&slices[..count]).await
            }
            Out::Channel(sender) => {
                let permit = sender
                    .reserve()
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
                let piece = queue
                    .front()
                    .map(|(bytes, _)| bytes.clone())
                    .unwrap_or_default();
                let length = piece.len();
                permit.send(Ok(piece));
                Ok(length)
            }
        }
    }

    /// Bytes written that the peer has not acknowledged yet, where that is known.
    fn unsent(&self) -> Option<i64> {
        match self {
            Out::Socket(socket) => unsent_bytes(*socket),
            Out::Channel(_) => None,
        }
    }
}

/// What woke a viewer.
enum Event {
    Wrote(std::io::Result<usize>),
    /// The stream moved on (`false`: it is gone).
    Changed(bool),
    Stalled,
    Expired,
    /// The process is being upgraded: the viewer goes to the new one.
    HandOver,
}

/// Relays the stream to `out` from its newest join point until the viewer leaves, falls
/// behind past its policy, its credentials expire, or the stream ends or changes generation;
/// or, once `handing` says so, until it can be handed over (its header out). Gives the bytes
/// sent, and the viewer's place when it is to be handed over.
async fn relay(
    stream: &Stream,
    mut out: Out<'_>,
    mut place: Place,
    arrival: &Arrival,
    generation: u64,
    mut handing: Option<watch::Receiver<bool>>,
) -> (u64, Option<Place>) {
    let mut state = stream.state.subscribe();
    let deadline = arrival.until.map(|until| {
        let now = estuary_proto::utc::unix_now().as_secs();
        Instant::now() + Duration::from_secs(until.saturating_sub(now))
    });
    let patience = stream.policy.client_timeout;
    let mut sent = 0u64;
    let mut last_progress = Instant::now();
    // The kernel's unsent bytes at the last check for a stalled socket.
    let mut unsent_then: Option<i64> = None;
    let mut asked = false;
    loop {
        if asked && place.can_hand_over() {
            return (sent, Some(place));
        }
        let was_empty = place.queue.is_empty();
        {
            let ring = stream.ring();
            let Some(ring) = ring.as_ref() else {
                return (sent, None);
            };
            if place.top_up(ring, stream).is_err() {
                return (sent, None);
            }
        }
        if was_empty {
            // Waiting for chunks is not the viewer's stall.
            last_progress = Instant::now();
        }
        // Looked at whenever the viewer wakes: at least with every chunk of the stream.
        if let Some((revoked, id)) = &arrival.revocable
            && revoked.contains(id)
        {
            tracing::info!(
                path = stream.key,
                keycard = id,
                "viewer's keycard revoked: disconnected"
            );
            return (sent, None);
        }
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let handover = async {
            match handing.as_mut() {
                Some(handing) if !asked => {
                    if handing.wait_for(|handing| *handing).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ => std::future::pending().await,
            }
        };
        let event = if place.queue.is_empty() {
            tokio::select! {
                changed = state.changed() => Event::Changed(changed.is_ok()),
                () = expired => Event::Expired,
                () = handover => Event::HandOver,
            }
        } else {
            tokio::select! {
                written = out.write(&place.queue) => Event::Wrote(written),
                changed = state.changed() => Event::Changed(changed.is_ok()),
                () = tokio::time::sleep_until(last_progress + patience) => Event::Stalled,
                () = expired => Event::Expired,
                () = handover => Event::HandOver,
            }
        };
        match event {
            Event::Wrote(Ok(0) | Err(_)) => return (sent, None),
            Event::Wrote(Ok(written)) => {
                place.wrote(written);
                sent += written as u64;
                last_progress = Instant::now();
                unsent_then = None;
            }
            Event::Changed(false) => return (sent, None),
            Event::Changed(true) => match &*state.borrow_and_update() {
                // A new header: this viewer's decoder cannot go on.
                State::Live {
                    generation: now, ..
                } if *now != generation => return (sent, None),
                State::Ended { .. } => return (sent, None),
                _ => {}
            },
            Event::Stalled => {
                // The socket took nothing for the client timeout; but a slow reader's socket
                // takes bytes in bursts (the kernel wakes a writer only once a good part of the
                // send buffer has drained): if the reader drained some since the last look, it
                // is still there.
                let unsent = out.unsent();
                if let Some(unsent) = unsent
                    && unsent_then.is_none_or(|then| unsent < then)
                {
                    unsent_then = Some(unsent);
                    last_progress = Instant::now();
                    continue;
                }
                stream.counters.drops.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    path = stream.key,
                    "viewer took no data for the client timeout: dropped"
                );
                return (sent, None);
            }
            Event::Expired => {
                tracing::info!(path = stream.key, "viewer's keycard expired: disconnected");
                return (sent, None);
            }
            Event::HandOver => asked = true,
        }
    }
}

/// The bytes written to `socket` that its peer has not yet acknowledged (`SIOCOUTQ`).
pub(super) fn unsent_bytes(socket: &impl std::os::fd::AsRawFd) -> Option<i64> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer given.
    let done = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) };
    (done == 0).then_some(i64::from(unsent))
}

/// Sets `SO_SNDBUF` on a viewer's socket (best effort: the kernel's default stays otherwise).
fn set_send_buffer(socket: &TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a plain setsockopt on a socket this process owns, with an int it points to.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
