//! `/live/{channel}/ts/…`: the route of HLS with MPEG-TS segments, for players that predate
//! CMAF: the playlists written from the window, the segments remuxed by [`crate::remux`].

use estuary_http::{Body, problem, respond};
use estuary_packager_core::hls::MasterPlaylist;
use estuary_packager_core::hls_ts_playlist::{TsMasterPlaylist, TsMediaPlaylist};
use estuary_proto::url::{ChannelName, TrackName};
use hyper::{Response, StatusCode};

use super::{is_playable, playlist};
use crate::remux::audio_for;
use crate::service::Service;

/// `ts/master.m3u8`.
pub fn master(service: &Service, channel: &ChannelName) -> Response<Body> {
    let text = service.state.read(|window| {
        is_playable(window, channel)
            .then(|| TsMasterPlaylist(MasterPlaylist::build(window.tracks(channel))).to_string())
    });
    playlist(text, || {
        format!("channel {channel} has no whole segment yet")
    })
}

/// `ts/{track}/media.m3u8`.
pub fn media_playlist(
    service: &Service,
    channel: &ChannelName,
    track: &TrackName,
) -> Response<Body> {
    let text = service.state.read(|window| {
        let this = window.track(channel, track)?;
        let audio = audio_for(window, channel, this);
        TsMediaPlaylist::build(this, audio.map(|(_, a)| a), &window.config())
            .map(|playlist| playlist.to_string())
    });
    playlist(text, || {
        format!("{channel}/{track} has no whole segment yet")
    })
}

/// `ts/{track}/{msn}.ts`.
pub fn segment(
    service: &Service,
    channel: &ChannelName,
    track: &TrackName,
    msn: u64,
) -> Response<Body> {
    match service.remuxed.segment(&service.state, channel, track, msn) {
        Ok(bytes) => respond(StatusCode::OK, "video/mp2t", Body::bytes(bytes)),
        Err(reason) => problem(StatusCode::NOT_FOUND, reason.to_string()),
    }
}
