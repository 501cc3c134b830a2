//! The packager turns the ingest's CMAF tracks into what players ask for (DESIGN.md
//! "packager"). So far it holds its sans-IO core: reading CMAF (cutting an ingest stream into
//! the header and chunks, and parsing each) and the window of recent segments and parts that
//! those chunks build, with the events that tell what changed, and what is written from that
//! window: LL-HLS playlists, the DASH manifest, HLS with MPEG-TS segments remuxed from the same
//! samples, and the continuous streams (MPEG-TS, fragmented MP4, ADTS). Around it: the ingest
//! receiver, the origin HTTP server, the admin endpoint, the
//! archive on disk with its VOD playlists, and the player page.

pub mod admin;
pub mod archive;
pub mod cmaf;
pub mod continuous;
pub mod dash;
pub mod hls;
pub mod hls_ts;
pub mod origin;
pub mod player;
pub mod receiver;
pub mod server;
pub mod ts;
pub mod vod;
pub mod window;

pub use server::{PackagerConfig, PackagerError};

#[cfg(test)]
mod testing;
