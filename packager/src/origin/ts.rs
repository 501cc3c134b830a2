//! `/live/{channel}/ts/…`: HLS with MPEG-TS segments. Each video track's segments carry the
//! channel's audio too; a segment is remuxed from the window's CMAF samples when asked for.

use estuary_proto::url::{ChannelName, TrackName};
use hyper::{Response, StatusCode};

use super::{Body, IMMUTABLE, is_playable, playlist, problem, respond};
use crate::cmaf::{self, Media};
use crate::hls::MasterPlaylist;
use crate::hls_ts::{TsMasterPlaylist, TsMediaPlaylist};
use crate::server::Shared;
use crate::ts::{self, Elementary};
use crate::window::{TrackWindow, Window};

pub async fn serve(shared: &Shared, channel: &ChannelName, rest: &[&str]) -> Response<Body> {
    match rest {
        ["master.m3u8"] => {
            let text = shared.read(|window| {
                is_playable(window, channel).then(|| {
                    TsMasterPlaylist(MasterPlaylist::build(window.tracks(channel))).to_string()
                })
            });
            playlist(text, || {
                format!("channel {channel} has no whole segment yet")
            })
        }
        [track, "media.m3u8"] => {
            let Ok(track) = TrackName::new(track) else {
                return problem(StatusCode::NOT_FOUND, format!("no track {track}"));
            };
            let text = shared.read(|window| {
                let this = window.track(channel, &track)?;
                let audio = audio_for(window, channel, this);
                TsMediaPlaylist::build(this, audio.map(|(_, a)| a), &window.config())
                    .map(|playlist| playlist.to_string())
            });
            playlist(text, || {
                format!("{channel}/{track} has no whole segment yet")
            })
        }
        [track, name] => {
            let msn = name.strip_suffix(".ts").and_then(|msn| msn.parse().ok());
            match (TrackName::new(track), msn) {
                (Ok(track), Some(msn)) => segment(shared, channel, &track, msn),
                _ => problem(
                    StatusCode::NOT_FOUND,
                    format!("nothing called {track}/{name}"),
                ),
            }
        }
        _ => problem(StatusCode::NOT_FOUND, "not part of the TS layout"),
    }
}

/// The audio track muxed into `track`'s segments: the channel's first audio track, unless
/// `track` is audio itself.
fn audio_for<'a>(
    window: &'a Window,
    channel: &'a ChannelName,
    track: &TrackWindow,
) -> Option<(&'a TrackName, &'a TrackWindow)> {
    if matches!(track.header.media, Media::Audio { .. }) {
        return None;
    }
    window
        .tracks(channel)
        .find(|(_, other)| matches!(other.header.media, Media::Audio { .. }))
}

fn segment(shared: &Shared, channel: &ChannelName, track: &TrackName, msn: u64) -> Response<Body> {
    let muxed = shared.read(|window| {
        let this = window
            .track(channel, track)
            .ok_or_else(|| format!("channel {channel} has no track {track}"))?;
        let whole = |window: &TrackWindow| {
            window
                .segment(msn)
                .filter(|segment| segment.complete)
                .map(|segment| {
                    segment
                        .parts
                        .iter()
                        .map(|part| cmaf::samples(&part.bytes, &window.header))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|parts| parts.concat())
                })
        };
        let samples = whole(this)
            .ok_or_else(|| {
                format!("segment {msn} of {channel}/{track} is not whole in the window")
            })?
            .map_err(|error| error.to_string())?;
        let main = Elementary {
            config: &this.header.config,
            timescale: this.header.timescale,
            samples,
        };
        let audio = match audio_for(window, channel, this) {
            Some((_, audio)) => match whole(audio) {
                Some(samples) => Some(Elementary {
                    config: &audio.header.config,
                    timescale: audio.header.timescale,
                    samples: samples.map_err(|error| error.to_string())?,
                }),
                None => None,
            },
            None => None,
        };
        let (video, audio) = match this.header.media {
            Media::Video { .. } => (Some(main), audio),
            Media::Audio { .. } => (None, Some(main)),
        };
        ts::segment(msn, video, audio).map_err(|error| error.to_string())
    });
    match muxed {
        Ok(bytes) => respond(StatusCode::OK, "video/mp2t", IMMUTABLE, Body::bytes(bytes)),
        Err(reason) => problem(StatusCode::NOT_FOUND, reason),
    }
}
