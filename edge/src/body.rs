//! Response bodies to viewers: shared pieces already whole, or pieces as an object grows. Each
//! body counts what it sends and, when the response is over, writes the access-log line.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

use crate::cache::{Growing, Now};
use crate::metrics::{AccessLog, LogLine, Metrics};
use crate::sealed::Sealed;

pub struct Body {
    source: Source,
    tally: Option<Tally>,
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

/// What a finished response adds to the metrics and the access log.
pub struct Tally {
    pub metrics: Arc<Metrics>,
    pub log: Option<(AccessLog, OwnedLogLine)>,
    pub bytes: u64,
}

/// The parts of a log line known when the response starts.
pub struct OwnedLogLine {
    pub client: std::net::IpAddr,
    pub unix_nanos: u64,
    pub request_line: String,
    pub status: u16,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.metrics
            .bytes_out
            .fetch_add(self.bytes, Ordering::Relaxed);
        if let Some((log, line)) = &self.log {
            log.write(&LogLine {
                client: line.client,
                unix_nanos: line.unix_nanos,
                request_line: &line.request_line,
                status: line.status,
                bytes: self.bytes,
                referer: line.referer.as_deref(),
                user_agent: line.user_agent.as_deref(),
            });
        }
    }
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
            tally: None,
            held: None,
        }
    }

    pub fn pieces(pieces: Vec<Bytes>) -> Body {
        Body {
            source: Source::Ready(pieces.into()),
            tally: None,
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
            tally: None,
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

    /// Counts bytes the connection sent itself, for the metrics and the access log.
    pub fn count_sent(&mut self, bytes: u64) {
        if let Some(tally) = &mut self.tally {
            tally.bytes += bytes;
        }
    }

    /// Keeps `held` until the body is dropped, when the response is over.
    pub fn holding(mut self, held: impl std::any::Any + Send + Sync) -> Body {
        self.held = Some(Box::new(held));
        self
    }

    pub fn tallied(mut self, tally: Tally) -> Body {
        self.tally = Some(tally);
        self
    }

    pub fn set_status(&mut self, status: u16) {
        if let Some(Tally {
            log: Some((_, line)),
            ..
        }) = &mut self.tally
        {
            line.status = status;
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
        if let (Poll::Ready(Some(Ok(piece))), Some(tally)) = (&next, &mut this.tally) {
            tally.bytes += piece.len() as u64;
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
