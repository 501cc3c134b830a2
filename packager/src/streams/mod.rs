//! The continuous streams being watched (`/live/{channel}/stream.{ts,mp4,webm,aac,mp3}`) and
//! their viewers. One [`Feed`] per stream (channel, format and tracks) follows the window by
//! its events ([`Streams::on_event`], subscribed to the state): each part that lands is muxed
//! once, on the task that changed the window, and its pieces go to every viewer's queue. A
//! track that starts, changes or leaves ends the streams it concerns, and their viewers
//! reconnect. The channels' titles ("now playing") live here too, for ICY metadata and the
//! edges' title frames.

mod pick;
mod viewer;

pub use pick::{PickError, pick_tracks};
pub use viewer::VIEWER_QUEUE;

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use estuary_packager_core::cmaf::Chunk;
use estuary_packager_core::continuous::{ContinuousError, Feed, Role, role_of};
use estuary_packager_core::window::Event;
use estuary_proto::icy;
use estuary_proto::url::{ChannelName, StreamFormat, TrackName};
use tokio::sync::mpsc;

use viewer::{Viewer, close, entries_per_chunk, frame, framed_joining, title_frame};

/// A stream: one channel, one format, its tracks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamKey {
    pub channel: ChannelName,
    pub format: StreamFormat,
    pub video: Option<TrackName>,
    pub audio: Option<TrackName>,
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

struct Live {
    feed: Feed,
    viewers: Vec<Viewer>,
    /// The channel's title, for ICY metadata and the edges' title frames.
    title: Arc<str>,
}

/// How a viewer asks for a stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Asked {
    /// A `HEAD`: only the media type is wanted, and no stream is started for it.
    pub head: bool,
    /// An edge, which asked for the stream in `estuary_proto::chunks` frames.
    pub framed: bool,
    /// A radio player that asked for ICY metadata (`Icy-MetaData: 1`).
    pub icy: bool,
}

/// What joining a stream gave.
pub enum Joined {
    /// The stream's media type, for a `HEAD`.
    Head { mime: String },
    /// A viewer: the stream's media type and its queue, which holds what it is sent first.
    Viewer {
        mime: String,
        queue: mpsc::Receiver<io::Result<Bytes>>,
        /// Pieces queued on joining, and whether they start at a join point.
        pieces: usize,
        started: bool,
    },
}

/// Every continuous stream being watched, and the channels' titles.
#[derive(Default)]
pub struct Streams {
    live: Mutex<BTreeMap<StreamKey, Arc<Mutex<Live>>>>,
    /// "Now playing" per channel, as a radio's playout sets it (see [`Streams::set_title`]).
    titles: Mutex<BTreeMap<ChannelName, Arc<str>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<StreamKey, Arc<Mutex<Live>>>> {
        locked(&self.live)
    }

    /// What a change of the window means for the streams. Called with each event, after the
    /// window's lock is released; it never reads the window: the event carries what it needs.
    pub fn on_event(&self, event: &Event) {
        match event {
            Event::PartAdded {
                channel,
                track,
                segment,
                part,
                chunk,
            } => self.part_added(channel, track, *segment, *part, chunk),
            Event::TrackStarted {
                channel,
                track,
                header,
            }
            | Event::HeaderChanged {
                channel,
                track,
                header,
            }
            | Event::TimelineReset {
                channel,
                track,
                header,
            } => self.track_changed(channel, track, role_of(header) == Role::Audio),
            Event::TrackRetired { channel, track } => self.track_retired(channel, track),
            Event::ChannelRetired { channel } => self.channel_retired(channel),
            Event::SegmentCompleted { .. } | Event::Gap { .. } | Event::Evicted { .. } => {}
        }
    }

    /// Part `part` of segment `segment` of `track` landed in the window: every stream of the
    /// channel that carries the track muxes it and sends it to its viewers.
    fn part_added(
        &self,
        channel: &ChannelName,
        track: &TrackName,
        segment: u64,
        part: usize,
        chunk: &Chunk,
    ) {
        let streams: Vec<(StreamKey, Arc<Mutex<Live>>)> = self
            .lock()
            .iter()
            .filter(|(key, _)| &key.channel == channel && key.role_of(track).is_some())
            .map(|(key, live)| (key.clone(), live.clone()))
            .collect();
        for (key, live) in streams {
            let Some(role) = key.role_of(track) else {
                continue;
            };
            let mut live = locked(&live);
            let format = key.format;
            let pushed = match live.feed.push(role, segment, part, chunk) {
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
                let idle = streams
                    .get(&key)
                    .is_some_and(|live| locked(live).viewers.is_empty());
                if idle {
                    streams.remove(&key);
                }
            }
        }
    }

    /// A track of `channel` started, changed its header or began a new timeline: streams that
    /// use it, or that lack the audio a new audio track brings, end, and their viewers
    /// reconnect to a new one.
    fn track_changed(&self, channel: &ChannelName, track: &TrackName, is_audio: bool) {
        self.end(
            channel,
            |key| key.role_of(track).is_some() || (is_audio && key.audio.is_none()),
            "continuous stream restarts",
            &format!("track {track} of channel {channel} changed"),
        );
    }

    /// `track` of `channel` was retired: the streams that carry it end (their viewers
    /// reconnect to what the channel still has, or are told it is gone).
    fn track_retired(&self, channel: &ChannelName, track: &TrackName) {
        self.end(
            channel,
            |key| key.role_of(track).is_some(),
            "continuous stream ends",
            &format!("track {track} of channel {channel} stopped"),
        );
    }

    /// The channel's last track was retired: its streams end, and its title goes.
    fn channel_retired(&self, channel: &ChannelName) {
        self.end(
            channel,
            |_| true,
            "continuous stream ends",
            &format!("channel {channel} stopped"),
        );
        locked(&self.titles).remove(channel);
    }

    /// Ends the streams of `channel` that `which` picks, telling their viewers `reason`.
    fn end(
        &self,
        channel: &ChannelName,
        which: impl Fn(&StreamKey) -> bool,
        log: &'static str,
        reason: &str,
    ) {
        let mut streams = self.lock();
        let ended: Vec<StreamKey> = streams
            .keys()
            .filter(|key| &key.channel == channel && which(key))
            .cloned()
            .collect();
        for key in ended {
            if let Some(live) = streams.remove(&key) {
                tracing::info!(%channel, format = %key.format, "{log}");
                close(&mut locked(&live).viewers, reason);
            }
        }
    }

    /// The title of `channel` is now `title` (a radio's "now playing"): ICY listeners get it at
    /// their next block, edges in a title frame now.
    pub fn set_title(&self, channel: &ChannelName, title: &str) {
        let title: Arc<str> = title.into();
        locked(&self.titles).insert(channel.clone(), title.clone());
        let streams: Vec<Arc<Mutex<Live>>> = self
            .lock()
            .iter()
            .filter(|(key, _)| &key.channel == channel)
            .map(|(_, live)| live.clone())
            .collect();
        let frame = title_frame(&title);
        for live in streams {
            let mut live = locked(&live);
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
        locked(&self.titles)
            .get(channel)
            .cloned()
            .unwrap_or_else(|| "".into())
    }

    /// Viewers now, per format.
    pub fn viewers(&self) -> BTreeMap<StreamFormat, usize> {
        let mut viewers = BTreeMap::new();
        for (key, live) in self.lock().iter() {
            *viewers.entry(key.format).or_default() += locked(live).viewers.len();
        }
        viewers
    }

    /// A viewer joins the stream `key`, started with the feed `start` makes when nobody
    /// watches it yet (called with the streams locked, so that two viewers arriving together
    /// share one). The viewer's queue holds the stream's header and everything from the
    /// newest join point on; the rest comes as parts land.
    pub fn join(
        &self,
        key: &StreamKey,
        asked: Asked,
        start: impl FnOnce() -> Result<Feed, ContinuousError>,
    ) -> Result<Joined, ContinuousError> {
        let mut streams = self.lock();
        let live = match streams.get(key) {
            Some(live) => live.clone(),
            None => {
                let feed = start()?;
                if asked.head {
                    return Ok(Joined::Head { mime: feed.mime() });
                }
                let live = Arc::new(Mutex::new(Live {
                    feed,
                    viewers: Vec::new(),
                    title: self.title(&key.channel),
                }));
                streams.insert(key.clone(), live.clone());
                live
            }
        };
        let mut live = locked(&live);
        let mime = live.feed.mime();
        if asked.head {
            return Ok(Joined::Head { mime });
        }
        let (mut pieces, started) = if asked.framed {
            framed_joining(live.feed.joining(), &live.title)
        } else {
            live.feed.join()
        };
        let mut inserter = asked.icy.then(icy::Inserter::default);
        if let Some(inserter) = &mut inserter {
            pieces = pieces
                .iter()
                .flat_map(|piece| inserter.insert(piece, &live.title))
                .collect();
        }
        // An ICY listener's chunk may come in three pieces: audio, block, audio.
        let per_chunk =
            entries_per_chunk(key.format) + usize::from(asked.framed) + 2 * usize::from(asked.icy);
        let (queue, receiver) = mpsc::channel(pieces.len() + VIEWER_QUEUE * per_chunk + 1);
        for piece in &pieces {
            // The queue has room for all of them: it was made that size.
            let _ = queue.try_send(Ok(piece.clone()));
        }
        live.viewers.push(Viewer {
            queue,
            started,
            framed: asked.framed,
            icy: inserter,
        });
        Ok(Joined::Viewer {
            mime,
            queue: receiver,
            pieces: pieces.len(),
            started,
        })
    }
}
