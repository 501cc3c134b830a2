//! Which tracks a continuous stream of a channel carries: the video a viewer names with
//! `?track=` or the highest one, and the channel's first audio track; `stream.mp3` the MP3
//! track, `stream.webm` the tracks it can carry first.

use estuary_packager_core::cmaf::{Media, TrackHeader};
use estuary_packager_core::continuous::{Role, role_of, webm};
use estuary_packager_core::window::{TrackWindow, Window};
use estuary_proto::url::{ChannelName, StreamFormat, TrackName};

use super::StreamKey;

/// Why a channel has no such stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("no channel {channel}")]
    NoChannel { channel: ChannelName },
    #[error("channel {channel} has no {role:?} track {track}")]
    NoTrack {
        channel: ChannelName,
        role: Role,
        track: String,
    },
}

/// The tracks of the stream `format` of `channel`: the video named by `?track=` or the highest
/// one, and the channel's first audio track (for `stream.aac`, `?track=` names the audio).
/// `stream.webm` prefers the tracks it can carry (VP8 or VP9, Opus) and is given the others
/// only when there are none, for its muxer to refuse with the reason.
pub fn pick_tracks(
    window: &Window,
    channel: &ChannelName,
    format: StreamFormat,
    wanted: Option<&str>,
) -> Result<StreamKey, PickError> {
    if window.tracks(channel).next().is_none() {
        return Err(PickError::NoChannel {
            channel: channel.clone(),
        });
    }
    // stream.mp3 takes the MP3 track; every other stream the channel's AAC or Opus.
    let tracks: Vec<(&TrackName, &TrackWindow)> = window
        .tracks(channel)
        .filter(|(_, t)| t.header.is_mp3() == (format == StreamFormat::Mp3))
        .collect();
    let preferred = |header: &TrackHeader| format != StreamFormat::Webm || webm::fits(header);
    let of_role = |role: Role| {
        tracks
            .iter()
            .filter(move |(_, t)| role_of(&t.header) == role)
            .map(|(name, t)| (*name, *t))
    };
    let pick = |role: Role, wanted: Option<&str>| -> Result<Option<TrackName>, PickError> {
        let found = match wanted {
            Some(name) => Some(
                of_role(role)
                    .find(|(track, _)| track.as_str() == name)
                    .ok_or_else(|| PickError::NoTrack {
                        channel: channel.clone(),
                        role,
                        track: name.to_owned(),
                    })?,
            ),
            // The highest video; the first audio track.
            None => match role {
                Role::Video => of_role(role).max_by_key(|(_, t)| {
                    let height = match t.header.media {
                        Media::Video { height, .. } => height,
                        Media::Audio { .. } => 0,
                    };
                    (preferred(&t.header), height)
                }),
                Role::Audio => of_role(role)
                    .find(|(_, t)| preferred(&t.header))
                    .or_else(|| of_role(role).next()),
            },
        };
        Ok(found.map(|(track, _)| track.clone()))
    };
    let (video, audio) = if format.has_video() {
        (pick(Role::Video, wanted)?, pick(Role::Audio, None)?)
    } else {
        (None, pick(Role::Audio, wanted)?)
    };
    Ok(StreamKey {
        channel: channel.clone(),
        format,
        video,
        audio,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::testing::{Channel, TrackSpec};

    impl StreamKey {
        fn tracks(self) -> (Option<TrackName>, Option<TrackName>) {
            (self.video, self.audio)
        }
    }

    #[test]
    fn the_mp3_track_is_for_stream_mp3_alone() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..2);
        channel.feed("a128", &TrackSpec::audio(), 0..2);
        // Named to sort before the AAC track: the codec decides, not the name.
        channel.feed("a096-mp3", &TrackSpec::mp3(), 0..2);
        let name = |n: &str| Some(TrackName::new(n).unwrap());
        let window = &channel.window;
        for format in [StreamFormat::Ts, StreamFormat::Mp4] {
            let (_, audio) = pick_tracks(window, &channel.name, format, None)
                .unwrap()
                .tracks();
            assert_eq!(audio, name("a128"), "{format}");
        }
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Aac, None)
                .unwrap()
                .tracks(),
            (None, name("a128"))
        );
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Mp3, None)
                .unwrap()
                .tracks(),
            (None, name("a096-mp3"))
        );
        let master =
            estuary_packager_core::hls::MasterPlaylist::build(window.tracks(&channel.name))
                .to_string();
        assert!(
            master.contains("a128/media.m3u8") && !master.contains("mp3"),
            "{master}"
        );

        // A channel without an MP3 track has no stream.mp3.
        let mut plain = Channel::new(60);
        plain.feed("a128", &TrackSpec::audio(), 0..2);
        let (_, audio) = pick_tracks(&plain.window, &plain.name, StreamFormat::Mp3, None)
            .unwrap()
            .tracks();
        assert_eq!(audio, None);
    }

    #[test]
    fn the_highest_video_and_the_first_audio_unless_asked() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..2);
        channel.feed("a128", &TrackSpec::audio(), 0..2);
        channel.feed("a64", &TrackSpec::audio(), 0..2);
        // v360 (which sorts before v720 by name) is lower.
        let bytes = Bytes::from(crate::testing::header(&TrackSpec::video()));
        let mut low = estuary_packager_core::cmaf::parse_header(bytes).unwrap();
        low.media = Media::Video {
            codec: "avc1.64001e".into(),
            width: 640,
            height: 360,
        };
        let v360 = TrackName::new("v360").unwrap();
        let day = std::time::Duration::from_secs(crate::testing::DAY_START_SECONDS);
        channel
            .window
            .push_header(&channel.name, &v360, low, day)
            .unwrap();
        let name = |n: &str| Some(TrackName::new(n).unwrap());
        let window = &channel.window;
        let (video, audio) = pick_tracks(window, &channel.name, StreamFormat::Ts, None)
            .unwrap()
            .tracks();
        assert_eq!(video, name("v720"));
        assert_eq!(audio, name("a128"), "the first audio track by name");
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Mp4, Some("v360"))
                .unwrap()
                .tracks(),
            (name("v360"), name("a128"))
        );
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Aac, None)
                .unwrap()
                .tracks(),
            (None, name("a128"))
        );
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Aac, Some("a64"))
                .unwrap()
                .tracks(),
            (None, name("a64"))
        );
        let error = pick_tracks(window, &channel.name, StreamFormat::Ts, Some("a128")).unwrap_err();
        assert!(error.to_string().contains("no Video track a128"), "{error}");
        let other = ChannelName::new("other").unwrap();
        let error = pick_tracks(window, &other, StreamFormat::Ts, None).unwrap_err();
        assert_eq!(error.to_string(), "no channel other");
    }

    #[test]
    fn stream_webm_takes_vp_video_and_opus_audio() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..2);
        channel.feed("v360-vp9", &TrackSpec::vp9(), 0..2);
        channel.feed("a128", &TrackSpec::audio(), 0..2);
        channel.feed("a64-opus", &TrackSpec::opus(), 0..2);
        let name = |n: &str| Some(TrackName::new(n).unwrap());
        let window = &channel.window;
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Webm, None)
                .unwrap()
                .tracks(),
            (name("v360-vp9"), name("a64-opus")),
            "the tracks it can carry, though lower or later"
        );
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Mp4, None)
                .unwrap()
                .tracks(),
            (name("v720"), name("a128")),
            "the other streams pick as before"
        );

        let mut radio = Channel::new(60);
        radio.feed("a64", &TrackSpec::opus(), 0..2);
        assert_eq!(
            pick_tracks(&radio.window, &radio.name, StreamFormat::Webm, None)
                .unwrap()
                .tracks(),
            (None, name("a64"))
        );
    }
}
