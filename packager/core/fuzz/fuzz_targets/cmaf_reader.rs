//! Any bytes, cut into pieces at any places, go through everything the packager does with an
//! ingest stream: cutting it into header and chunks, parsing each, and cutting the chunks'
//! samples out of their `mdat`. Errors are fine; panics, hangs and overreads are not.
#![no_main]

use estuary_packager_core::cmaf::{self, CmafReader, Piece};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how the network splits the stream.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let piece_size = usize::from(split).max(1);
    let mut reader = CmafReader::new();
    let mut header = None;
    for piece in stream.chunks(piece_size) {
        let Ok(pieces) = reader.push(piece) else {
            return;
        };
        for piece in pieces {
            match piece {
                Piece::Header(bytes) => header = cmaf::parse_header(bytes).ok(),
                Piece::Chunk(bytes) => {
                    if let Some(header) = &header {
                        let _ = cmaf::parse_chunk(bytes.clone(), header);
                        let _ = cmaf::samples(&bytes, header);
                    }
                }
            }
        }
    }
    let _ = reader.finish();
});
