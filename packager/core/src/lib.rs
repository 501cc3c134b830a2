//! The packager's core, with no sockets, no clock and no runtime (DESIGN.md "packager"): CMAF
//! in, and everything the packager makes of it out. [`cmaf`] cuts an ingest's bytes into its
//! header and chunks and reads each; the [`window`] keeps every track's recent segments and
//! parts, numbered by UTC, and says what changed as [`window::Event`]s; from the window come
//! the LL-HLS playlists ([`hls`]), HLS with MPEG-TS segments ([`hls_ts_playlist`], muxed by
//! [`mpegts`]), the DASH manifest ([`dash`]) and the archive's VOD playlists ([`vod`]);
//! [`continuous`] muxes the chunks, as they arrive, into never-ending MPEG-TS, MP4, WebM, ADTS
//! and MP3 streams. AAC's ADTS framing ([`adts`]) is shared by the MPEG-TS muxer and
//! `stream.aac`. Time is passed in; the service around it (`estuary-packager`) does the I/O.

pub mod adts;
pub mod cmaf;
pub mod continuous;
pub mod dash;
pub mod hls;
pub mod hls_ts_playlist;
pub mod mpegts;
pub mod vod;
pub mod window;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
