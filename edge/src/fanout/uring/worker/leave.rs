//! How a viewer leaves an engine thread: let go (its socket shut down and closed), or given
//! back with its place and open socket for the process upgrading this one; either once nothing
//! of it is in flight, an operation in flight being cancelled first.

use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use io_uring::opcode;

use super::{Kind, Viewer, Worker};

impl Worker {
    /// Hands the viewer over once nothing of it is in flight (and its header is out).
    pub(super) fn hand_over(&mut self, slot: u32) {
        let Some(viewer) = self.viewer(slot) else {
            return;
        };
        viewer.handing = true;
        match viewer.pending {
            Some((token, false)) => self.cancel(slot, token),
            Some((_, true)) => {}
            None => self.ready.push(slot),
        }
    }

    /// Lets the viewer go once nothing of it is in flight.
    pub(super) fn end(&mut self, slot: u32) {
        let Some(viewer) = self.viewer(slot) else {
            return;
        };
        viewer.leaving = true;
        match viewer.pending {
            Some((token, false)) => self.cancel(slot, token),
            Some((_, true)) => {}
            None => self.ready.push(slot),
        }
    }

    pub(super) fn cancel(&mut self, slot: u32, token: u64) {
        if let Some(viewer) = self.viewer(slot) {
            viewer.pending = Some((token, true));
        }
        let cancel = opcode::AsyncCancel::new(token)
            .build()
            .user_data(self.next_token(Kind::Cancel, slot));
        self.push(cancel);
    }

    /// The viewer is gone: its socket is shut down and closed, and the bytes it was sent go
    /// back to the task that handed it over.
    pub(super) fn let_go(&mut self, slot: u32) {
        if let Some(viewer) = self.take_out(slot) {
            let _ = viewer.socket.shutdown(Shutdown::Write);
            let _ = viewer.done.send((viewer.sent, None));
        }
    }

    /// The viewer goes back to the task that handed it over, with its place and its open
    /// socket, for the process upgrading this one.
    pub(super) fn give_back(&mut self, slot: u32) {
        if let Some(viewer) = self.take_out(slot) {
            let viewer = *viewer;
            let _ = viewer
                .done
                .send((viewer.sent, Some((viewer.place, viewer.socket))));
        }
    }

    /// Takes the viewer in `slot` off the thread.
    fn take_out(&mut self, slot: u32) -> Option<Box<Viewer>> {
        let viewer = self.viewers.get_mut(slot as usize).and_then(Option::take)?;
        self.free.push(slot);
        let key = Arc::as_ptr(&viewer.stream) as usize;
        if let Some(group) = self.groups.get_mut(&key) {
            group.slots.retain(|&other| other != slot);
            if group.slots.is_empty() {
                self.groups.remove(&key);
            }
        }
        self.shared.viewers.fetch_sub(1, Ordering::Relaxed);
        Some(viewer)
    }
}
