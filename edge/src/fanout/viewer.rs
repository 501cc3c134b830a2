//! One viewer of a continuous stream: its socket, the chunks queued for it, and its cursor into
//! the stream's ring. It writes as much as the socket takes, whenever it takes more; it is
//! judged whenever a chunk lands: a viewer that has fallen behind by more than its policy
//! allows is moved on to the newest join point (once the chunk it is part-way through is out,
//! so that its decoder only ever sees whole chunks) or disconnected. A viewer whose reader took
//! nothing for the client timeout is disconnected whatever the policy: its reader is gone.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use estuary_proto::chunks::{self, Kind};
use hyper::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ring::{Entry, Read, Ring};
use super::{Arrival, SlowPolicy, State, Stream};
use crate::server::Edge;

/// How long a viewer waits for a new stream's upstream to answer.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// Bytes of chunks a viewer takes from the ring at once.
const QUEUE_BUDGET: usize = 256 * 1024;
/// A viewer's socket send buffer (the kernel doubles it for its bookkeeping): a third of a
/// second of a 2 Mbit/s stream, twenty of a 128 kbit/s one. Fixed rather than grown by the
/// kernel up to megabytes, so that memory per viewer is bounded and a viewer that falls behind
/// is seen to within a second or two rather than after megabytes of buffering.
const SEND_BUFFER: libc::c_int = 64 * 1024;

/// Serves one viewer of a continuous stream on `socket` (whose request was read and let in)
/// until it leaves, falls behind past its policy, its credentials expire, or the stream ends.
/// Gives the status answered and the bytes of stream sent.
pub async fn serve_viewer(edge: &Arc<Edge>, mut socket: TcpStream, arrival: Arrival) -> (u16, u64) {
    let (stream, generation) = match open(edge, &arrival).await {
        Ok(opened) => opened,
        Err(refusal) => {
            let _ = socket.write_all(refusal.http1().as_bytes()).await;
            return (refusal.status, 0);
        }
    };
    let media_type = stream.media_type();
    let content_type = if arrival.framed {
        format!(
            "{}\r\n{}: {media_type}",
            estuary_proto::chunks::CONTENT_TYPE,
            estuary_proto::chunks::STREAM_TYPE
        )
    } else {
        media_type
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncache-control: no-store\r\naccess-control-allow-origin: *\r\nconnection: close\r\n\r\n"
    );
    let mut sent = 0;
    if socket.write_all(head.as_bytes()).await.is_ok() && !arrival.head_only {
        set_send_buffer(&socket, SEND_BUFFER);
        sent = relay(&stream, Out::Socket(&mut socket), &arrival, generation).await;
    }
    let _ = socket.shutdown().await;
    leave(&stream, sent);
    (200, sent)
}

/// A continuous stream as a response body, for connections the engine does not take over
/// (HTTP/2, TLS, HTTP/3): a task relays the stream into the body as the client takes it. The
/// answer's status and media type, or the refusal.
pub async fn stream_body(
    edge: &Arc<Edge>,
    arrival: Arrival,
) -> Result<(String, crate::body::Body), Refusal> {
    let (stream, generation) = open(edge, &arrival).await?;
    let media_type = stream.media_type();
    if arrival.head_only {
        leave(&stream, 0);
        return Ok((media_type, crate::body::Body::empty()));
    }
    // A few chunks' worth: the client's pace comes through as the channel fills.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let sent = relay(&stream, Out::Channel(sender), &arrival, generation).await;
        leave(&stream, sent);
    });
    Ok((media_type, crate::body::Body::streaming(receiver)))
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
async fn open(edge: &Arc<Edge>, arrival: &Arrival) -> Result<(Arc<Stream>, u64), Refusal> {
    let fanout = edge.fanout();
    let stream = match fanout.attach(edge, &arrival.key) {
        Ok(stream) => stream,
        Err(full) => {
            let location = full
                .policy
                .overflow
                .as_ref()
                .map(|base| format!("{}{}", base.trim_end_matches('/'), arrival.key));
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
fn leave(stream: &Stream, sent: u64) {
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
            Out::Socket(socket) => unsent_bytes(socket),
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
}

/// What a viewer has been given and what is queued for it.
struct Place {
    /// The next chunk to take from the ring; `None` until the viewer has had the header and a
    /// join point.
    cursor: Option<u64>,
    /// Chunks taken from the ring and not yet written, each with its capture time; the first
    /// may be partly written.
    queue: VecDeque<(Bytes, u64)>,
    queued_bytes: usize,
    partly_written: bool,
    /// Another edge: each chunk goes in a frame (a copy, head and chunk in one piece, so that
    /// a skip never cuts a frame).
    framed: bool,
}

impl Place {
    fn new(framed: bool) -> Place {
        Place {
            cursor: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            partly_written: false,
            framed,
        }
    }

    /// Queues the stream's header, for a viewer starting on the chunk captured at `capture`.
    fn push_header(&mut self, header: &Bytes, capture: u64) {
        if self.framed {
            // Sent even when empty: it says where the stream starts.
            let framed = frame(Kind::Header, 0, header);
            self.push(framed, capture);
        } else if !header.is_empty() {
            // TS and ADTS have no header of their own.
            self.push(header.clone(), capture);
        }
    }

    fn push_chunk(&mut self, entry: Entry) {
        let bytes = if self.framed {
            frame(
                Kind::Chunk { join: entry.join },
                entry.capture_micros,
                &entry.bytes,
            )
        } else {
            entry.bytes
        };
        self.push(bytes, entry.capture_micros);
    }

    /// Judges the viewer against `ring` and tops its queue up. `Err` when it is to be dropped.
    fn top_up(&mut self, ring: &Ring, stream: &Stream) -> Result<(), ()> {
        let config = &stream.policy;
        let Some(at) = self.cursor else {
            if let Some(start) = ring.start(config.burst_bytes) {
                let capture = ring.capture_micros(start).unwrap_or_default();
                self.push_header(ring.header(), capture);
                self.cursor = Some(start);
                self.take(ring, stream)?;
            }
            return Ok(());
        };
        let unread = ring.lag(at);
        // How far behind: from the oldest chunk not yet begun (the one part-way out is the
        // socket's), queued or still in the ring.
        let oldest = self
            .queue
            .get(usize::from(self.partly_written))
            .map(|(_, capture)| *capture)
            .or_else(|| ring.capture_micros(at));
        let behind_micros = oldest.map_or(0, |oldest| ring.newest_capture().saturating_sub(oldest));
        let behind_bytes = self.queued_bytes + unread.bytes;
        if behind_micros > config.max_lag.as_micros() as u64 || behind_bytes > config.max_lag_bytes
        {
            match (config.slow, ring.newest_join()) {
                (SlowPolicy::Skip, Some(join)) if join > at => {
                    stream.counters.skips.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        path = stream.key,
                        behind_bytes,
                        "slow viewer moved to the newest join point"
                    );
                    self.skip_to(join);
                }
                // Nothing newer to start from yet: it waits for the next join point.
                (SlowPolicy::Skip, _) => {}
                _ => {
                    stream.counters.drops.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(path = stream.key, behind_bytes, "slow viewer dropped");
                    return Err(());
                }
            }
        }
        self.read(ring, stream)
    }

    /// Takes chunks from the ring once the queue holds no whole chunk: the cursor stays where
    /// the viewer is, so that a viewer behind has chunks to skip.
    fn read(&mut self, ring: &Ring, stream: &Stream) -> Result<(), ()> {
        if self.queue.len() > usize::from(self.partly_written) {
            return Ok(());
        }
        self.take(ring, stream)
    }

    /// Takes the chunks from the cursor on (up to [`QUEUE_BUDGET`]) into the queue.
    fn take(&mut self, ring: &Ring, stream: &Stream) -> Result<(), ()> {
        let Some(at) = self.cursor else {
            return Ok(());
        };
        let mut taken = Vec::new();
        match ring.read(at, QUEUE_BUDGET, &mut taken) {
            Read::Chunks { next } => {
                self.cursor = Some(next);
                for entry in taken {
                    self.push_chunk(entry);
                }
            }
            Read::Nothing => {}
            // The lag checks catch a viewer before the ring lets go of its chunk, unless the
            // ring's limits are tighter than the lag allowed.
            Read::Lost => match (stream.policy.slow, ring.newest_join()) {
                (SlowPolicy::Skip, Some(join)) => {
                    stream.counters.skips.fetch_add(1, Ordering::Relaxed);
                    self.skip_to(join);
                    return self.read(ring, stream);
                }
                _ => {
                    stream.counters.drops.fetch_add(1, Ordering::Relaxed);
                    return Err(());
                }
            },
        }
        Ok(())
    }

    /// Drops what is queued but the chunk being written, and goes on from chunk `join`.
    fn skip_to(&mut self, join: u64) {
        let keep = usize::from(self.partly_written).min(self.queue.len());
        self.queue.truncate(keep);
        self.queued_bytes = self.queue.iter().map(|(bytes, _)| bytes.len()).sum();
        self.cursor = Some(join);
    }

    fn push(&mut self, bytes: Bytes, capture: u64) {
        self.queued_bytes += bytes.len();
        self.queue.push_back((bytes, capture));
    }

    /// `written` bytes of the queue went out.
    fn wrote(&mut self, mut written: usize) {
        self.queued_bytes -= written;
        while written > 0 {
            let Some((front, _)) = self.queue.front_mut() else {
                break;
            };
            if written < front.len() {
                front.advance(written);
                self.partly_written = true;
                return;
            }
            written -= front.len();
            self.queue.pop_front();
            self.partly_written = false;
        }
    }
}

/// Relays the stream to `out` from its newest join point until the viewer leaves, falls
/// behind past its policy, its credentials expire, or the stream ends or changes generation.
/// Gives the bytes sent.
async fn relay(stream: &Stream, mut out: Out<'_>, arrival: &Arrival, generation: u64) -> u64 {
    let mut state = stream.state.subscribe();
    let deadline = arrival.until.map(|until| {
        let now = crate::server::unix_now().as_secs();
        Instant::now() + Duration::from_secs(until.saturating_sub(now))
    });
    let patience = stream.policy.client_timeout;
    let mut place = Place::new(arrival.framed);
    let mut sent = 0u64;
    let mut last_progress = Instant::now();
    // The kernel's unsent bytes at the last check for a stalled socket.
    let mut unsent_then: Option<i64> = None;
    loop {
        let was_empty = place.queue.is_empty();
        {
            let ring = stream.ring();
            let Some(ring) = ring.as_ref() else {
                return sent;
            };
            if place.top_up(ring, stream).is_err() {
                return sent;
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
            return sent;
        }
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let event = if place.queue.is_empty() {
            tokio::select! {
                changed = state.changed() => Event::Changed(changed.is_ok()),
                () = expired => Event::Expired,
            }
        } else {
            tokio::select! {
                written = out.write(&place.queue) => Event::Wrote(written),
                changed = state.changed() => Event::Changed(changed.is_ok()),
                () = tokio::time::sleep_until(last_progress + patience) => Event::Stalled,
                () = expired => Event::Expired,
            }
        };
        match event {
            Event::Wrote(Ok(0) | Err(_)) => return sent,
            Event::Wrote(Ok(written)) => {
                place.wrote(written);
                sent += written as u64;
                last_progress = Instant::now();
                unsent_then = None;
            }
            Event::Changed(false) => return sent,
            Event::Changed(true) => match &*state.borrow_and_update() {
                // A new header: this viewer's decoder cannot go on.
                State::Live {
                    generation: now, ..
                } if *now != generation => return sent,
                State::Ended { .. } => return sent,
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
                return sent;
            }
            Event::Expired => {
                tracing::info!(path = stream.key, "viewer's keycard expired: disconnected");
                return sent;
            }
        }
    }
}

/// `bytes` behind the head of a frame of `kind`, in one piece.
fn frame(kind: Kind, capture_micros: u64, bytes: &Bytes) -> Bytes {
    let mut framed = BytesMut::with_capacity(chunks::HEAD_LENGTH + bytes.len());
    framed.extend_from_slice(&chunks::head(kind, capture_micros, bytes.len()));
    framed.extend_from_slice(bytes);
    framed.freeze()
}

/// The bytes written to `socket` that its peer has not yet acknowledged (`SIOCOUTQ`).
fn unsent_bytes(socket: &TcpStream) -> Option<i64> {
    use std::os::fd::AsRawFd as _;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::MountPolicy;
    use crate::fanout::ring::Limits;

    const SECOND: u64 = 1_000_000;

    /// A stream whose viewers are slow 2 s behind.
    fn stream(slow: SlowPolicy) -> Stream {
        let policy = MountPolicy {
            slow,
            max_lag: Duration::from_secs(2),
            max_lag_bytes: 1 << 30,
            ..MountPolicy::default()
        };
        Stream::new("/live/demo/stream.ts", policy, Default::default())
    }

    /// Three 10 kB chunks a second, a join point every two seconds, for `seconds`.
    fn ring(seconds: u64) -> Ring {
        let mut ring = Ring::new(
            Bytes::from_static(b"head"),
            Limits {
                bytes: 1 << 30,
                micros: 60 * SECOND,
            },
        );
        for part in 0..seconds * 3 {
            ring.push(Entry {
                bytes: Bytes::from(vec![0u8; 10_000]),
                join: part % 6 == 0,
                capture_micros: part * SECOND / 3,
            });
        }
        ring
    }

    fn place() -> Place {
        Place::new(false)
    }

    #[test]
    fn a_new_viewer_gets_the_header_then_the_newest_join_point_on() {
        let (ring, stream) = (ring(5), stream(SlowPolicy::Skip));
        let mut place = place();
        place.top_up(&ring, &stream).unwrap();
        // Join points at chunks 0, 6 and 12; 15 chunks.
        assert_eq!(place.queue.len(), 1 + 3);
        assert_eq!(&place.queue[0].0[..], b"head");
        assert_eq!(place.cursor, Some(15));
    }

    #[test]
    fn a_viewer_that_falls_behind_skips_after_the_chunk_it_is_writing() {
        let (mut ring, stream) = (ring(2), stream(SlowPolicy::Skip));
        let mut place = place();
        place.top_up(&ring, &stream).unwrap(); // header + chunk 0..6
        place.wrote(4 + 5_000); // the header and half of chunk 0
        assert!(place.partly_written);
        // Four seconds more land while the viewer reads nothing.
        for part in 6..18 {
            ring.push(Entry {
                bytes: Bytes::from(vec![1u8; 10_000]),
                join: part % 6 == 0,
                capture_micros: part * SECOND / 3,
            });
        }
        place.top_up(&ring, &stream).unwrap();
        assert_eq!(stream.counters.skips.load(Ordering::Relaxed), 1);
        // The rest of chunk 0, then the newest join point (chunk 12) on.
        assert_eq!(place.queue[0].0.len(), 5_000);
        assert_eq!(place.queue[1].0[0], 1);
        assert_eq!(place.queue.len(), 1 + 6);
        assert_eq!(place.cursor, Some(18));
    }

    #[test]
    fn a_viewer_that_falls_behind_is_dropped_by_the_drop_policy() {
        let (mut ring, stream) = (ring(2), stream(SlowPolicy::Drop));
        let mut place = place();
        place.top_up(&ring, &stream).unwrap();
        for part in 6..18 {
            ring.push(Entry {
                bytes: Bytes::from(vec![1u8; 10_000]),
                join: part % 6 == 0,
                capture_micros: part * SECOND / 3,
            });
        }
        assert!(place.top_up(&ring, &stream).is_err());
        assert_eq!(stream.counters.drops.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn another_edge_gets_the_stream_in_frames() {
        let (ring, stream) = (ring(5), stream(SlowPolicy::Skip));
        let mut place = Place::new(true);
        place.top_up(&ring, &stream).unwrap();
        let mut decoder = chunks::Decoder::new();
        for (bytes, _) in &place.queue {
            decoder.extend(bytes);
        }
        let header = decoder.next_frame().unwrap().unwrap();
        assert_eq!(
            (header.kind, &header.bytes[..]),
            (Kind::Header, &b"head"[..])
        );
        let first = decoder.next_frame().unwrap().unwrap();
        assert_eq!(first.kind, Kind::Chunk { join: true });
        assert_eq!(first.capture_micros, 4 * SECOND, "chunk 12, at 4 s");
        assert_eq!(first.bytes.len(), 10_000);
        let second = decoder.next_frame().unwrap().unwrap();
        assert_eq!(second.kind, Kind::Chunk { join: false });
    }
}
