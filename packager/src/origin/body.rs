//! Response bodies: bytes already in memory, or a segment still being written, sent piece by
//! piece as its parts arrive.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

pub enum Body {
    /// Shared pieces, written one after another.
    Ready(VecDeque<Bytes>),
    /// Pieces as they come; an error ends the response unfinished, so that no client or cache
    /// takes a cut-short body for a whole one.
    Growing(mpsc::Receiver<io::Result<Bytes>>),
}

impl Body {
    pub fn text(text: impl Into<String>) -> Self {
        Body::Ready(VecDeque::from([Bytes::from(text.into())]))
    }

    pub fn bytes(bytes: Bytes) -> Self {
        Body::Ready(VecDeque::from([bytes]))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match self.get_mut() {
            Body::Ready(pieces) => {
                Poll::Ready(pieces.pop_front().map(|data| Ok(Frame::data(data))))
            }
            Body::Growing(pieces) => pieces
                .poll_recv(context)
                .map(|piece| piece.map(|piece| piece.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Ready(pieces) => pieces.is_empty(),
            Body::Growing(_) => false,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Ready(pieces) => {
                http_body::SizeHint::with_exact(pieces.iter().map(|b| b.len() as u64).sum())
            }
            Body::Growing(_) => http_body::SizeHint::default(),
        }
    }
}
