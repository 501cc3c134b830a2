//! The packager turns the ingest's CMAF tracks into what players ask for (DESIGN.md
//! "packager"). So far it holds its sans-IO reading of CMAF: cutting an ingest stream into the
//! header and chunks, and parsing each. The segmenting core, the playlist and manifest writers,
//! the continuous-stream muxers, the archive and the origin HTTP server are still to come.

pub mod cmaf;

#[cfg(test)]
mod testing;
