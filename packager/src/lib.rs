//! The packager will own turning CMAF tracks into everything a player asks for: the ingest
//! receiver, the sans-IO segmenting core with its window of recent segments, LL-HLS, HLS-TS and
//! DASH writers, continuous-stream muxers, the archive, and the origin HTTP server.
