//! ICY metadata, the "now playing" of Shoutcast and Icecast radio streams, sans IO. A player
//! that wants it asks with `Icy-MetaData: 1`; the answer says `icy-metaint: N`, and then after
//! every N bytes of audio comes one metadata block: a length byte L, then L × 16 bytes of text
//! (`StreamTitle='…';`, padded with zeros). L = 0 says "no change". The interval counts the
//! audio bytes sent to that listener, so each listener has its own [`Inserter`]; the audio's
//! bytes are shared, and only the small blocks are new.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

/// The request header of a player that wants metadata (`Icy-MetaData: 1`).
pub const REQUEST_HEADER: &str = "icy-metadata";
/// The response header that gives the interval.
pub const INTERVAL_HEADER: &str = "icy-metaint";
/// Audio bytes between two metadata blocks: what Icecast and most servers use.
pub const INTERVAL: usize = 16_000;
/// A block holds at most 255 × 16 bytes of text.
const MAX_TEXT: usize = 255 * 16;

/// Whether a request's `Icy-MetaData` value asks for metadata.
pub fn wanted(value: &[u8]) -> bool {
    value.trim_ascii() == b"1"
}

/// The metadata block that says the stream's title is `title`: `StreamTitle='…';`, cut to what a
/// block holds (at a character boundary) and padded to a multiple of 16 bytes. A `'` in the
/// title would end it early in players' parsers, so it is sent as a typographic apostrophe.
pub fn block(title: &str) -> Bytes {
    let title = title.replace('\'', "\u{2019}");
    let mut text = format!("StreamTitle='{title}';");
    if text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT - "';".len();
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("';");
    }
    let sixteens = text.len().div_ceil(16);
    let mut out = BytesMut::with_capacity(1 + sixteens * 16);
    out.put_u8(sixteens as u8);
    out.put_slice(text.as_bytes());
    out.put_bytes(0, sixteens * 16 - text.len());
    out.freeze()
}

/// One listener's metadata: where the next block goes, and the title it last sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserter {
    /// Audio bytes still to send before the next block.
    until_block: usize,
    /// The title of the last block sent (`None` before the first); shared, so that a copy of
    /// a listener's state costs no allocation.
    sent: Option<Arc<str>>,
}

impl Default for Inserter {
    fn default() -> Self {
        Inserter {
            until_block: INTERVAL,
            sent: None,
        }
    }
}

impl Inserter {
    /// A listener's count carried over from elsewhere (another process of the same server):
    /// `until_block` audio bytes to its next block (at most [`INTERVAL`]; out-of-range counts
    /// are clamped), and the title of its last block.
    pub fn resumed(until_block: usize, sent: Option<Arc<str>>) -> Inserter {
        Inserter {
            until_block: until_block.clamp(1, INTERVAL),
            sent,
        }
    }

    /// Audio bytes still to send before the next block.
    pub fn until_block(&self) -> usize {
        self.until_block
    }

    /// The title of the last block sent (`None` before the first).
    pub fn sent(&self) -> Option<&Arc<str>> {
        self.sent.as_ref()
    }

    /// `audio` as this listener is to get it, with a block wherever an interval ends: the
    /// title when it differs from the one last sent, else the one-byte "no change". The audio
    /// is sliced, not copied.
    pub fn insert(&mut self, audio: &Bytes, title: &Arc<str>) -> Vec<Bytes> {
        let mut pieces = Vec::new();
        let mut rest = audio.clone();
        while rest.len() >= self.until_block {
            pieces.push(rest.split_to(self.until_block));
            if self.sent.as_ref() == Some(title) {
                pieces.push(Bytes::from_static(&[0]));
            } else {
                pieces.push(block(title));
                self.sent = Some(title.clone());
            }
            self.until_block = INTERVAL;
        }
        self.until_block -= rest.len();
        if !rest.is_empty() {
            pieces.push(rest);
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes a listener's bytes apart as a player does: the audio, and the titles in order.
    fn read_as_a_player(bytes: &[u8]) -> (Vec<u8>, Vec<String>) {
        let (mut audio, mut titles) = (Vec::new(), Vec::new());
        let mut rest = bytes;
        loop {
            let take = rest.len().min(INTERVAL);
            audio.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let Some((&length, after)) = rest.split_first() else {
                break;
            };
            let (text, after) = after.split_at(usize::from(length) * 16);
            if length > 0 {
                let text = std::str::from_utf8(text).unwrap().trim_end_matches('\0');
                let title = text
                    .strip_prefix("StreamTitle='")
                    .and_then(|t| t.strip_suffix("';"))
                    .unwrap_or_else(|| panic!("not a title: {text:?}"));
                titles.push(title.to_owned());
            }
            rest = after;
        }
        (audio, titles)
    }

    #[test]
    fn blocks_come_every_interval_wherever_the_chunks_end() {
        let mut inserter = Inserter::default();
        let audio: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent = Vec::new();
        // Chunks of odd sizes, the title changing half-way.
        let (a, b): (Arc<str>, Arc<str>) = ("Song A".into(), "Song B".into());
        for (index, chunk) in audio.chunks(4_801).enumerate() {
            let title = if index < 10 { &a } else { &b };
            for piece in inserter.insert(&Bytes::copy_from_slice(chunk), title) {
                sent.extend_from_slice(&piece);
            }
        }
        let (heard, titles) = read_as_a_player(&sent);
        assert_eq!(heard, audio, "the audio comes through whole");
        assert_eq!(
            titles,
            ["Song A", "Song B"],
            "each title once, when it changes"
        );
        // Six intervals in 100,000 bytes: two titles and four one-byte "no change" blocks.
        let block_a = block("Song A").len();
        let block_b = block("Song B").len();
        assert_eq!(sent.len(), audio.len() + block_a + block_b + 4);
    }

    #[test]
    fn a_block_is_padded_cut_and_safe() {
        let block = block("Don't Stop");
        assert_eq!(usize::from(block[0]) * 16, block.len() - 1);
        let text = std::str::from_utf8(&block[1..]).unwrap();
        assert!(
            text.starts_with("StreamTitle='Don\u{2019}t Stop';\0"),
            "{text:?}"
        );

        let long = "é".repeat(3_000);
        let block = super::block(&long);
        assert_eq!(block[0], 255);
        let text = std::str::from_utf8(&block[1..])
            .unwrap()
            .trim_end_matches('\0');
        assert!(text.ends_with("é';"), "cut at a character, then closed");

        assert!(wanted(b"1") && wanted(b" 1 ") && !wanted(b"0") && !wanted(b""));
    }
}
