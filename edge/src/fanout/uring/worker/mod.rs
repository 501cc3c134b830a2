//! One thread of the io_uring engine and the viewers handed to it: per viewer its [`Place`] in
//! its stream, at most one operation in flight (a send of its queue, or a wait for room to
//! send), its client timeout and its credentials. The same judgements as the epoll engine's
//! relay, made when a chunk lands, a send completes or the tick comes round.

use std::collections::{HashMap, VecDeque};
use std::net::TcpStream;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::patience::{Patience, Verdict};
use super::token::{Kind, Token};
use super::{Handoff, Relayed, Shared, Support};
use crate::fanout::place::Place;
use crate::fanout::ring::Ring;
use crate::fanout::viewer::unsent_bytes;
use crate::fanout::{State, Stream};
use crate::revoked::Revoked;

mod leave;

/// Submission queue entries per thread: a wake-up's sends beyond it go in several submissions.
pub(super) const RING_ENTRIES: u32 = 1024;
/// How often the thread looks at client timeouts and keycard expiry: both are seconds long.
const TICK: Duration = Duration::from_millis(250);
/// Sends of at least this many bytes go zero-copy (where the kernel offers it): below it,
/// pinning the pages and waiting for the kernel's notification costs more than the copy.
const ZERO_COPY_FROM: usize = 16 * 1024;
/// Pieces of a viewer's queue in one send.
const SLICES: usize = 64;
/// Asks a zero-copy send's notification to say whether the kernel copied the bytes after all
/// (`IORING_SEND_ZC_REPORT_USAGE`, Linux 6.2).
const ZERO_COPY_REPORT_USAGE: u16 = 1 << 3;
/// In a zero-copy notification's result: the bytes were copied (`IORING_NOTIF_USAGE_ZC_COPIED`),
/// as they are to a loopback peer or through a device that cannot gather from user pages.
const ZERO_COPY_COPIED: u32 = 1 << 31;

/// Points `iovecs` at the first [`SLICES`] pieces of `queue`; gives their bytes.
fn gather(queue: &VecDeque<(Bytes, u64)>, iovecs: &mut Vec<libc::iovec>) -> usize {
    iovecs.clear();
    let mut bytes = 0;
    for (piece, _) in queue.iter().take(SLICES) {
        iovecs.push(libc::iovec {
            iov_base: piece.as_ptr().cast_mut().cast(),
            iov_len: piece.len(),
        });
        bytes += piece.len();
    }
    bytes
}

/// One viewer of the thread.
struct Viewer {
    /// Tells it from a later viewer in the same slot.
    number: u64,
    socket: TcpStream,
    stream: Arc<Stream>,
    place: Place,
    generation: u64,
    deadline: Option<Instant>,
    revocable: Option<(Arc<Revoked>, String)>,
    sent: u64,
    patience: Patience,
    /// The user data of the one operation in flight, and whether a cancel of it was asked.
    pending: Option<(u64, bool)>,
    /// To be let go once nothing is in flight.
    leaving: bool,
    /// To be handed over once nothing is in flight and its header is out.
    handing: bool,
    /// Large sends go zero-copy: until the kernel says it copied them anyway.
    zero_copy: bool,
    done: tokio::sync::oneshot::Sender<Relayed>,
    /// The slices and message of the send in flight: the kernel reads them until it
    /// completes, so they live here, in the viewer's box, which does not move.
    iovecs: Vec<libc::iovec>,
    message: libc::msghdr,
}

/// The viewers of one stream on this thread, and how the stream looked when last seen.
struct Group {
    stream: Arc<Stream>,
    slots: Vec<u32>,
    seen: (Option<u64>, State),
}

/// Where a stream stands: its ring's end and its state.
fn look(stream: &Stream) -> (Option<u64>, State) {
    let end = stream.ring().as_ref().map(Ring::end);
    (end, stream.state.borrow().clone())
}

pub(super) struct Worker {
    ring: IoUring,
    shared: Arc<Shared>,
    support: Support,
    /// Boxed, so that a viewer's message stays where the kernel was told it is.
    viewers: Vec<Option<Box<Viewer>>>,
    free: Vec<u32>,
    /// By the address of the stream.
    groups: HashMap<usize, Group>,
    /// The pieces of zero-copy sends the kernel may still read, by the send's user data.
    lent: HashMap<u64, Lent>,
    serial: u32,
    /// Where the doorbell's read puts the eventfd's count.
    doorbell_count: Box<u64>,
    doorbell_armed: bool,
    tick: Box<types::Timespec>,
    tick_armed: bool,
    /// Viewers to take a step (top up, judge, send) once this wake-up's completions are in.
    ready: Vec<u32>,
    /// Viewers taken in so far: each viewer's number.
    adopted: u64,
    /// The viewers are being handed over (as [`Shared::handing`] last read).
    handing: bool,
}

/// The pieces of a zero-copy send, kept until the kernel's notification.
struct Lent {
    /// The number of the viewer the send was for.
    viewer: u64,
    pieces: Vec<Bytes>,
}

impl Worker {
    pub(super) fn new(ring: IoUring, shared: Arc<Shared>, support: Support) -> Worker {
        Worker {
            ring,
            shared,
            support,
            viewers: Vec::new(),
            free: Vec::new(),
            groups: HashMap::new(),
            lent: HashMap::new(),
            serial: 0,
            doorbell_count: Box::new(0),
            doorbell_armed: false,
            tick: Box::new(
                types::Timespec::new()
                    .sec(TICK.as_secs())
                    .nsec(TICK.subsec_nanos()),
            ),
            tick_armed: false,
            ready: Vec::new(),
            adopted: 0,
            handing: false,
        }
    }

    /// Serves viewers until the engine stops and the last of them is gone (and nothing of the
    /// worker's own is in flight).
    pub(super) fn run(mut self) {
        self.listen_for_doorbell();
        self.arm_tick();
        let mut completions: Vec<(u64, i32, u32)> = Vec::new();
        loop {
            if let Err(error) = self.ring.submit_and_wait(1)
                && error.raw_os_error() != Some(libc::EINTR)
            {
                tracing::warn!(%error, "fan-out engine: io_uring_enter failed");
                // An engine thread of its own, not a tokio worker: pausing it stalls no one
                // else, and keeps a failing ring from spinning.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(10));
            }
            completions.clear();
            completions.extend(
                self.ring
                    .completion()
                    .map(|entry| (entry.user_data(), entry.result(), entry.flags())),
            );
            let now = Instant::now();
            let (mut rang, mut ticked) = (false, false);
            for &(data, result, flags) in &completions {
                let Some(token) = Token::from_user_data(data) else {
                    continue;
                };
                match token.kind {
                    Kind::Doorbell => {
                        self.doorbell_armed = false;
                        rang = true;
                    }
                    Kind::Tick => ticked = true,
                    Kind::Send => self.sent(token, data, result, flags, now),
                    Kind::Poll => self.polled(token, data, result),
                    Kind::Cancel => {}
                }
            }
            if rang {
                self.answer_doorbell(now);
            }
            if ticked {
                self.tick_armed = false;
                self.judge_deadlines(now);
                if !self.shared.stopping.load(Ordering::Relaxed) {
                    self.arm_tick();
                }
            }
            let ready = std::mem::take(&mut self.ready);
            for &slot in &ready {
                self.step(slot, now);
            }
            self.ready = ready;
            self.ready.clear();
            if self.shared.stopping.load(Ordering::Relaxed)
                && !self.tick_armed
                && !self.doorbell_armed
                && self.lent.is_empty()
                && self.viewers.iter().all(Option::is_none)
            {
                return;
            }
        }
    }

    /// Queues `entry`, submitting what is queued when the submission queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: what each entry points to outlives its operation: a viewer's message
            // and slices live in its box and the bytes in its queue until the send completes
            // (the viewer is let go only with nothing in flight), zero-copy pieces in `lent`
            // until the kernel's notification, the doorbell's count and the tick's time in
            // this worker, which ends only with nothing of theirs in flight.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(error) = self.ring.submit() {
                tracing::warn!(%error, "fan-out engine: io_uring_enter failed");
            }
        }
    }

    fn listen_for_doorbell(&mut self) {
        let read = opcode::Read::new(
            types::Fd(self.shared.doorbell.as_raw_fd()),
            (&raw mut *self.doorbell_count).cast(),
            size_of::<u64>() as u32,
        )
        .build()
        .user_data(Token::fixed(Kind::Doorbell));
        self.push(read);
        self.doorbell_armed = true;
    }

    fn arm_tick(&mut self) {
        let timeout = opcode::Timeout::new(&raw const *self.tick)
            .build()
            .user_data(Token::fixed(Kind::Tick));
        self.push(timeout);
        self.tick_armed = true;
    }

    fn next_token(&mut self, kind: Kind, slot: u32) -> u64 {
        self.serial = self.serial.wrapping_add(1);
        Token {
            kind,
            slot,
            serial: self.serial,
        }
        .user_data()
    }

    fn viewer(&mut self, slot: u32) -> Option<&mut Viewer> {
        self.viewers.get_mut(slot as usize)?.as_deref_mut()
    }

    /// Takes in the viewers handed over and wakes the viewers of streams that moved on; when
    /// the engine stops, lets every viewer go instead.
    fn answer_doorbell(&mut self, now: Instant) {
        if self.shared.stopping.load(Ordering::Relaxed) {
            for slot in 0..self.viewers.len() as u32 {
                self.end(slot);
            }
            return;
        }
        let arrivals =
            std::mem::take(&mut *self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        for handoff in arrivals {
            self.adopt(handoff, now);
        }
        if !self.handing && self.shared.handing.load(Ordering::Relaxed) {
            self.handing = true;
            for slot in 0..self.viewers.len() as u32 {
                self.hand_over(slot);
            }
        }
        let mut moved = Vec::new();
        for group in self.groups.values_mut() {
            let seen = look(&group.stream);
            if seen != group.seen {
                moved.push((group.slots.clone(), seen.1.clone()));
                group.seen = seen;
            }
        }
        for (slots, state) in moved {
            for slot in slots {
                self.stream_moved(slot, &state);
            }
        }
        self.listen_for_doorbell();
    }

    fn adopt(&mut self, handoff: Handoff, now: Instant) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.viewers.push(None);
            (self.viewers.len() - 1) as u32
        });
        let key = Arc::as_ptr(&handoff.stream) as usize;
        self.groups
            .entry(key)
            .or_insert_with(|| Group {
                stream: handoff.stream.clone(),
                slots: Vec::new(),
                seen: look(&handoff.stream),
            })
            .slots
            .push(slot);
        let patience = Patience::new(handoff.stream.policy.client_timeout, now);
        self.adopted += 1;
        self.viewers[slot as usize] = Some(Box::new(Viewer {
            number: self.adopted,
            zero_copy: self.support.zero_copy,
            socket: handoff.socket,
            place: handoff.place,
            stream: handoff.stream,
            generation: handoff.generation,
            deadline: handoff.deadline,
            revocable: handoff.revocable,
            sent: 0,
            patience,
            pending: None,
            leaving: false,
            handing: self.handing,
            done: handoff.done,
            iovecs: Vec::with_capacity(SLICES),
            // SAFETY: an all-zero msghdr is a valid one: no name, no slices, no control data.
            message: unsafe { std::mem::zeroed() },
        }));
        self.ready.push(slot);
    }

    /// The viewer's stream is now `state` (a chunk landed, or its state changed).
    fn stream_moved(&mut self, slot: u32, state: &State) {
        let Some(viewer) = self.viewer(slot) else {
            return;
        };
        let over = match state {
            // A new header: this viewer's decoder cannot go on.
            State::Live { generation } => *generation != viewer.generation,
            State::Ended { .. } => true,
            State::Connecting => false,
        };
        if over {
            self.end(slot);
            return;
        }
        match viewer.pending {
            // Its socket is full: the send is called back to judge the viewer against the
            // stream now (a skip replaces what is queued behind the chunk part-way out).
            Some((token, false)) => self.cancel(slot, token),
            Some((_, true)) => {}
            None => self.ready.push(slot),
        }
    }

    /// A send completed, or the kernel let go of a zero-copy send's pages.
    fn sent(&mut self, token: Token, data: u64, result: i32, flags: u32, now: Instant) {
        if cqueue::notif(flags) {
            let Some(Lent { viewer, pieces }) = self.lent.remove(&data) else {
                return;
            };
            // The kernel is done with the pages: they may go.
            drop(pieces);
            if result as u32 & ZERO_COPY_COPIED != 0
                && let Some(lent_to) = self.viewer(token.slot)
                && lent_to.number == viewer
            {
                // The pinning and the notification bought nothing: plain sends from now on.
                lent_to.zero_copy = false;
            }
            return;
        }
        let zero_copy = self.lent.contains_key(&data);
        if !cqueue::more(flags) {
            self.lent.remove(&data);
        }
        if zero_copy && result == -libc::EINVAL && self.support.zero_copy {
            // A kernel with zero-copy sends that cannot report their usage (before 6.2).
            tracing::info!("fan-out engine: zero-copy sends refused, sending plainly");
            self.support.zero_copy = false;
        }
        let zero_copy_offered = self.support.zero_copy;
        let Some(viewer) = self.viewer(token.slot) else {
            return;
        };
        if viewer.pending.is_none_or(|(pending, _)| pending != data) {
            return;
        }
        viewer.pending = None;
        viewer.zero_copy &= zero_copy_offered;
        match result {
            written if written > 0 => {
                viewer.place.wrote(written as usize);
                viewer.sent += written as u64;
                viewer.patience.took(now);
            }
            error if error == -libc::ECANCELED || error == -libc::EINTR => {}
            error if error == -libc::EINVAL && zero_copy => {}
            error if error == -libc::EAGAIN => {
                let fd = types::Fd(viewer.socket.as_raw_fd());
                let poll = self.next_token(Kind::Poll, token.slot);
                if let Some(viewer) = self.viewer(token.slot) {
                    viewer.pending = Some((poll, false));
                }
                let entry = opcode::PollAdd::new(fd, libc::POLLOUT as u32)
                    .build()
                    .user_data(poll);
                self.push(entry);
                return;
            }
            // Nothing taken, or the viewer hung up.
            _ => viewer.leaving = true,
        }
        self.ready.push(token.slot);
    }

    /// The viewer's socket has room (or the wait was called back).
    fn polled(&mut self, token: Token, data: u64, result: i32) {
        let Some(viewer) = self.viewer(token.slot) else {
            return;
        };
        if viewer.pending.is_none_or(|(pending, _)| pending != data) {
            return;
        }
        viewer.pending = None;
        if result < 0 && result != -libc::ECANCELED {
            viewer.leaving = true;
        }
        self.ready.push(token.slot);
    }

    /// Disconnects viewers whose keycard expired or whose reader is gone.
    fn judge_deadlines(&mut self, now: Instant) {
        for slot in 0..self.viewers.len() as u32 {
            let Some(viewer) = self.viewer(slot) else {
                continue;
            };
            if viewer.leaving {
                continue;
            }
            if viewer.deadline.is_some_and(|deadline| now >= deadline) {
                tracing::info!(
                    path = viewer.stream.key,
                    "viewer's keycard expired: disconnected"
                );
                self.end(slot);
                continue;
            }
            if viewer.pending.is_none() {
                continue;
            }
            let socket = &viewer.socket;
            if viewer.patience.judge(now, || unsent_bytes(socket)) == Verdict::Gone {
                viewer.stream.counters.drops.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    path = viewer.stream.key,
                    "viewer took no data for the client timeout: dropped"
                );
                self.end(slot);
            }
        }
    }

    /// Tops the viewer's queue up and sends it, or lets the viewer go, unless an operation of
    /// it is in flight.
    fn step(&mut self, slot: u32, now: Instant) {
        let Some(viewer) = self.viewer(slot) else {
            return;
        };
        if viewer.pending.is_some() {
            return;
        }
        if viewer.leaving {
            self.let_go(slot);
            return;
        }
        if viewer.handing && viewer.place.can_hand_over() {
            self.give_back(slot);
            return;
        }
        let was_empty = viewer.place.queue.is_empty();
        let kept = match viewer.stream.ring().as_ref() {
            Some(ring) => viewer.place.top_up(ring, &viewer.stream).is_ok(),
            None => false,
        };
        if !kept {
            self.let_go(slot);
            return;
        }
        if was_empty {
            viewer.patience.idle(now);
        }
        // Looked at whenever the viewer wakes: at least with every chunk of the stream.
        if let Some((revoked, id)) = &viewer.revocable
            && revoked.contains(id)
        {
            tracing::info!(
                path = viewer.stream.key,
                keycard = id,
                "viewer's keycard revoked: disconnected"
            );
            self.let_go(slot);
            return;
        }
        if !viewer.place.queue.is_empty() {
            self.send(slot);
        }
    }

    /// Sends what fits of the viewer's queue: zero-copy when it is large and the kernel can.
    fn send(&mut self, slot: u32) {
        let token = self.next_token(Kind::Send, slot);
        let Some(viewer) = self.viewer(slot) else {
            return;
        };
        let bytes = gather(&viewer.place.queue, &mut viewer.iovecs);
        viewer.message.msg_iov = viewer.iovecs.as_mut_ptr();
        viewer.message.msg_iovlen = viewer.iovecs.len() as _;
        viewer.pending = Some((token, false));
        let fd = types::Fd(viewer.socket.as_raw_fd());
        let message = &raw const viewer.message;
        let flags = libc::MSG_NOSIGNAL as u32;
        let entry = if viewer.zero_copy && bytes >= ZERO_COPY_FROM {
            let lent = Lent {
                viewer: viewer.number,
                pieces: viewer
                    .place
                    .queue
                    .iter()
                    .take(SLICES)
                    .map(|(piece, _)| piece.clone())
                    .collect(),
            };
            self.lent.insert(token, lent);
            opcode::SendMsgZc::new(fd, message)
                .flags(flags)
                .ioprio(ZERO_COPY_REPORT_USAGE)
                .build()
        } else {
            opcode::SendMsg::new(fd, message).flags(flags).build()
        };
        self.push(entry.user_data(token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_takes_the_first_pieces_of_the_queue() {
        let queue: VecDeque<(Bytes, u64)> = (0..100u8)
            .map(|index| (Bytes::from(vec![index; 1000]), 0))
            .collect();
        let mut iovecs = Vec::new();
        assert_eq!(gather(&queue, &mut iovecs), SLICES * 1000);
        assert_eq!(iovecs.len(), SLICES);
        assert_eq!(iovecs[3].iov_base.cast_const(), queue[3].0.as_ptr().cast());
        let short: VecDeque<(Bytes, u64)> = [(Bytes::from_static(b"head"), 0)].into();
        assert_eq!(gather(&short, &mut iovecs), 4);
        assert_eq!(iovecs.len(), 1, "the slices of the send before are gone");
    }
}
