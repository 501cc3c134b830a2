//! `/live/{channel}/stream.{ts,mp4,webm,aac,mp3}`: never-ending chunked responses. One [`Feed`] per
//! stream (channel, format and tracks) is fed by the window's events as parts land, on the
//! ingest's task, and its pieces go to every viewer's queue. A viewer whose queue is full is
//! too slow to keep up: it is dropped (its response ends with an error) rather than buffered
//! without bound. An edge asks for the stream framed (`estuary_proto::chunks`): the same bytes,
//! each chunk behind a head that says whether a viewer may start there and when it was
//! captured, and the channel's title in frames of its own. A radio player that asks for ICY
//! metadata (`Icy-MetaData: 1`) of stream.mp3 or stream.aac gets the title in the audio, every
//! [`icy::INTERVAL`] bytes.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use estuary_proto::chunks::{self, Kind};
use estuary_proto::icy;
use estuary_proto::url::{ChannelName, StreamFormat, TrackName};
use estuary_http::{Body, problem, respond};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use crate::cmaf::{Media, TrackHeader};
use crate::continuous::{Feed, Joining, Pushed, Role, role_of, webm};
use crate::server::Shared;
use crate::window::{TrackWindow, Window};

/// Chunks a viewer's queue holds beyond what it is sent on joining. A chunk is one part of one
/// track (a queue entry in TS and AAC, two in MP4: the `moof` and the `mdat`): with the
/// ingest's three parts a second per track, 64 are about ten seconds of media. The bytes are
/// shared with every other viewer, so a full queue costs little memory; it is time that is
/// bounded.
pub const VIEWER_QUEUE: usize = 64;

/// A stream: one channel, one format, its tracks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct StreamKey {
    channel: ChannelName,
    format: StreamFormat,
    video: Option<TrackName>,
    audio: Option<TrackName>,
}

impl StreamKey {
    fn role_of(&self, track: &TrackName) -> Option<Role> {
        if self.video.as_ref() == Some(track) {
            Some(Role::Video)
        } else if self.audio.as_ref() == Some(track) {
            Some(Role::Audio)
        } else {
            None
        }
    }
}

struct Viewer {
    queue: mpsc::Sender<io::Result<Bytes>>,
    /// It has had a join point; until then it waits for one.
    started: bool,
    /// An edge: each chunk goes behind a frame head.
    framed: bool,
    /// A radio player that asked for ICY metadata: where its next block goes.
    icy: Option<icy::Inserter>,
}

impl Viewer {
    /// Queues `pieces` (with the ICY blocks due in them, titled `title`), keeping one slot for
    /// the error that ends a viewer too slow to keep up. Says whether the viewer is still there.
    fn send(&mut self, pieces: &[Bytes], format: StreamFormat, title: &Arc<str>) -> bool {
        if self.queue.is_closed() {
            return false;
        }
        let with_blocks: Vec<Bytes>;
        let pieces = match &mut self.icy {
            Some(inserter) => {
                with_blocks = pieces
                    .iter()
                    .flat_map(|piece| inserter.insert(piece, title))
                    .collect();
                &with_blocks[..]
            }
            None => pieces,
        };
        if self.queue.capacity() <= pieces.len() {
            tracing::info!(%format, "viewer too slow for the live stream: dropped");
            let reason = format!("{format}: the viewer fell {VIEWER_QUEUE} chunks behind");
            let _ = self.queue.try_send(Err(io::Error::other(reason)));
            return false;
        }
        pieces
            .iter()
            .all(|piece| self.queue.try_send(Ok(piece.clone())).is_ok())
    }
}

struct Live {
    feed: Feed,
    viewers: Vec<Viewer>,
    /// The channel's title, for ICY metadata and the edges' title frames.
    title: Arc<str>,
}

/// Every continuous stream being watched, and the channels' titles.
#[derive(Default)]
pub struct Streams {
    live: Mutex<BTreeMap<StreamKey, Arc<Mutex<Live>>>>,
    /// "Now playing" per channel, as a radio's playout sets it (see [`Streams::set_title`]).
    titles: Mutex<BTreeMap<ChannelName, Arc<str>>>,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<StreamKey, Arc<Mutex<Live>>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Part `part` of segment `segment` of `track` landed in the window: every stream of the
    /// channel that carries the track muxes it and sends it to its viewers. Called after the
    /// window's lock is released.
    pub fn part_added(
        &self,
        shared: &Shared,
        channel: &ChannelName,
        track: &TrackName,
        segment: u64,
        part: usize,
    ) {
        let streams: Vec<(StreamKey, Arc<Mutex<Live>>)> = self
            .lock()
            .iter()
            .filter(|(key, _)| &key.channel == channel && key.role_of(track).is_some())
            .map(|(key, live)| (key.clone(), live.clone()))
            .collect();
        if streams.is_empty() {
            return;
        }
        let Some(chunk) =
            shared.read(|window| window.track(channel, track)?.part(segment, part).cloned())
        else {
            return;
        };
        for (key, live) in streams {
            let Some(role) = key.role_of(track) else {
                continue;
            };
            let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
            let format = key.format;
            let pushed = match live.feed.push(role, segment, part, &chunk) {
                Ok(Some(pushed)) => pushed,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%channel, %track, %format, %error, "continuous stream stopped");
                    close(&mut live.viewers, &error.to_string());
                    drop(live);
                    self.lock().remove(&key);
                    continue;
                }
            };
            let framed = frame(&pushed);
            let Live { viewers, title, .. } = &mut *live;
            viewers.retain_mut(|viewer| {
                if !viewer.started && !pushed.join_point {
                    return !viewer.queue.is_closed();
                }
                viewer.started = true;
                let pieces = if viewer.framed {
                    &framed
                } else {
                    &pushed.pieces
                };
                viewer.send(pieces, format, title)
            });
            if live.viewers.is_empty() {
                drop(live);
                let mut streams = self.lock();
                // A viewer may have joined since: only a stream still without any goes.
                let idle = streams.get(&key).is_some_and(|live| {
                    live.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .viewers
                        .is_empty()
                });
                if idle {
                    streams.remove(&key);
                }
            }
        }
    }

    /// A track of `channel` started or changed its header: streams that use it, or that lack
    /// the audio a new track brings, end, and their viewers reconnect to a new one.
    pub fn track_changed(&self, shared: &Shared, channel: &ChannelName, track: &TrackName) {
        // The window first, then the streams: never the window while holding the streams.
        let is_audio = shared.read(|window| {
            window
                .track(channel, track)
                .is_some_and(|t| role_of(&t.header) == Role::Audio)
        });
        let mut streams = self.lock();
        let ended: Vec<StreamKey> = streams
            .keys()
            .filter(|key| &key.channel == channel)
            .filter(|key| key.role_of(track).is_some() || (is_audio && key.audio.is_none()))
            .cloned()
            .collect();
        for key in ended {
            if let Some(live) = streams.remove(&key) {
                let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
                tracing::info!(%channel, %track, format = %key.format, "continuous stream restarts");
                close(
                    &mut live.viewers,
                    &format!("track {track} of channel {channel} changed"),
                );
            }
        }
    }

    /// `track` of `channel` was retired: the streams that carry it end (their viewers
    /// reconnect to what the channel still has, or are told it is gone), and with the
    /// channel's last track its title goes too.
    pub fn track_retired(&self, channel: &ChannelName, track: &TrackName, channel_gone: bool) {
        let mut streams = self.lock();
        let ended: Vec<StreamKey> = streams
            .keys()
            .filter(|key| &key.channel == channel)
            .filter(|key| channel_gone || key.role_of(track).is_some())
            .cloned()
            .collect();
        for key in ended {
            if let Some(live) = streams.remove(&key) {
                let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
                tracing::info!(%channel, %track, format = %key.format, "continuous stream ends");
                close(
                    &mut live.viewers,
                    &format!("track {track} of channel {channel} stopped"),
                );
            }
        }
        drop(streams);
        if channel_gone {
            self.titles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(channel);
        }
    }

    /// The title of `channel` is now `title` (a radio's "now playing"): ICY listeners get it at
    /// their next block, edges in a title frame now.
    pub fn set_title(&self, channel: &ChannelName, title: &str) {
        let title: Arc<str> = title.into();
        self.titles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), title.clone());
        let streams: Vec<Arc<Mutex<Live>>> = self
            .lock()
            .iter()
            .filter(|(key, _)| &key.channel == channel)
            .map(|(_, live)| live.clone())
            .collect();
        let frame = title_frame(&title);
        for live in streams {
            let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
            live.title = title.clone();
            let Live {
                feed,
                viewers,
                title,
            } = &mut *live;
            let format = feed.format();
            viewers.retain_mut(|viewer| !viewer.framed || viewer.send(&frame, format, title));
        }
    }

    /// The title of `channel` (empty until one is set).
    fn title(&self, channel: &ChannelName) -> Arc<str> {
        self.titles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .cloned()
            .unwrap_or_else(|| "".into())
    }

    /// Viewers now, per format.
    pub fn viewers(&self) -> BTreeMap<StreamFormat, usize> {
        let mut viewers = BTreeMap::new();
        for (key, live) in self.lock().iter() {
            let live = live.lock().unwrap_or_else(|e| e.into_inner());
            *viewers.entry(key.format).or_default() += live.viewers.len();
        }
        viewers
    }
}

/// A chunk's pieces behind the head of its frame.
fn frame(pushed: &Pushed) -> Vec<Bytes> {
    let kind = Kind::Chunk {
        join: pushed.join_point,
    };
    let length = pushed.pieces.iter().map(Bytes::len).sum();
    let head = chunks::head(kind, pushed.capture_micros, length);
    let mut framed = Vec::with_capacity(pushed.pieces.len() + 1);
    framed.push(Bytes::copy_from_slice(&head));
    framed.extend(pushed.pieces.iter().cloned());
    framed
}

/// A title in its frame.
fn title_frame(title: &str) -> Vec<Bytes> {
    let head = chunks::head(Kind::Title, 0, title.len());
    vec![
        Bytes::copy_from_slice(&head),
        Bytes::copy_from_slice(title.as_bytes()),
    ]
}

/// What a joining viewer is sent first, as frames: the header (empty for TS and ADTS), the
/// title when there is one, then everything from the newest join point as one chunk.
fn framed_joining(joining: Joining, title: &str) -> (Vec<Bytes>, bool) {
    let header = joining.header.unwrap_or_default();
    let mut pieces = vec![
        Bytes::copy_from_slice(&chunks::head(Kind::Header, 0, header.len())),
        header,
    ];
    if !title.is_empty() {
        pieces.extend(title_frame(title));
    }
    let started = joining.since_join.is_some();
    if let Some((capture_micros, since_join)) = joining.since_join {
        pieces.extend(frame(&Pushed {
            pieces: since_join,
            join_point: true,
            capture_micros,
        }));
    }
    (pieces, started)
}

/// Ends every viewer's response with an error (so that none takes it for a finished file).
fn close(viewers: &mut Vec<Viewer>, reason: &str) {
    for viewer in viewers.drain(..) {
        let _ = viewer
            .queue
            .try_send(Err(io::Error::other(reason.to_owned())));
    }
}

/// The tracks of the stream `format` of `channel`: the video named by `?track=` or the highest
/// one, and the channel's first audio track (for `stream.aac`, `?track=` names the audio).
/// `stream.webm` prefers the tracks it can carry (VP8 or VP9, Opus) and is given the others
/// only when there are none, for its muxer to refuse with the reason.
fn pick_tracks(
    window: &Window,
    channel: &ChannelName,
    format: StreamFormat,
    wanted: Option<&str>,
) -> Result<(Option<TrackName>, Option<TrackName>), String> {
    if window.tracks(channel).next().is_none() {
        return Err(format!("no channel {channel}"));
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
    let pick = |role: Role, wanted: Option<&str>| -> Result<Option<TrackName>, String> {
        let found = match wanted {
            Some(name) => Some(
                of_role(role)
                    .find(|(track, _)| track.as_str() == name)
                    .ok_or_else(|| format!("channel {channel} has no {role:?} track {name}"))?,
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
    if format.has_video() {
        let video = pick(Role::Video, wanted)?;
        let audio = pick(Role::Audio, None)?;
        Ok((video, audio))
    } else {
        Ok((None, pick(Role::Audio, wanted)?))
    }
}

/// Answers a viewer of the stream `format` of `channel` (with the track `wanted` by its
/// `?track=`); `framed` for an edge, which asked for
/// [`chunks::CONTENT_TYPE`]; `icy` for a player that asked for ICY metadata, which radio
/// streams (stream.mp3 and stream.aac) carry.
pub fn serve(
    shared: &Shared,
    channel: &ChannelName,
    format: StreamFormat,
    wanted: Option<&TrackName>,
    head: bool,
    framed: bool,
    icy: bool,
) -> Response<Body> {
    let icy = icy && !framed && format.is_radio();
    let wanted = wanted.map(TrackName::as_str);
    let picked = shared.read(|window| pick_tracks(window, channel, format, wanted));
    let (video, audio) = match picked {
        Ok(tracks) => tracks,
        Err(reason) => return problem(StatusCode::NOT_FOUND, reason),
    };
    let key = StreamKey {
        channel: channel.clone(),
        format,
        video,
        audio,
    };
    let (pieces, started, queue, mime) = {
        let mut streams = shared.continuous.lock();
        let live = match streams.get(&key) {
            Some(live) => live.clone(),
            None => {
                let feed = shared.read(|window| {
                    let track = |name: &Option<TrackName>| {
                        name.as_ref().and_then(|name| window.track(channel, name))
                    };
                    Feed::from_window(format, track(&key.video), track(&key.audio))
                });
                let feed = match feed {
                    Ok(feed) => feed,
                    Err(error) => return problem(StatusCode::NOT_FOUND, error.to_string()),
                };
                if head {
                    return headers(&feed.mime(), framed, Body::empty());
                }
                let live = Arc::new(Mutex::new(Live {
                    feed,
                    viewers: Vec::new(),
                    title: shared.continuous.title(channel),
                }));
                streams.insert(key.clone(), live.clone());
                live
            }
        };
        let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
        if head {
            return headers(&live.feed.mime(), framed, Body::empty());
        }
        let (mut pieces, started) = if framed {
            framed_joining(live.feed.joining(), &live.title)
        } else {
            live.feed.join()
        };
        let mut inserter = icy.then(icy::Inserter::default);
        if let Some(inserter) = &mut inserter {
            pieces = pieces
                .iter()
                .flat_map(|piece| inserter.insert(piece, &live.title))
                .collect();
        }
        // An ICY listener's chunk may come in three pieces: audio, block, audio.
        let per_chunk = entries_per_chunk(format) + usize::from(framed) + 2 * usize::from(icy);
        let (queue, receiver) = mpsc::channel(pieces.len() + VIEWER_QUEUE * per_chunk + 1);
        for piece in &pieces {
            // The queue has room for all of them: it was made that size.
            let _ = queue.try_send(Ok(piece.clone()));
        }
        live.viewers.push(Viewer {
            queue: queue.clone(),
            started,
            framed,
            icy: inserter,
        });
        (pieces.len(), started, receiver, live.feed.mime())
    };
    tracing::info!(%channel, %format, pieces, started, framed, icy, video = ?key.video, audio = ?key.audio, "viewer joined a continuous stream");
    let mut response = headers(&mime, framed, Body::streaming(queue));
    if icy {
        let interval = hyper::header::HeaderValue::from(icy::INTERVAL);
        response
            .headers_mut()
            .insert(icy::INTERVAL_HEADER, interval);
        if let Ok(name) = hyper::header::HeaderValue::from_str(channel.as_str()) {
            response.headers_mut().insert("icy-name", name);
        }
    }
    response
}

/// Queue entries per chunk: the MP4 `moof` and `mdat` go as two shared pieces; the other
/// formats write a chunk as one.
fn entries_per_chunk(format: StreamFormat) -> usize {
    if format == StreamFormat::Mp4 { 2 } else { 1 }
}

/// The response head of a stream of media type `mime` (for MP4 and WebM with its codecs, which
/// MSE needs: `video/mp4; codecs="avc1.64001f,mp4a.40.2"`).
fn headers(mime: &str, framed: bool, body: Body) -> Response<Body> {
    if !framed {
        return respond(StatusCode::OK, mime, body);
    }
    let mut response = respond(StatusCode::OK, chunks::CONTENT_TYPE, body);
    if let Ok(mime) = hyper::header::HeaderValue::from_str(mime) {
        response.headers_mut().insert(chunks::STREAM_TYPE, mime);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Channel, TrackSpec};

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
            let (_, audio) = pick_tracks(window, &channel.name, format, None).unwrap();
            assert_eq!(audio, name("a128"), "{format}");
        }
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Aac, None).unwrap(),
            (None, name("a128"))
        );
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Mp3, None).unwrap(),
            (None, name("a096-mp3"))
        );
        let master = crate::hls::MasterPlaylist::build(window.tracks(&channel.name)).to_string();
        assert!(
            master.contains("a128/media.m3u8") && !master.contains("mp3"),
            "{master}"
        );

        // A channel without an MP3 track has no stream.mp3.
        let mut plain = Channel::new(60);
        plain.feed("a128", &TrackSpec::audio(), 0..2);
        let (_, audio) = pick_tracks(&plain.window, &plain.name, StreamFormat::Mp3, None).unwrap();
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
        let mut low = crate::cmaf::parse_header(bytes).unwrap();
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
        let (video, audio) = pick_tracks(window, &channel.name, StreamFormat::Ts, None).unwrap();
        assert_eq!(video, name("v720"));
        assert_eq!(audio, name("a128"), "the first audio track by name");
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Mp4, Some("v360")).unwrap(),
            (name("v360"), name("a128"))
        );
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Aac, None).unwrap(),
            (None, name("a128"))
        );
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Aac, Some("a64")).unwrap(),
            (None, name("a64"))
        );
        let error = pick_tracks(window, &channel.name, StreamFormat::Ts, Some("a128")).unwrap_err();
        assert!(error.contains("no Video track a128"), "{error}");
        let other = ChannelName::new("other").unwrap();
        let error = pick_tracks(window, &other, StreamFormat::Ts, None).unwrap_err();
        assert_eq!(error, "no channel other");
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
            pick_tracks(window, &channel.name, StreamFormat::Webm, None).unwrap(),
            (name("v360-vp9"), name("a64-opus")),
            "the tracks it can carry, though lower or later"
        );
        assert_eq!(
            pick_tracks(window, &channel.name, StreamFormat::Mp4, None).unwrap(),
            (name("v720"), name("a128")),
            "the other streams pick as before"
        );

        let mut radio = Channel::new(60);
        radio.feed("a64", &TrackSpec::opus(), 0..2);
        assert_eq!(
            pick_tracks(&radio.window, &radio.name, StreamFormat::Webm, None).unwrap(),
            (None, name("a64"))
        );
    }

    /// What `serve` answers for `format` of a fixture channel, without a viewer staying.
    fn answer(channel: Channel, format: StreamFormat) -> (StatusCode, String, String) {
        let config = crate::PackagerConfig::new(([127, 0, 0, 1], 0).into());
        let shared = Shared::new(&config).unwrap();
        shared.apply(|window| {
            *window = channel.window;
            Vec::new()
        });
        let response = serve(&shared, &channel.name, format, None, true, false, false);
        let status = response.status();
        let content_type = response.headers()[hyper::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let mut body = response.into_body();
        let pieces = body
            .take_ready()
            .expect("a HEAD or a refusal has its whole body at once");
        let body: Vec<u8> = pieces.into_iter().flatten().collect();
        (status, content_type, String::from_utf8(body).unwrap())
    }

    #[test]
    fn a_channel_in_h264_has_no_webm_stream_and_is_told_why() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..2);
        channel.feed("a64", &TrackSpec::opus(), 0..2);
        let (status, content_type, reason) = answer(channel, StreamFormat::Webm);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, estuary_http::problem::PROBLEM_JSON);
        assert!(
            reason.contains(
                "\"detail\":\"stream.webm cannot carry video in avc1.64001f (it takes VP8 or VP9)\""
            ),
            "{reason}"
        );

        let mut aac = Channel::new(60);
        aac.feed("a128", &TrackSpec::audio(), 0..2);
        let (status, _, reason) = answer(aac, StreamFormat::Webm);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            reason.contains("needs VP8 or VP9 video or Opus audio"),
            "{reason}"
        );

        let mut vp8 = Channel::new(60);
        vp8.feed("v720", &TrackSpec::vp8(), 0..2);
        vp8.feed("a64", &TrackSpec::opus(), 0..2);
        let (status, content_type, _) = answer(vp8, StreamFormat::Webm);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "video/webm; codecs=\"vp8,opus\"");
    }

    #[test]
    fn a_viewer_that_falls_behind_is_dropped_with_an_error() {
        let (queue, mut receiver) = mpsc::channel(4);
        let mut viewer = Viewer {
            queue,
            started: true,
            framed: false,
            icy: None,
        };
        let piece = Bytes::from_static(b"chunk");
        let title: Arc<str> = "".into();
        // Three pieces fit; the fourth slot is kept for the error.
        for _ in 0..3 {
            assert!(viewer.send(std::slice::from_ref(&piece), StreamFormat::Ts, &title));
        }
        assert!(!viewer.send(std::slice::from_ref(&piece), StreamFormat::Ts, &title));
        for _ in 0..3 {
            assert_eq!(receiver.try_recv().unwrap().unwrap(), piece);
        }
        let error = receiver.try_recv().unwrap().unwrap_err();
        assert!(
            error.to_string().contains("fell 64 chunks behind"),
            "{error}"
        );

        // A viewer that hung up is gone at the next piece.
        let (queue, receiver) = mpsc::channel(4);
        drop(receiver);
        let mut gone = Viewer {
            queue,
            started: true,
            framed: false,
            icy: None,
        };
        assert!(!gone.send(&[piece], StreamFormat::Mp4, &title));
    }

    #[test]
    fn an_edge_gets_the_header_then_the_join_point_as_frames() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..9);
        channel.feed("a128", &TrackSpec::audio(), 0..9);
        let name = |n: &str| TrackName::new(n).unwrap();
        let video = channel.window.track(&channel.name, &name("v720")).unwrap();
        let audio = channel.window.track(&channel.name, &name("a128")).unwrap();
        let feed = Feed::from_window(StreamFormat::Mp4, Some(video), Some(audio)).unwrap();
        let (pieces, started) = framed_joining(feed.joining(), "");
        assert!(started);
        let mut decoder = chunks::Decoder::new();
        for piece in &pieces {
            decoder.extend(piece);
        }
        let header = decoder.next_frame().unwrap().unwrap();
        assert_eq!(header.kind, Kind::Header);
        assert_eq!(&header.bytes[4..8], b"ftyp");
        let join = decoder.next_frame().unwrap().unwrap();
        assert_eq!(join.kind, Kind::Chunk { join: true });
        assert_eq!(&join.bytes[4..8], b"moof");
        // The join point is the newest segment's first part; its capture time is its decode
        // time, which is UTC.
        let segment = video.segments().next_back().unwrap();
        let start = segment.parts[0].start;
        let expected = start * 1_000_000 / u64::from(video.header.timescale);
        assert_eq!(join.capture_micros, expected);
        assert_eq!(decoder.next_frame(), Ok(None), "nothing else");

        // TS has no header of its own: an empty one says where the stream starts.
        let feed = Feed::from_window(StreamFormat::Ts, Some(video), Some(audio)).unwrap();
        let (pieces, _) = framed_joining(feed.joining(), "");
        assert_eq!(&pieces[0][..], &chunks::head(Kind::Header, 0, 0));
    }
}
