//! `/live/{channel}/ts/…`: HLS with MPEG-TS segments. Each video track's segments carry the
//! channel's audio too; a segment is remuxed from the window's CMAF samples when first asked
//! for, outside the window's lock (the lock is held only to take the parts' shared bytes; the
//! samples are read after), and the last few are kept for the viewers after.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use estuary_http::{Body, problem, respond};
use estuary_proto::url::{ChannelName, TrackName};
use hyper::{Response, StatusCode};

use super::{is_playable, playlist};
use crate::cmaf::{self, CodecConfig, Media, Sample, TrackHeader};
use crate::hls::MasterPlaylist;
use crate::hls_ts::{TsMasterPlaylist, TsMediaPlaylist};
use crate::server::Shared;
use crate::ts::{self, Elementary};
use crate::window::{TrackWindow, Window};

/// `ts/master.m3u8`.
pub fn master(shared: &Shared, channel: &ChannelName) -> Response<Body> {
    let text = shared.read(|window| {
        is_playable(window, channel)
            .then(|| TsMasterPlaylist(MasterPlaylist::build(window.tracks(channel))).to_string())
    });
    playlist(text, || {
        format!("channel {channel} has no whole segment yet")
    })
}

/// `ts/{track}/media.m3u8`.
pub fn media_playlist(shared: &Shared, channel: &ChannelName, track: &TrackName) -> Response<Body> {
    let text = shared.read(|window| {
        let this = window.track(channel, track)?;
        let audio = audio_for(window, channel, this);
        TsMediaPlaylist::build(this, audio.map(|(_, a)| a), &window.config())
            .map(|playlist| playlist.to_string())
    });
    playlist(text, || {
        format!("{channel}/{track} has no whole segment yet")
    })
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
    window.tracks(channel).find(|(_, other)| {
        matches!(other.header.media, Media::Audio { .. }) && !other.header.is_mp3()
    })
}

/// TS segments already written, so that viewers after the first get the same bytes without a
/// remux. Only segments that can no longer change are kept (the audio muxed in was whole, or
/// the channel has none to wait for).
#[derive(Default)]
pub struct Remuxed {
    recent: Mutex<VecDeque<(SegmentKey, Bytes)>>,
}

/// A segment of a track of a channel.
type SegmentKey = (ChannelName, TrackName, u64);

/// How many TS segments are kept: a few per variant of a few channels.
const REMUXED_KEPT: usize = 24;

impl Remuxed {
    fn get(&self, key: &SegmentKey) -> Option<Bytes> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .find(|(kept, _)| kept == key)
            .map(|(_, bytes)| bytes.clone())
    }

    fn put(&self, key: SegmentKey, bytes: Bytes) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= REMUXED_KEPT {
            recent.pop_front();
        }
        recent.push_back((key, bytes));
    }
}

/// A whole segment of one track, as the window holds it: its header and its parts' shared
/// bytes, taken under the window's lock; [`Whole::samples`] reads them after.
struct Whole {
    header: TrackHeader,
    parts: Vec<Bytes>,
}

impl Whole {
    fn of(window: &TrackWindow, msn: u64) -> Option<Whole> {
        let segment = window.segment(msn).filter(|segment| segment.complete)?;
        Some(Whole {
            header: window.header.clone(),
            parts: segment
                .parts
                .iter()
                .map(|part| part.bytes.clone())
                .collect(),
        })
    }

    /// The codec, the timescale and every sample, in order. Each part was checked when it
    /// came in, so its samples are bounded by its bytes.
    fn samples(&self) -> Result<(CodecConfig, u32, Vec<Sample>), String> {
        let mut samples = Vec::new();
        for part in &self.parts {
            samples.extend(cmaf::samples(part, &self.header).map_err(|error| error.to_string())?);
        }
        Ok((self.header.config.clone(), self.header.timescale, samples))
    }
}

/// What a TS segment is made of, taken from the window (shared bytes) so that the remux
/// happens outside its lock.
struct Makings {
    main: Whole,
    audio: Option<Whole>,
    is_video: bool,
    /// Nothing that goes into the segment can change any more.
    is_final: bool,
}

fn makings(
    window: &Window,
    channel: &ChannelName,
    track: &TrackName,
    msn: u64,
) -> Result<Makings, String> {
    let this = window
        .track(channel, track)
        .ok_or_else(|| format!("channel {channel} has no track {track}"))?;
    let main = Whole::of(this, msn)
        .ok_or_else(|| format!("segment {msn} of {channel}/{track} is not whole in the window"))?;
    let (audio, is_final) = match audio_for(window, channel, this) {
        Some((_, audio)) => {
            let whole = Whole::of(audio, msn);
            let gone = audio.newest().is_some_and(|(newest, _)| newest > msn);
            let is_final = whole.is_some() || gone;
            (whole, is_final)
        }
        None => (None, true),
    };
    Ok(Makings {
        main,
        audio,
        is_video: matches!(this.header.media, Media::Video { .. }),
        is_final,
    })
}

fn elementary((config, timescale, samples): &(CodecConfig, u32, Vec<Sample>)) -> Elementary<'_> {
    Elementary {
        config,
        timescale: *timescale,
        samples: samples.clone(),
    }
}

/// `ts/{track}/{msn}.ts`.
pub fn segment(
    shared: &Shared,
    channel: &ChannelName,
    track: &TrackName,
    msn: u64,
) -> Response<Body> {
    let key = (channel.clone(), track.clone(), msn);
    let muxed = match shared.remuxed.get(&key) {
        Some(bytes) => Ok(bytes),
        None => shared
            .read(|window| makings(window, channel, track, msn))
            .and_then(|makings| {
                let Makings {
                    main,
                    audio,
                    is_video,
                    is_final,
                } = makings;
                let main = main.samples()?;
                let audio = audio.map(|audio| audio.samples()).transpose()?;
                let main = Some(elementary(&main));
                let audio = audio.as_ref().map(elementary);
                let (video, audio) = if is_video {
                    (main, audio)
                } else {
                    (None, main)
                };
                let bytes = ts::segment(msn, video, audio).map_err(|error| error.to_string())?;
                if is_final {
                    shared.remuxed.put(key, bytes.clone());
                }
                Ok(bytes)
            }),
    };
    match muxed {
        Ok(bytes) => respond(StatusCode::OK, "video/mp2t", Body::bytes(bytes)),
        Err(reason) => problem(StatusCode::NOT_FOUND, reason),
    }
}
