//! One viewer of a continuous stream: its queue, bounded so that a viewer too slow to keep up
//! is dropped rather than buffered for; and the frames an edge gets the stream in
//! (`estuary_proto::chunks`): each chunk behind a head that says whether a viewer may start
//! there and when it was captured, and the channel's title in frames of its own.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use estuary_packager_core::continuous::{Joining, Pushed};
use estuary_proto::chunks::{self, Kind};
use estuary_proto::icy;
use estuary_proto::url::StreamFormat;
use tokio::sync::mpsc;

/// Chunks a viewer's queue holds beyond what it is sent on joining. A chunk is one part of one
/// track (a queue entry in TS and AAC, two in MP4: the `moof` and the `mdat`): with the
/// ingest's three parts a second per track, 64 are about ten seconds of media. The bytes are
/// shared with every other viewer, so a full queue costs little memory; it is time that is
/// bounded.
pub const VIEWER_QUEUE: usize = 64;

pub(super) struct Viewer {
    pub(super) queue: mpsc::Sender<io::Result<Bytes>>,
    /// It has had a join point; until then it waits for one.
    pub(super) started: bool,
    /// An edge: each chunk goes behind a frame head.
    pub(super) framed: bool,
    /// A radio player that asked for ICY metadata: where its next block goes.
    pub(super) icy: Option<icy::Inserter>,
}

impl Viewer {
    /// Queues `pieces` (with the ICY blocks due in them, titled `title`), keeping one slot for
    /// the error that ends a viewer too slow to keep up. Says whether the viewer is still there.
    pub(super) fn send(
        &mut self,
        pieces: &[Bytes],
        format: StreamFormat,
        title: &Arc<str>,
    ) -> bool {
        if self.queue.is_closed() {
            return false;
        }
        let with_blocks: Vec<Bytes>;
        let pieces = match &mut self.icy {
            Some(inserter) => {
                with_blocks = pieces
                    .iter()
                    .flat_map(|piece| inserter.insert(piece, title))
                    .collect();
                &with_blocks[..]
            }
            None => pieces,
        };
        if self.queue.capacity() <= pieces.len() {
            tracing::info!(%format, "viewer too slow for the live stream: dropped");
            let reason = format!("{format}: the viewer fell {VIEWER_QUEUE} chunks behind");
            let _ = self.queue.try_send(Err(io::Error::other(reason)));
            return false;
        }
        pieces
            .iter()
            .all(|piece| self.queue.try_send(Ok(piece.clone())).is_ok())
    }
}

/// A chunk's pieces behind the head of its frame.
pub(super) fn frame(pushed: &Pushed) -> Vec<Bytes> {
    let kind = Kind::Chunk {
        join: pushed.join_point,
    };
    let length = pushed.pieces.iter().map(Bytes::len).sum();
    let head = chunks::head(kind, pushed.capture_micros, length);
    let mut framed = Vec::with_capacity(pushed.pieces.len() + 1);
    framed.push(Bytes::copy_from_slice(&head));
    framed.extend(pushed.pieces.iter().cloned());
    framed
}

/// A title in its frame.
pub(super) fn title_frame(title: &str) -> Vec<Bytes> {
    let head = chunks::head(Kind::Title, 0, title.len());
    vec![
        Bytes::copy_from_slice(&head),
        Bytes::copy_from_slice(title.as_bytes()),
    ]
}

/// What a joining viewer is sent first, as frames: the header (empty for TS and ADTS), the
/// title when there is one, then everything from the newest join point as one chunk.
pub(super) fn framed_joining(joining: Joining, title: &str) -> (Vec<Bytes>, bool) {
    let header = joining.header.unwrap_or_default();
    let mut pieces = vec![
        Bytes::copy_from_slice(&chunks::head(Kind::Header, 0, header.len())),
        header,
    ];
    if !title.is_empty() {
        pieces.extend(title_frame(title));
    }
    let started = joining.since_join.is_some();
    if let Some((capture_micros, since_join)) = joining.since_join {
        pieces.extend(frame(&Pushed {
            pieces: since_join,
            join_point: true,
            capture_micros,
        }));
    }
    (pieces, started)
}

/// Ends every viewer's response with an error (so that none takes it for a finished file).
pub(super) fn close(viewers: &mut Vec<Viewer>, reason: &str) {
    for viewer in viewers.drain(..) {
        let _ = viewer
            .queue
            .try_send(Err(io::Error::other(reason.to_owned())));
    }
}

/// Queue entries per chunk: the MP4 `moof` and `mdat` go as two shared pieces; the other
/// formats write a chunk as one.
pub(super) fn entries_per_chunk(format: StreamFormat) -> usize {
    if format == StreamFormat::Mp4 { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use estuary_packager_core::continuous::Feed;
    use estuary_proto::url::TrackName;

    use super::*;
    use crate::testing::{Channel, TrackSpec};

    #[test]
    fn a_viewer_that_falls_behind_is_dropped_with_an_error() {
        let (queue, mut receiver) = mpsc::channel(4);
        let mut viewer = Viewer {
            queue,
            started: true,
            framed: false,
            icy: None,
        };
        let piece = Bytes::from_static(b"chunk");
        let title: Arc<str> = "".into();
        // Three pieces fit; the fourth slot is kept for the error.
        for _ in 0..3 {
            assert!(viewer.send(std::slice::from_ref(&piece), StreamFormat::Ts, &title));
        }
        assert!(!viewer.send(std::slice::from_ref(&piece), StreamFormat::Ts, &title));
        for _ in 0..3 {
            assert_eq!(receiver.try_recv().unwrap().unwrap(), piece);
        }
        let error = receiver.try_recv().unwrap().unwrap_err();
        assert!(
            error.to_string().contains("fell 64 chunks behind"),
            "{error}"
        );

        // A viewer that hung up is gone at the next piece.
        let (queue, receiver) = mpsc::channel(4);
        drop(receiver);
        let mut gone = Viewer {
            queue,
            started: true,
            framed: false,
            icy: None,
        };
        assert!(!gone.send(&[piece], StreamFormat::Mp4, &title));
    }

    #[test]
    fn an_edge_gets_the_header_then_the_join_point_as_frames() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..9);
        channel.feed("a128", &TrackSpec::audio(), 0..9);
        let name = |n: &str| TrackName::new(n).unwrap();
        let video = channel.window.track(&channel.name, &name("v720")).unwrap();
        let audio = channel.window.track(&channel.name, &name("a128")).unwrap();
        let feed = Feed::from_window(StreamFormat::Mp4, Some(video), Some(audio)).unwrap();
        let (pieces, started) = framed_joining(feed.joining(), "");
        assert!(started);
        let mut decoder = chunks::Decoder::new();
        for piece in &pieces {
            decoder.extend(piece);
        }
        let header = decoder.next_frame().unwrap().unwrap();
        assert_eq!(header.kind, Kind::Header);
        assert_eq!(&header.bytes[4..8], b"ftyp");
        let join = decoder.next_frame().unwrap().unwrap();
        assert_eq!(join.kind, Kind::Chunk { join: true });
        assert_eq!(&join.bytes[4..8], b"moof");
        // The join point is the newest segment's first part; its capture time is its decode
        // time, which is UTC.
        let segment = video.segments().next_back().unwrap();
        let start = segment.parts[0].start;
        let expected = start * 1_000_000 / u64::from(video.header.timescale);
        assert_eq!(join.capture_micros, expected);
        assert_eq!(decoder.next_frame(), Ok(None), "nothing else");

        // TS has no header of its own: an empty one says where the stream starts.
        let feed = Feed::from_window(StreamFormat::Ts, Some(video), Some(audio)).unwrap();
        let (pieces, _) = framed_joining(feed.joining(), "");
        assert_eq!(&pieces[0][..], &chunks::head(Kind::Header, 0, 0));
    }
}
