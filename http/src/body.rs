//! Response bodies: shared pieces already whole, a whole body sealed in a memory file (sent by
//! the kernel where the connection allows it), or pieces as they come (from a [`Growing`]
//! body, or any channel). A body counts what it sends, keeps what it is given to hold until
//! the response is over, and tells whoever asked when it ends and how much it sent.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{mpsc, watch};

use crate::sealed::{self, Sealed};

/// A body that may still be arriving.
#[derive(Debug)]
pub struct Growing {
    state: Mutex<Pieces>,
    changed: watch::Sender<()>,
}

#[derive(Debug, Default)]
struct Pieces {
    pieces: Vec<Bytes>,
    bytes: usize,
    /// `None` while more may come; then whether it ended whole.
    end: Option<Result<(), String>>,
    /// A whole body of some length is moved into a sealed memory file; `pieces` is then the
    /// file's mapping.
    sealed: Option<Arc<Sealed>>,
}

impl Growing {
    pub fn new() -> Arc<Growing> {
        Arc::new(Growing {
            state: Mutex::default(),
            changed: watch::channel(()).0,
        })
    }

    /// A body that is already whole.
    pub fn whole(pieces: Vec<Bytes>) -> Arc<Growing> {
        let growing = Growing::new();
        for piece in pieces {
            growing.push(piece);
        }
        growing.finish(Ok(()));
        growing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pieces> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, piece: Bytes) {
        let mut state = self.lock();
        state.bytes += piece.len();
        state.pieces.push(piece);
        drop(state);
        self.changed.send_replace(());
    }

    pub fn finish(&self, end: Result<(), String>) {
        self.lock().end.get_or_insert(end);
        self.changed.send_replace(());
    }

    /// Moves a whole body of at least [`sealed::THRESHOLD`] bytes into a sealed memory file.
    /// Only the one who pushed the pieces calls it, after the last, before `finish`. A body
    /// that cannot be sealed stays as it is.
    pub fn seal(&self) {
        let pieces = {
            let state = self.lock();
            if state.bytes < sealed::THRESHOLD || state.sealed.is_some() {
                return;
            }
            state.pieces.clone()
        };
        match Sealed::new(&pieces) {
            Ok(sealed) => {
                let mut state = self.lock();
                state.pieces = vec![sealed.bytes().clone()];
                state.sealed = Some(Arc::new(sealed));
            }
            // The body is served from memory as it came.
            Err(error) => tracing::debug!(%error, "body not sealed"),
        }
    }

    /// The body's bytes from byte `offset` on, and how the body ended if it has.
    pub fn read(&self, offset: usize) -> (Vec<Bytes>, Option<Result<(), String>>) {
        let state = self.lock();
        let mut skip = offset;
        let mut pieces = Vec::new();
        for piece in &state.pieces {
            if skip >= piece.len() {
                skip -= piece.len();
            } else {
                pieces.push(piece.slice(skip..));
                skip = 0;
            }
        }
        (pieces, state.end.clone())
    }

    /// What the body is now: whole (sealed or in pieces) or still growing.
    pub fn now(&self) -> Now {
        let state = self.lock();
        match (&state.end, &state.sealed) {
            (Some(Ok(())), Some(sealed)) => Now::Sealed(sealed.clone()),
            (Some(Ok(())), None) => Now::Whole(state.pieces.clone()),
            _ => Now::Growing,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    pub fn len(&self) -> usize {
        self.lock().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whole, and how: `Some(Ok)` ended well, `Some(Err)` broke off.
    pub fn end(&self) -> Option<Result<(), String>> {
        self.lock().end.clone()
    }
}

/// A body at one moment.
pub enum Now {
    Sealed(Arc<Sealed>),
    Whole(Vec<Bytes>),
    /// Still arriving, or broken off.
    Growing,
}

pub struct Body {
    source: Source,
    /// Bytes sent so far, by the body's frames or by a connection that wrote them itself.
    sent: u64,
    /// Told how many bytes were sent, when the response is over.
    on_end: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
    /// Something kept until the response is over (the connection's count of open requests).
    held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

enum Source {
    Ready(VecDeque<Bytes>),
    /// A whole body in a sealed memory file: sent by the kernel (`sendfile`) where the
    /// connection allows it, else as the bytes of its mapping.
    Sealed(Option<Arc<Sealed>>),
    /// An error ends the response unfinished, so no client takes a cut-short body for whole.
    Growing(mpsc::Receiver<io::Result<Bytes>>),
}

impl Body {
    pub fn empty() -> Body {
        Body::pieces(Vec::new())
    }

    pub fn text(text: impl Into<String>) -> Body {
        Body::pieces(vec![Bytes::from(text.into())])
    }

    /// Pieces as they come from `receiver`; an error ends the response unfinished.
    pub fn streaming(receiver: mpsc::Receiver<io::Result<Bytes>>) -> Body {
        Body {
            source: Source::Growing(receiver),
            sent: 0,
            on_end: None,
            held: None,
        }
    }

    pub fn bytes(bytes: Bytes) -> Body {
        Body::pieces(vec![bytes])
    }

    pub fn pieces(pieces: Vec<Bytes>) -> Body {
        Body {
            source: Source::Ready(pieces.into()),
            sent: 0,
            on_end: None,
            held: None,
        }
    }

    /// The body of an object: at once when it is whole, else as it grows.
    pub fn of(growing: &Arc<Growing>) -> Body {
        let source = match growing.now() {
            Now::Sealed(sealed) => Source::Sealed(Some(sealed)),
            Now::Whole(pieces) => Source::Ready(pieces.into()),
            Now::Growing => Source::Growing(follow(growing.clone())),
        };
        Body {
            source,
            sent: 0,
            on_end: None,
            held: None,
        }
    }

    /// Takes the sealed file of a whole body, for a connection that sends it itself (and says
    /// how much it sent with [`Body::count_sent`]); the body has nothing left.
    pub fn take_sealed(&mut self) -> Option<Arc<Sealed>> {
        let Source::Sealed(sealed) = &mut self.source else {
            return None;
        };
        sealed.take()
    }

    /// Takes the pieces of a body that is all here, for a connection that writes them itself
    /// (and says how much it sent with [`Body::count_sent`]); the body has nothing left.
    pub fn take_ready(&mut self) -> Option<VecDeque<Bytes>> {
        let Source::Ready(pieces) = &mut self.source else {
            return None;
        };
        Some(std::mem::take(pieces))
    }

    /// Counts bytes the connection sent itself (from [`Body::take_sealed`] or
    /// [`Body::take_ready`]).
    pub fn count_sent(&mut self, bytes: u64) {
        self.sent += bytes;
    }

    /// Has `on_end` told, when the body is dropped (the response over, whole or not), how many
    /// bytes were sent.
    pub fn on_end(mut self, on_end: impl FnOnce(u64) + Send + Sync + 'static) -> Body {
        self.on_end = Some(Box::new(on_end));
        self
    }

    /// Keeps `held` until the body is dropped, when the response is over.
    pub fn holding(mut self, held: impl std::any::Any + Send + Sync) -> Body {
        self.held = Some(Box::new(held));
        self
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.sent);
        }
    }
}

/// Sends a growing object's pieces as they arrive.
fn follow(growing: Arc<Growing>) -> mpsc::Receiver<io::Result<Bytes>> {
    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut changes = growing.subscribe();
        let mut sent = 0;
        loop {
            changes.borrow_and_update();
            let (pieces, end) = growing.read(sent);
            for piece in pieces {
                sent += piece.len();
                if sender.send(Ok(piece)).await.is_err() {
                    return; // the viewer left
                }
            }
            match end {
                Some(Ok(())) => return,
                Some(Err(reason)) => {
                    let _ = sender.send(Err(io::Error::other(reason))).await;
                    return;
                }
                None => {
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        let next = match &mut this.source {
            Source::Ready(pieces) => Poll::Ready(pieces.pop_front().map(Ok)),
            Source::Sealed(sealed) => Poll::Ready(sealed.take().map(|s| Ok(s.bytes().clone()))),
            Source::Growing(pieces) => pieces.poll_recv(context),
        };
        if let Poll::Ready(Some(Ok(piece))) = &next {
            this.sent += piece.len() as u64;
        }
        next.map(|piece| piece.map(|piece| piece.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Ready(pieces) => pieces.is_empty(),
            Source::Sealed(sealed) => sealed.is_none(),
            Source::Growing(_) => false,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.source {
            Source::Ready(pieces) => {
                http_body::SizeHint::with_exact(pieces.iter().map(|b| b.len() as u64).sum())
            }
            Source::Sealed(sealed) => {
                http_body::SizeHint::with_exact(sealed.as_ref().map_or(0, |s| s.len() as u64))
            }
            Source::Growing(_) => http_body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_body_is_read_as_it_grows() {
        let body = Growing::new();
        body.push(Bytes::from_static(b"ab"));
        let (pieces, end) = body.read(0);
        assert_eq!((pieces.len(), end), (1, None));
        body.push(Bytes::from_static(b"cd"));
        body.finish(Ok(()));
        let (pieces, end) = body.read(1);
        assert_eq!(
            (pieces, end),
            (
                vec![Bytes::from_static(b"b"), Bytes::from_static(b"cd")],
                Some(Ok(()))
            )
        );
        assert_eq!(body.len(), 4);
        body.seal();
        assert!(matches!(body.now(), Now::Whole(_)), "too short to seal");
    }
    #[test]
    fn a_sealed_body_reads_on_from_where_a_reader_was() {
        let body = Growing::new();
        let pieces: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        for piece in &pieces {
            body.push(piece.clone());
        }
        let before: Vec<u8> = body.read(12_345).0.concat();
        body.seal();
        body.finish(Ok(()));
        let Now::Sealed(sealed) = body.now() else {
            panic!("40 kB is sealed");
        };
        assert_eq!(sealed.bytes()[..], pieces.concat()[..]);
        let (after, end) = body.read(12_345);
        assert_eq!((after.len(), end), (1, Some(Ok(()))));
        assert_eq!(after[0][..], before[..]);
        assert_eq!(body.len(), 40_000);
    }
}
