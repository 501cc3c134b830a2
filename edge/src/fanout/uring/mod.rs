//! The io_uring engine: a few threads (one per CPU by default), each owning an io_uring and
//! the plain HTTP/1 viewers handed to it once their response head is out. A thread wakes when
//! its doorbell (an eventfd the feeds ring when a chunk lands) or its tick (a timer, for
//! client timeouts and keycard expiry) completes, or a send does; every send of a wake-up goes
//! to the kernel in one submission, so that a chunk reaches a thousand viewers in a handful of
//! system calls rather than a thousand tasks woken and a thousand `writev`s.

mod patience;
mod token;
mod worker;

use std::net::TcpStream;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, opcode};

use super::place::Place;
use super::{Arrival, EngineChoice, Stream};
use crate::revoked::Revoked;

/// What the kernel offers the engine beyond what it cannot do without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Support {
    /// Zero-copy sends (`IORING_OP_SENDMSG_ZC`).
    zero_copy: bool,
}

/// A viewer on its way to a thread.
struct Handoff {
    socket: TcpStream,
    stream: Arc<Stream>,
    /// The stream's generation when the viewer joined: a new one ends the viewer.
    generation: u64,
    /// What it has been given (nothing yet) and how its bytes are to be dressed (framed for an
    /// edge, ICY blocks for a radio player).
    place: Place,
    /// When its credentials expire.
    deadline: Option<Instant>,
    revocable: Option<(Arc<Revoked>, String)>,
    /// Where the bytes sent go once the viewer is gone, with its place and socket when it
    /// was handed over instead.
    done: tokio::sync::oneshot::Sender<Relayed>,
}

/// How a viewer left a thread: the bytes it was sent, and its place and socket when it is to
/// go to the process upgrading this one.
pub(super) type Relayed = (u64, Option<(Place, TcpStream)>);

/// What the tokio side and a thread share.
struct Shared {
    /// Viewers handed over and not yet taken in.
    inbox: Mutex<Vec<Handoff>>,
    /// An eventfd the thread keeps a read on: written when a stream moves on, a viewer is
    /// handed over or the engine stops.
    doorbell: OwnedFd,
    /// Viewers handed to the thread and not yet gone.
    pub(super) viewers: AtomicUsize,
    stopping: AtomicBool,
    /// The viewers are to be handed over, each once its header is out.
    handing: AtomicBool,
}

impl Shared {
    pub(super) fn new() -> std::io::Result<Shared> {
        // SAFETY: eventfd takes no pointers; its result is checked before use.
        let doorbell = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if doorbell < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Shared {
            inbox: Mutex::default(),
            // SAFETY: a descriptor just made and owned by nobody else.
            doorbell: unsafe { OwnedFd::from_raw_fd(doorbell) },
            viewers: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            handing: AtomicBool::new(false),
        })
    }

    pub(super) fn ring_doorbell(&self) {
        let one = 1u64;
        // SAFETY: writes the 8 bytes of `one` to an eventfd this struct owns. It fails only
        // when the count would overflow, and then the thread has a wake-up pending anyway.
        unsafe {
            libc::write(
                self.doorbell.as_raw_fd(),
                (&one as *const u64).cast(),
                size_of::<u64>(),
            );
        }
    }

    pub(super) fn adopt(&self, handoff: Handoff) {
        self.viewers.fetch_add(1, Ordering::Relaxed);
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handoff);
        self.ring_doorbell();
    }

    /// Asks the thread to let its viewers go and end.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.ring_doorbell();
    }
}

/// The engine's threads.
pub(super) struct Engine {
    workers: Vec<Arc<Shared>>,
}

impl Engine {
    /// Starts the engine `choice` asks for: `None` for epoll (chosen, or what `auto` falls
    /// back to, saying why), `Err` when io_uring was asked for and cannot run.
    pub(super) fn start(
        choice: EngineChoice,
        threads: Option<usize>,
    ) -> Result<Option<Engine>, String> {
        let probed = match choice {
            EngineChoice::Epoll => {
                tracing::info!("fan-out engine: epoll, as chosen");
                return Ok(None);
            }
            EngineChoice::Auto | EngineChoice::IoUring => probe(),
        };
        let support = match (choice, probed) {
            (_, Ok(support)) => support,
            (EngineChoice::IoUring, Err(why)) => return Err(format!("io_uring: {why}")),
            (_, Err(why)) => {
                tracing::info!(%why, "fan-out engine: epoll, io_uring is not available");
                return Ok(None);
            }
        };
        let threads = threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        let mut workers = Vec::with_capacity(threads);
        for index in 0..threads {
            let shared = Arc::new(Shared::new().map_err(|error| format!("eventfd: {error}"))?);
            let ring = IoUring::builder()
                // Room for a wake-up's completions (a send, a zero-copy notification and a
                // cancel for each of a thread's viewers) without leaning on the overflow list.
                .setup_cqsize(worker::RING_ENTRIES * 8)
                .build(worker::RING_ENTRIES)
                .map_err(|error| format!("io_uring_setup: {error}"))?;
            let thread_shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("fanout-uring-{index}"))
                .spawn(move || worker::Worker::new(ring, thread_shared, support).run())
                .map_err(|error| format!("starting an engine thread: {error}"))?;
            workers.push(shared);
        }
        tracing::info!(
            threads,
            zero_copy = support.zero_copy,
            "fan-out engine: io_uring"
        );
        Ok(Some(Engine { workers }))
    }

    /// Rings every thread's doorbell: a stream moved on. Each thread looks at the streams of
    /// its own viewers; one with none of that stream's viewers only looks.
    pub(super) fn ring_doorbells(&self) {
        for worker in &self.workers {
            worker.ring_doorbell();
        }
    }

    /// Hands every thread's viewers over, each once its header is out.
    pub(super) fn hand_over(&self) {
        for worker in &self.workers {
            worker.handing.store(true, Ordering::Relaxed);
            worker.ring_doorbell();
        }
    }

    /// Relays `stream` to the viewer on `socket` (its response head written) on the thread
    /// with the fewest viewers, until the viewer leaves, falls behind past its policy, its
    /// credentials expire, or the stream ends or changes generation; the thread then shuts the
    /// socket down and closes it. During an upgrade the thread gives the viewer back instead,
    /// with its place. Gives the bytes sent.
    pub(super) async fn relay(
        &self,
        socket: tokio::net::TcpStream,
        stream: &Arc<Stream>,
        place: Place,
        arrival: Arrival,
        generation: u64,
    ) -> Relayed {
        let Ok(socket) = socket.into_std() else {
            return (0, None);
        };
        let deadline = arrival.until.map(|until| {
            let now = estuary_proto::utc::unix_now().as_secs();
            Instant::now() + Duration::from_secs(until.saturating_sub(now))
        });
        let (done, sent) = tokio::sync::oneshot::channel();
        let handoff = Handoff {
            socket,
            stream: stream.clone(),
            generation,
            place,
            deadline,
            revocable: arrival.revocable,
            done,
        };
        let worker = least_busy(&self.workers);
        worker.adopt(handoff);
        // The thread answers when the viewer is gone (nothing when it stopped first).
        sent.await.unwrap_or((0, None))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.stop();
        }
    }
}

/// The worker with the fewest viewers (the first of equals).
fn least_busy(workers: &[Arc<Shared>]) -> &Arc<Shared> {
    workers
        .iter()
        .min_by_key(|worker| worker.viewers.load(Ordering::Relaxed))
        .expect("the engine starts at least one thread")
}

/// Whether this kernel (and the process's seccomp filter) lets the engine run: a ring is
/// made, and asked which of the operations the engine uses it knows.
fn probe() -> Result<Support, String> {
    let ring = IoUring::new(8).map_err(|error| format!("io_uring_setup: {error}"))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|error| format!("probing its operations: {error}"))?;
    let needed = [
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::Read::CODE, "READ"),
        (opcode::Timeout::CODE, "TIMEOUT"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ];
    if let Some((_, name)) = needed.iter().find(|(code, _)| !probe.is_supported(*code)) {
        return Err(format!("the kernel's io_uring has no {name}"));
    }
    // An eventfd is the doorbell: made here too, so that its failure is the probe's.
    // SAFETY: eventfd takes no pointers; its result is checked before use.
    let doorbell = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if doorbell < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor just made and owned by nobody else.
    drop(unsafe { OwnedFd::from_raw_fd(doorbell) });
    Ok(Support {
        zero_copy: probe.is_supported(opcode::SendMsgZc::CODE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_is_chosen_without_probing() {
        assert!(
            Engine::start(EngineChoice::Epoll, Some(1))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn auto_runs_io_uring_where_the_kernel_offers_it_and_epoll_elsewhere() {
        let engine = Engine::start(EngineChoice::Auto, Some(2)).unwrap();
        assert_eq!(engine.is_some(), probe().is_ok());
        if let Some(engine) = engine {
            assert_eq!(engine.workers.len(), 2);
        }
        match Engine::start(EngineChoice::IoUring, Some(1)) {
            Ok(engine) => assert!(engine.is_some()),
            Err(why) => assert!(why.starts_with("io_uring: "), "{why}"),
        }
    }

    /// A viewer handed to a thread gets the header and the chunks from the newest join point,
    /// then each chunk as it lands, and is let go (its socket closed, its bytes counted) when
    /// the stream ends.
    #[tokio::test]
    async fn a_thread_relays_a_stream_to_its_viewer_until_the_stream_ends() {
        use crate::fanout::ring::{Entry, Limits, Ring};
        use crate::fanout::{MountPolicy, State};
        use bytes::Bytes;
        use std::io::Read as _;

        let engine = Engine::start(EngineChoice::IoUring, Some(1))
            .expect(
                "this test needs a kernel (and a seccomp filter) that lets io_uring_setup through",
            )
            .unwrap();
        let stream = Arc::new(Stream::new(
            "/live/demo/stream.ts",
            MountPolicy::default(),
            Default::default(),
        ));
        let chunk = |byte: u8, join: bool, capture_micros: u64| Entry {
            bytes: Bytes::from(vec![byte; 40_000]),
            join,
            capture_micros,
        };
        let mut ring = Ring::new(
            Bytes::from_static(b"head"),
            Limits {
                bytes: 1 << 20,
                micros: 10_000_000,
            },
        );
        ring.push(chunk(0, true, 0));
        ring.push(chunk(1, true, 100_000));
        *stream.ring() = Some(ring);
        stream.state.send_replace(State::Live { generation: 0 });

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut viewer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        let socket = tokio::net::TcpStream::from_std(socket).unwrap();
        let arrival = Arrival {
            key: stream.key.clone(),
            head_only: false,
            framed: false,
            until: None,
            revocable: None,
            icy: false,
        };
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            viewer.read_to_end(&mut received).unwrap();
            received
        });
        let feeder = {
            let stream = stream.clone();
            let shared: Vec<Arc<Shared>> = engine.workers.clone();
            async move {
                // A chunk lands, then the stream ends; each is announced as the feed does.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(ring) = stream.ring().as_mut() {
                    ring.push(chunk(2, false, 200_000));
                }
                stream.state.send_replace(State::Live { generation: 0 });
                shared.iter().for_each(|worker| worker.ring_doorbell());
                tokio::time::sleep(Duration::from_millis(200)).await;
                stream.state.send_replace(State::Ended {
                    status: 502,
                    reason: "gone".into(),
                });
                shared.iter().for_each(|worker| worker.ring_doorbell());
            }
        };
        let place = Place::new(false, false);
        let ((sent, _), ()) =
            tokio::join!(engine.relay(socket, &stream, place, arrival, 0), feeder);
        let received = reader.join().unwrap();
        assert_eq!(sent, received.len() as u64);
        assert_eq!(&received[..4], b"head");
        // The newest join point (chunk 1), then the chunk that landed.
        assert_eq!(received.len(), 4 + 2 * 40_000);
        assert!(received[4..40_004].iter().all(|&byte| byte == 1));
        assert!(received[40_004..].iter().all(|&byte| byte == 2));
        assert_eq!(engine.workers[0].viewers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn viewers_go_to_the_least_busy_thread() {
        let workers: Vec<Arc<Shared>> = (0..3).map(|_| Arc::new(Shared::new().unwrap())).collect();
        workers[0].viewers.store(5, Ordering::Relaxed);
        workers[1].viewers.store(2, Ordering::Relaxed);
        workers[2].viewers.store(2, Ordering::Relaxed);
        assert!(Arc::ptr_eq(least_busy(&workers), &workers[1]));
    }
}
