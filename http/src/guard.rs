//! Time limits on connections that hyper does not keep: the first request must come whole within
//! the head timeout of the connection's opening (hyper's own timer starts only once it knows
//! the protocol, so a client that sends nothing at all would stay); over HTTP/2, a frame (or a
//! header block of HEADERS and CONTINUATION frames) must arrive whole within the head timeout
//! once it has begun, so that a client dribbling a request a byte at a time (slowloris) is cut
//! off as over HTTP/1; and an HTTP/2 connection with no request open and no new one for the
//! idle timeout is closed. [`FrameWatch`] follows the frames in the bytes a client sends (sans
//! IO, time passed in); [`Guarded`] wraps the connection and fails its reads when a limit
//! passes, which ends the connection. Later HTTP/1.1 requests are left to hyper's own header
//! timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where the watch is in the client's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Matching the preface; this many bytes of it so far.
    Preface(usize),
    /// Reading a frame's 9-byte head; this many bytes of it so far.
    Head(usize),
    /// Inside a frame's payload; this many bytes left.
    Payload(usize),
    /// Not HTTP/2: nothing to watch.
    Off,
}

/// Follows the frames of an HTTP/2 client's byte stream.
#[derive(Debug)]
pub struct FrameWatch {
    phase: Phase,
    head: [u8; FRAME_HEAD],
    /// A HEADERS frame came without END_HEADERS: CONTINUATION frames are owed.
    in_header_block: bool,
    /// Since when the client owes the rest of a frame or header block.
    owed_since: Option<Instant>,
    /// When the last header block (a request) was complete.
    last_request: Option<Instant>,
}

impl Default for FrameWatch {
    fn default() -> Self {
        FrameWatch {
            phase: Phase::Preface(0),
            head: [0; FRAME_HEAD],
            in_header_block: false,
            owed_since: None,
            last_request: None,
        }
    }
}

impl FrameWatch {
    /// Takes bytes the client sent, at `now`.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off => return,
                Phase::Preface(matched) => {
                    let take = bytes.len().min(PREFACE.len() - matched);
                    if bytes[..take] != PREFACE[matched..matched + take] {
                        self.phase = Phase::Off;
                        self.owed_since = None;
                        return;
                    }
                    bytes = &bytes[take..];
                    self.phase = if matched + take == PREFACE.len() {
                        Phase::Head(0)
                    } else {
                        Phase::Preface(matched + take)
                    };
                }
                Phase::Head(have) => {
                    let take = bytes.len().min(FRAME_HEAD - have);
                    self.head[have..have + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if have + take < FRAME_HEAD {
                        self.phase = Phase::Head(have + take);
                        continue;
                    }
                    let length = usize::from(self.head[0]) << 16
                        | usize::from(self.head[1]) << 8
                        | usize::from(self.head[2]);
                    let (kind, flags) = (self.head[3], self.head[4]);
                    if kind == HEADERS || (kind == CONTINUATION && self.in_header_block) {
                        self.in_header_block = flags & END_HEADERS == 0;
                        if !self.in_header_block {
                            self.last_request = Some(now);
                        }
                    }
                    self.phase = if length == 0 {
                        Phase::Head(0)
                    } else {
                        Phase::Payload(length)
                    };
                }
                Phase::Payload(left) => {
                    let take = bytes.len().min(left);
                    bytes = &bytes[take..];
                    self.phase = if take == left {
                        Phase::Head(0)
                    } else {
                        Phase::Payload(left - take)
                    };
                }
            }
        }
        let owes = match self.phase {
            Phase::Off => false,
            Phase::Head(0) => self.in_header_block,
            Phase::Preface(_) | Phase::Head(_) | Phase::Payload(_) => true,
        };
        self.owed_since = match (owes, self.owed_since) {
            (false, _) => None,
            (true, Some(since)) => Some(since),
            (true, None) => Some(now),
        };
    }

    /// Since when the client owes the rest of a frame or a header block, if it does.
    pub fn owed_since(&self) -> Option<Instant> {
        self.owed_since
    }

    pub fn is_http2(&self) -> bool {
        self.phase != Phase::Off
    }

    pub fn last_request(&self) -> Option<Instant> {
        self.last_request
    }
}

/// Requests open on one connection, counted by the service that answers them: a connection
/// with one open is not idle, however long the answer takes (a continuous stream).
#[derive(Debug)]
pub struct OpenRequests {
    open: AtomicUsize,
    /// Requests ever opened on the connection.
    opened: AtomicU64,
    /// When the last answer ended, in milliseconds since `epoch`.
    quiet_since_ms: AtomicU64,
    epoch: Instant,
}

impl OpenRequests {
    pub fn new() -> Arc<OpenRequests> {
        Arc::new(OpenRequests {
            open: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Counts a request in until the returned guard is dropped (with the answer's body).
    pub fn open(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        OpenRequest(self.clone())
    }

    /// Whether a request has come on the connection yet.
    fn any_opened(&self) -> bool {
        self.opened.load(Ordering::Relaxed) > 0
    }

    /// When the connection last had nothing open, or `None` while something is.
    fn idle_since(&self) -> Option<Instant> {
        (self.open.load(Ordering::Relaxed) == 0).then(|| {
            self.epoch + Duration::from_millis(self.quiet_since_ms.load(Ordering::Relaxed))
        })
    }
}

/// One open request; dropping it closes it.
#[derive(Debug)]
pub struct OpenRequest(Arc<OpenRequests>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let since = self.0.epoch.elapsed().as_millis() as u64;
        self.0.quiet_since_ms.store(since, Ordering::Relaxed);
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection whose reads fail with `TimedOut` once the client owes a frame for longer than
/// `head_timeout`, or the connection has been idle for `idle_timeout`.
pub struct Guarded<S> {
    inner: S,
    watch: FrameWatch,
    requests: Arc<OpenRequests>,
    head_timeout: Duration,
    idle_timeout: Duration,
    alarm: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    pub fn new(
        inner: S,
        requests: Arc<OpenRequests>,
        head_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Guarded {
            inner,
            watch: FrameWatch::default(),
            requests,
            head_timeout,
            idle_timeout,
            alarm: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    /// When the connection is to be cut if nothing changes.
    fn deadline(&self) -> Option<Instant> {
        if !self.requests.any_opened() {
            let first = self.requests.epoch + self.head_timeout;
            return Some(match self.watch.owed_since() {
                Some(since) => first.min(since + self.head_timeout),
                None => first,
            });
        }
        if !self.watch.is_http2() {
            return None;
        }
        if let Some(since) = self.watch.owed_since() {
            return Some(since + self.head_timeout);
        }
        let idle = self.requests.idle_since()?;
        let quiet = self
            .watch
            .last_request()
            .map_or(idle, |last| last.max(idle));
        Some(quiet + self.idle_timeout)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &read {
            this.watch.feed(&buf.filled()[before..], Instant::now());
        }
        if read.is_ready() && this.watch.owed_since().is_none() && this.requests.any_opened() {
            return read;
        }
        let Some(deadline) = this.deadline() else {
            return read;
        };
        if Instant::now() >= deadline {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client owed a frame, or sent no request, for too long",
            )));
        }
        // Wake the reader at the deadline, to fail then if nothing has changed.
        if this.alarm.deadline() != deadline {
            this.alarm.as_mut().reset(deadline);
        }
        if this.alarm.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let length = payload.len();
        let mut out = vec![
            (length >> 16) as u8,
            (length >> 8) as u8,
            length as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_frame_begun_is_owed_until_it_is_whole() {
        let start = Instant::now();
        let mut watch = FrameWatch::default();
        watch.feed(PREFACE, start);
        assert_eq!(watch.owed_since(), None);
        let settings = frame(0x4, 0, &[0; 6]);
        watch.feed(&settings, start);
        assert_eq!(watch.owed_since(), None);
        let headers = frame(HEADERS, END_HEADERS, &[0x82; 30]);
        // One byte a second: owed from the first byte on, whatever comes later.
        for (n, byte) in headers[..20].iter().enumerate() {
            watch.feed(&[*byte], start + Duration::from_secs(n as u64 + 1));
        }
        assert_eq!(watch.owed_since(), Some(start + Duration::from_secs(1)));
        assert_eq!(watch.last_request(), Some(start + Duration::from_secs(9)));
        watch.feed(&headers[20..], start + Duration::from_secs(30));
        assert_eq!(watch.owed_since(), None);
    }

    #[test]
    fn a_header_block_is_owed_until_its_last_continuation() {
        let start = Instant::now();
        let mut watch = FrameWatch::default();
        watch.feed(PREFACE, start);
        watch.feed(&frame(HEADERS, 0, &[0x82; 5]), start);
        assert_eq!(watch.owed_since(), Some(start), "CONTINUATION is owed");
        let later = start + Duration::from_secs(3);
        watch.feed(&frame(CONTINUATION, 0, &[0; 5]), later);
        assert_eq!(watch.owed_since(), Some(start));
        watch.feed(&frame(CONTINUATION, END_HEADERS, &[0; 5]), later);
        assert_eq!(watch.owed_since(), None);
        assert_eq!(watch.last_request(), Some(later));
    }

    #[test]
    fn what_is_not_http2_is_not_watched() {
        let mut watch = FrameWatch::default();
        watch.feed(b"GET / HTTP/1.1\r\n", Instant::now());
        assert!(!watch.is_http2());
        assert_eq!(watch.owed_since(), None);
        let mut partial = FrameWatch::default();
        partial.feed(&PREFACE[..10], Instant::now());
        assert!(partial.is_http2());
        assert!(
            partial.owed_since().is_some(),
            "the rest of the preface is owed"
        );
    }

    #[test]
    fn any_bytes_are_followed_without_panicking() {
        let mut watch = FrameWatch::default();
        let mut bytes = PREFACE.to_vec();
        bytes.extend((0..5000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8));
        for chunk in bytes.chunks(7) {
            watch.feed(chunk, Instant::now());
        }
    }
}
