//! Continuous HTTP streams (`/live/{channel}/stream.{ts,mp4,webm,aac,mp3}`), sans IO: the window's
//! chunks in, as they arrive, the bytes of one never-ending response out. A [`Feed`] muxes each
//! chunk once for every viewer of a stream and keeps what a viewer joining now needs: the
//! stream's header, then everything since the newest point a decoder can start from.

pub mod aac;
pub mod mp3;
pub mod mp4;
pub mod mpegts_stream;
pub mod webm;

use bytes::Bytes;
use estuary_proto::url::StreamFormat;

use crate::cmaf::{self, Chunk, CmafError, Media, Sample, TrackHeader};
use crate::window::TrackWindow;

/// Pieces kept for joining viewers before a stream gives up waiting for a join point (a
/// keyframe every few seconds keeps it to a few dozen).
const MAX_JOIN_PIECES: usize = 512;

/// Which of a stream's tracks a chunk belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Video,
    Audio,
}

impl Role {
    fn index(self) -> usize {
        match self {
            Role::Video => 0,
            Role::Audio => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContinuousError {
    #[error("{format} cannot carry {what}")]
    Unsupported { format: StreamFormat, what: String },
    #[error("{format} needs {what} and the channel has none")]
    NothingToCarry {
        format: StreamFormat,
        what: &'static str,
    },
    #[error("a chunk of the {role:?} track does not parse: {error}")]
    BadChunk { role: Role, error: CmafError },
    #[error("the {role:?} track's header does not parse as MP4: {error}")]
    BadHeader { role: Role, error: mp4::BoxError },
    #[error("a chunk of the {role:?} track does not parse as MP4: {error}")]
    BadFragment { role: Role, error: mp4::BoxError },
    #[error("an H.264 sample's NAL unit lengths run past its end")]
    BadNalUnits,
}

/// One muxer per container.
enum Muxer {
    Ts(mpegts_stream::TsStream),
    Mp4(mp4::Mp4Stream),
    Webm(webm::WebmStream),
    Aac(aac::AdtsStream),
    Mp3(mp3::Mp3Stream),
}

/// What pushing a chunk gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The stream's bytes for the chunk, in order (shared by every viewer).
    pub pieces: Vec<Bytes>,
    /// A decoder can start here: viewers still waiting for a start begin with these pieces.
    pub join_point: bool,
    /// When the chunk's first sample was captured: UTC, in microseconds since 1970 (the
    /// ingest's media time is UTC).
    pub capture_micros: u64,
}

/// What a viewer joining now is sent.
pub struct Joining {
    /// The stream's header (MP4's init, WebM's EBML header and Tracks), sent first; TS and
    /// ADTS need none.
    pub header: Option<Bytes>,
    /// Everything from the newest join point on, and when that join point was captured;
    /// `None` before the first join point (the viewer waits for one).
    pub since_join: Option<(u64, Vec<Bytes>)>,
}

/// A continuous stream of one channel in one format: the muxer, and what a joining viewer is
/// sent.
pub struct Feed {
    format: StreamFormat,
    muxer: Muxer,
    /// The track whose independent chunks are join points: the video when there is one.
    lead: Role,
    has_video: bool,
    /// Pieces from the newest join point on, and its capture time; `None` until the first.
    since_join: Option<(u64, Vec<Bytes>)>,
    /// The timescale of each role's track, to turn decode times into capture times.
    timescales: [u32; 2],
    /// The newest `(segment, part)` pushed per role, so that nothing is muxed twice.
    fed: [Option<(u64, usize)>; 2],
}

impl Feed {
    /// A stream of `video` and/or `audio`, as the format carries them.
    pub fn new(
        format: StreamFormat,
        video: Option<&TrackHeader>,
        audio: Option<&TrackHeader>,
    ) -> Result<Feed, ContinuousError> {
        let video = video.filter(|_| format.has_video());
        let timescales = [video, audio].map(|track| track.map_or(1, |t| t.timescale.max(1)));
        let muxer = match format {
            StreamFormat::Ts => Muxer::Ts(mpegts_stream::TsStream::new(video, audio)?),
            StreamFormat::Mp4 => Muxer::Mp4(mp4::Mp4Stream::new(video, audio)?),
            StreamFormat::Webm => Muxer::Webm(webm::WebmStream::new(video, audio)?),
            StreamFormat::Aac => Muxer::Aac(aac::AdtsStream::new(audio.ok_or(
                ContinuousError::NothingToCarry {
                    format,
                    what: "an audio track",
                },
            )?)?),
            StreamFormat::Mp3 => Muxer::Mp3(mp3::Mp3Stream::new(audio.ok_or(
                ContinuousError::NothingToCarry {
                    format,
                    what: "an MP3 track (the ingest's --audio aac,mp3)",
                },
            )?)?),
        };
        let has_video = match &muxer {
            Muxer::Ts(stream) => stream.has_video(),
            Muxer::Mp4(stream) => stream.has_video(),
            Muxer::Webm(stream) => stream.has_video(),
            Muxer::Aac(_) | Muxer::Mp3(_) => false,
        };
        Ok(Feed {
            format,
            muxer,
            lead: if has_video { Role::Video } else { Role::Audio },
            has_video,
            since_join: None,
            timescales,
            fed: [None, None],
        })
    }

    /// A stream fed from the window as it is now: from the newest join point of the lead
    /// track, with the other track's chunks interleaved by time from there on. Later chunks
    /// are pushed as they arrive.
    pub fn from_window(
        format: StreamFormat,
        video: Option<&TrackWindow>,
        audio: Option<&TrackWindow>,
    ) -> Result<Feed, ContinuousError> {
        let video = video.filter(|_| format.has_video());
        let mut feed = Feed::new(
            format,
            video.map(|track| &track.header),
            audio.map(|track| &track.header),
        )?;
        let (lead, other) = match feed.lead {
            Role::Video => (video, audio.filter(|_| feed.carries(Role::Audio))),
            Role::Audio => (audio, None),
        };
        let Some(lead) = lead else {
            return Ok(feed);
        };
        let lead_parts = parts_of(lead);
        let Some(join) = lead_parts
            .iter()
            .rposition(|(_, index, part)| feed.is_join_point(feed.lead, *index, part))
        else {
            return Ok(feed);
        };
        let nanos = |ticks: u64, track: &TrackWindow| {
            u128::from(ticks) * 1_000_000_000 / u128::from(track.header.timescale.max(1))
        };
        let join_at = nanos(lead_parts[join].2.start, lead);
        let mut queue: Vec<(u128, Role, u64, usize, &Chunk)> = lead_parts[join..]
            .iter()
            .map(|(segment, index, part)| {
                (nanos(part.start, lead), feed.lead, *segment, *index, *part)
            })
            .collect();
        if let Some(other) = other {
            // The other track from the chunk playing at the join point on.
            queue.extend(
                parts_of(other)
                    .into_iter()
                    .filter(|(_, _, part)| nanos(part.start + part.duration, other) > join_at)
                    .map(|(segment, index, part)| {
                        (
                            nanos(part.start, other).max(join_at),
                            Role::Audio,
                            segment,
                            index,
                            part,
                        )
                    }),
            );
        }
        // Stable: at equal times the lead (first in the queue) goes first.
        queue.sort_by_key(|(at, ..)| *at);
        for (_, role, segment, index, part) in queue {
            feed.push(role, segment, index, part)?;
        }
        Ok(feed)
    }

    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// Whether chunks of `role` go into this stream.
    pub fn carries(&self, role: Role) -> bool {
        match &self.muxer {
            Muxer::Ts(stream) => stream.carries(role),
            Muxer::Mp4(stream) => stream.carries(role),
            Muxer::Webm(stream) => stream.carries(role),
            Muxer::Aac(_) | Muxer::Mp3(_) => role == Role::Audio,
        }
    }

    /// The media type, with the codecs for MP4 and WebM as MSE wants them, e.g.
    /// `video/mp4; codecs="avc1.64001f,mp4a.40.2"`.
    pub fn mime(&self) -> String {
        match &self.muxer {
            Muxer::Mp4(stream) => stream.mime(),
            Muxer::Webm(stream) => stream.mime(),
            _ => self.format.content_type().to_owned(),
        }
    }

    /// A viewer starts at a sync chunk of the lead track; for an audio-only stream, where every
    /// chunk is one, at the first chunk of a segment.
    fn is_join_point(&self, role: Role, part_index: usize, chunk: &Chunk) -> bool {
        role == self.lead && chunk.independent && (self.has_video || part_index == 0)
    }

    /// Muxes part `part` of segment `segment` of the `role` track. A part pushed before (or an
    /// older one) gives `None`, as do a track the stream does not carry and a part that adds
    /// nothing to the stream (WebM's audio from before its first video).
    pub fn push(
        &mut self,
        role: Role,
        segment: u64,
        part: usize,
        chunk: &Chunk,
    ) -> Result<Option<Pushed>, ContinuousError> {
        if !self.carries(role) || self.fed[role.index()].is_some_and(|fed| fed >= (segment, part)) {
            return Ok(None);
        }
        self.fed[role.index()] = Some((segment, part));
        let join_point = self.is_join_point(role, part, chunk);
        let capture_micros = (u128::from(chunk.start) * 1_000_000
            / u128::from(self.timescales[role.index()])) as u64;
        let pieces = match &mut self.muxer {
            Muxer::Ts(stream) => vec![stream.push(role, chunk, join_point)?],
            Muxer::Mp4(stream) => stream.push(role, chunk)?,
            Muxer::Webm(stream) => stream.push(role, chunk)?,
            Muxer::Aac(stream) => vec![stream.push(chunk)?],
            Muxer::Mp3(stream) => vec![stream.push(chunk)?],
        };
        if pieces.is_empty() {
            return Ok(None);
        }
        if join_point {
            self.since_join = Some((capture_micros, pieces.clone()));
        } else if let Some((_, since_join)) = &mut self.since_join {
            since_join.extend(pieces.iter().cloned());
            if since_join.len() > MAX_JOIN_PIECES {
                // No join point for too long: joining viewers wait for the next one.
                self.since_join = None;
            }
        }
        Ok(Some(Pushed {
            pieces,
            join_point,
            capture_micros,
        }))
    }

    /// What a viewer joining now is sent: the header, then everything from the newest join
    /// point (none when there is no join point yet: the viewer waits for the next one).
    pub fn joining(&self) -> Joining {
        Joining {
            header: match &self.muxer {
                Muxer::Mp4(stream) => Some(stream.init()),
                Muxer::Webm(stream) => Some(stream.header()),
                _ => None,
            },
            since_join: self.since_join.clone(),
        }
    }

    /// [`Feed::joining`] as one list of pieces, and whether it reaches a join point.
    pub fn join(&self) -> (Vec<Bytes>, bool) {
        let Joining { header, since_join } = self.joining();
        let started = since_join.is_some();
        let mut pieces: Vec<Bytes> = header.into_iter().collect();
        pieces.extend(since_join.into_iter().flat_map(|(_, pieces)| pieces));
        (pieces, started)
    }
}

/// The samples of a chunk of the `role` track, as every muxer reads them.
fn samples(
    chunk: &Chunk,
    header: &TrackHeader,
    role: Role,
) -> Result<Vec<Sample>, ContinuousError> {
    cmaf::samples(&chunk.bytes, header).map_err(|error| ContinuousError::BadChunk { role, error })
}

/// A track's kind, from its header.
pub fn role_of(header: &TrackHeader) -> Role {
    match header.media {
        Media::Video { .. } => Role::Video,
        Media::Audio { .. } => Role::Audio,
    }
}

/// A track's parts in order, with their segment numbers and indexes.
fn parts_of(track: &TrackWindow) -> Vec<(u64, usize, &Chunk)> {
    track
        .segments()
        .flat_map(|segment| {
            segment
                .parts
                .iter()
                .enumerate()
                .map(move |(index, part)| (segment.number, index, part))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpegts::{PACKET, PAT_PID};
    use crate::testing::{Channel, TrackSpec};
    use estuary_proto::url::TrackName;

    fn track<'a>(channel: &'a Channel, name: &str) -> &'a TrackWindow {
        channel
            .window
            .track(&channel.name, &TrackName::new(name).unwrap())
            .unwrap()
    }

    /// A channel two and a half segments in: video and audio, 6 parts a segment.
    fn channel() -> Channel {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..15);
        channel.feed("a128", &TrackSpec::audio(), 0..15);
        channel
    }

    #[test]
    fn a_joining_viewer_starts_at_the_newest_keyframe() {
        let channel = channel();
        let (video, audio) = (track(&channel, "v720"), track(&channel, "a128"));
        let feed = Feed::from_window(StreamFormat::Ts, Some(video), Some(audio)).unwrap();
        let (pieces, started) = feed.join();
        assert!(started);
        // The third segment has three parts so far: the keyframe's part and two more, each
        // with the audio chunk of its time (audio chunks of 16 frames are about a part long).
        assert!(pieces[0].len() > 2 * PACKET);
        let pid = |packet: &[u8]| u16::from(packet[1] & 0x1f) << 8 | u16::from(packet[2]);
        assert_eq!(pid(&pieces[0]), PAT_PID);
        let video_pieces = pieces
            .iter()
            .filter(|piece| {
                piece
                    .chunks(PACKET)
                    .any(|p| pid(p) == crate::mpegts::VIDEO_PID)
            })
            .count();
        assert_eq!(video_pieces, 3);
        assert!(pieces.len() >= 5, "{} pieces", pieces.len());

        let feed = Feed::from_window(StreamFormat::Mp4, Some(video), Some(audio)).unwrap();
        let (pieces, _) = feed.join();
        assert_eq!(&pieces[0][4..8], b"ftyp");
        assert_eq!(&pieces[1][4..8], b"moof");
        // The first fragment is the keyframe's: track 1, and its first sample is a sync one.
        let segment = video.segments().next_back().unwrap();
        let first = &segment.parts[0];
        assert!(first.independent);
        assert!(first.bytes.ends_with(&pieces[2]));
    }

    #[test]
    fn later_chunks_are_pushed_once_and_move_the_join_point() {
        let mut channel = channel();
        let mut feed = {
            let (video, audio) = (track(&channel, "v720"), track(&channel, "a128"));
            Feed::from_window(StreamFormat::Mp4, Some(video), Some(audio)).unwrap()
        };
        let (before, _) = feed.join();
        // The same part again is not muxed twice.
        let newest = track(&channel, "v720")
            .segments()
            .next_back()
            .unwrap()
            .clone();
        let last = newest.parts.len() - 1;
        assert_eq!(
            feed.push(Role::Video, newest.number, last, &newest.parts[last])
                .unwrap(),
            None
        );
        // The next segment's first part is a join point: a viewer now starts there.
        channel.feed("v720", &TrackSpec::video(), 15..19);
        let video = track(&channel, "v720");
        let mut join_points = Vec::new();
        for segment in video.segments().filter(|s| s.number >= newest.number) {
            for (index, part) in segment.parts.iter().enumerate() {
                if let Some(pushed) = feed.push(Role::Video, segment.number, index, part).unwrap() {
                    join_points.push(pushed.join_point);
                }
            }
        }
        assert_eq!(join_points, [false, false, false, true]);
        let (after, started) = feed.join();
        assert!(started);
        assert_eq!(after[0], before[0], "the same init");
        assert_eq!(
            after.len(),
            3,
            "init, then the keyframe part's moof and mdat"
        );
        let sequence = u32::from_be_bytes(after[1][20..24].try_into().unwrap());
        assert!(sequence > 3, "sequence numbers run on: {sequence}");
    }

    #[test]
    fn audio_alone_joins_at_segment_starts() {
        let mut channel = Channel::new(60);
        channel.feed("a128", &TrackSpec::audio(), 0..9);
        let audio = track(&channel, "a128");
        let feed = Feed::from_window(StreamFormat::Aac, None, Some(audio)).unwrap();
        let (pieces, started) = feed.join();
        assert!(started);
        // Segment two has three chunks so far; a viewer gets all three.
        assert_eq!(pieces.len(), 3);
        let no_audio = Feed::from_window(StreamFormat::Aac, Some(track(&channel, "a128")), None);
        assert!(matches!(
            no_audio,
            Err(ContinuousError::NothingToCarry { .. })
        ));
    }

    #[test]
    fn a_stream_without_a_keyframe_yet_makes_viewers_wait() {
        let mut channel = Channel::new(60);
        // Parts 1 to 4 of the first segment: its keyframe part never came.
        channel.feed("v720", &TrackSpec::video(), 1..5);
        let feed =
            Feed::from_window(StreamFormat::Mp4, Some(track(&channel, "v720")), None).unwrap();
        let (pieces, started) = feed.join();
        assert!(!started);
        assert_eq!(pieces.len(), 1, "the init alone");
    }
}
