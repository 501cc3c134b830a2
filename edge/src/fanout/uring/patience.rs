//! The client timeout of one viewer, sans IO: a viewer with bytes queued whose socket took
//! nothing for the timeout is gone, unless the kernel's unsent bytes went down since the last
//! look (a slow reader's socket takes bytes in bursts: the kernel wakes a writer only once a
//! good part of the send buffer has drained).

use std::time::{Duration, Instant};

/// What the client timeout says of a viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Still there, or not yet judged.
    Waiting,
    /// Its reader is gone: disconnect it.
    Gone,
}

pub(super) struct Patience {
    timeout: Duration,
    /// When the viewer last took bytes (or began waiting for some to send).
    last_progress: Instant,
    /// The kernel's unsent bytes at the last look since then.
    unsent_then: Option<i64>,
}

impl Patience {
    pub(super) fn new(timeout: Duration, now: Instant) -> Patience {
        Patience {
            timeout,
            last_progress: now,
            unsent_then: None,
        }
    }

    /// The socket took bytes.
    pub(super) fn took(&mut self, now: Instant) {
        self.last_progress = now;
        self.unsent_then = None;
    }

    /// The viewer had nothing to send: waiting for chunks is not the viewer's stall.
    pub(super) fn idle(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// Judges a viewer with bytes waiting to be sent, whose socket has `unsent` bytes not yet
    /// acknowledged by its peer (where that is known).
    pub(super) fn judge(&mut self, now: Instant, unsent: impl FnOnce() -> Option<i64>) -> Verdict {
        if now < self.last_progress + self.timeout {
            return Verdict::Waiting;
        }
        match unsent() {
            Some(unsent) if self.unsent_then.is_none_or(|then| unsent < then) => {
                self.unsent_then = Some(unsent);
                self.last_progress = now;
                Verdict::Waiting
            }
            _ => Verdict::Gone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(3);

    #[test]
    fn a_viewer_that_takes_nothing_is_gone_after_the_timeout() {
        let start = Instant::now();
        let mut patience = Patience::new(TIMEOUT, start);
        assert_eq!(
            patience.judge(start + Duration::from_secs(2), || unreachable!()),
            Verdict::Waiting,
            "the kernel is not asked before the timeout"
        );
        // The first look at the kernel's unsent bytes gives it another timeout.
        assert_eq!(
            patience.judge(start + TIMEOUT, || Some(4096)),
            Verdict::Waiting
        );
        assert_eq!(
            patience.judge(start + 2 * TIMEOUT, || Some(4096)),
            Verdict::Gone
        );
    }

    #[test]
    fn a_slow_reader_draining_the_kernel_buffer_stays() {
        let start = Instant::now();
        let mut patience = Patience::new(TIMEOUT, start);
        let mut now = start;
        for unsent in [100_000, 90_000, 80_000, 1] {
            now += TIMEOUT;
            assert_eq!(patience.judge(now, || Some(unsent)), Verdict::Waiting);
        }
        now += TIMEOUT;
        assert_eq!(patience.judge(now, || Some(1)), Verdict::Gone);
        assert_eq!(
            Patience::new(TIMEOUT, start).judge(start + TIMEOUT, || None),
            Verdict::Gone,
            "without the kernel's word, the timeout is final"
        );
    }

    #[test]
    fn taking_bytes_or_waiting_for_chunks_starts_the_timeout_again() {
        let start = Instant::now();
        let mut patience = Patience::new(TIMEOUT, start);
        assert_eq!(
            patience.judge(start + TIMEOUT, || Some(10)),
            Verdict::Waiting
        );
        patience.took(start + TIMEOUT);
        // Forgotten: a larger count later is not a stall by itself.
        assert_eq!(
            patience.judge(start + 2 * TIMEOUT, || Some(20)),
            Verdict::Waiting
        );
        patience.idle(start + 3 * TIMEOUT);
        assert_eq!(
            patience.judge(start + 3 * TIMEOUT + Duration::from_secs(1), || None),
            Verdict::Waiting
        );
    }
}
