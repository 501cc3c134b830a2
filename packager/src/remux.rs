//! HLS-TS segments, remuxed from the window's CMAF samples when first asked for: each video
//! track's segment carries the channel's audio too. The window's lock is held only to take
//! the parts' shared bytes; the samples are read and muxed after. The last few segments that
//! can no longer change are kept, so that viewers after the first get the same bytes without
//! a remux.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use estuary_packager_core::cmaf::{self, CmafError, CodecConfig, Media, Sample, TrackHeader};
use estuary_packager_core::mpegts::{self, Elementary, TsError};
use estuary_packager_core::window::{TrackWindow, Window};
use estuary_proto::url::{ChannelName, TrackName};

use crate::state::State;

/// How many TS segments are kept: a few per variant of a few channels.
const REMUXED_KEPT: usize = 24;

/// Why a TS segment cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum RemuxError {
    #[error("channel {channel} has no track {track}")]
    NoTrack {
        channel: ChannelName,
        track: TrackName,
    },
    #[error("segment {msn} of {channel}/{track} is not whole in the window")]
    NotWhole {
        channel: ChannelName,
        track: TrackName,
        msn: u64,
    },
    #[error("{0}")]
    Samples(#[from] CmafError),
    #[error("{0}")]
    Mux(#[from] TsError),
}

/// The audio track muxed into `track`'s segments: the channel's first audio track (not the
/// MP3 one), unless `track` is audio itself.
pub fn audio_for<'a>(
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

/// A segment of a track of a channel.
type SegmentKey = (ChannelName, TrackName, u64);

/// TS segments already written. Only segments that can no longer change are kept (the audio
/// muxed in was whole, or the channel has none to wait for).
#[derive(Default)]
pub struct Remuxed {
    recent: Mutex<VecDeque<(SegmentKey, Bytes)>>,
}

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

    /// Segment `msn` of `track` as MPEG-TS: kept bytes, or a remux of what `state` holds.
    pub fn segment(
        &self,
        state: &State,
        channel: &ChannelName,
        track: &TrackName,
        msn: u64,
    ) -> Result<Bytes, RemuxError> {
        let key = (channel.clone(), track.clone(), msn);
        if let Some(bytes) = self.get(&key) {
            return Ok(bytes);
        }
        let Makings {
            main,
            audio,
            is_video,
            is_final,
        } = state.read(|window| makings(window, channel, track, msn))?;
        let main = main.samples()?;
        let audio = audio.map(|audio| audio.samples()).transpose()?;
        let main = Some(elementary(&main));
        let audio = audio.as_ref().map(elementary);
        let (video, audio) = if is_video {
            (main, audio)
        } else {
            (None, main)
        };
        let bytes = mpegts::segment(msn, video, audio)?;
        if is_final {
            self.put(key, bytes.clone());
        }
        Ok(bytes)
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
    fn samples(&self) -> Result<(CodecConfig, u32, Vec<Sample>), CmafError> {
        let mut samples = Vec::new();
        for part in &self.parts {
            samples.extend(cmaf::samples(part, &self.header)?);
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
) -> Result<Makings, RemuxError> {
    let this = window
        .track(channel, track)
        .ok_or_else(|| RemuxError::NoTrack {
            channel: channel.clone(),
            track: track.clone(),
        })?;
    let main = Whole::of(this, msn).ok_or_else(|| RemuxError::NotWhole {
        channel: channel.clone(),
        track: track.clone(),
        msn,
    })?;
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
