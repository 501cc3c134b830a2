//! What the worker knows about how each channel is doing: counters written by the pipeline and
//! the outputs, and the mood derived from them when someone asks (`/healthz`, `/metrics`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_proto::Mood;
use estuary_proto::url::{ChannelName, TrackName};

/// Without a chunk for this long, a channel that had media is hungry.
const HUNGRY_AFTER: Duration = Duration::from_secs(3);
/// A channel that never had media is waking this long, then hungry.
const WAKING_FOR: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct ChannelHealth {
    pub channel: ChannelName,
    pub tracks: Vec<Arc<TrackStats>>,
    started: Instant,
    /// Milliseconds after `started` of the newest chunk from any track, 0 = none yet.
    last_chunk_ms: AtomicU64,
    failure: Mutex<Option<String>>,
    pub restarts: AtomicU64,
}

#[derive(Debug)]
pub struct TrackStats {
    pub track: TrackName,
    pub frames_encoded: AtomicU64,
    pub chunks: AtomicU64,
    pub outputs: Mutex<Vec<Arc<OutputStats>>>,
}

/// One destination of one track: a file or a receiver URL.
#[derive(Debug)]
pub struct OutputStats {
    pub kind: &'static str,
    pub target: String,
    pub bytes_sent: AtomicU64,
    pub reconnects: AtomicU64,
    pub chunks_dropped: AtomicU64,
    pub connected: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

impl OutputStats {
    pub fn new(kind: &'static str, target: String, connected: bool) -> Arc<Self> {
        Arc::new(Self {
            kind,
            target,
            bytes_sent: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            chunks_dropped: AtomicU64::new(0),
            connected: AtomicBool::new(connected),
            last_error: Mutex::new(None),
        })
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    pub fn set_error(&self, error: Option<String>) {
        self.connected.store(error.is_none(), Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    fn error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ChannelHealth {
    pub fn new(channel: ChannelName, tracks: impl IntoIterator<Item = TrackName>) -> Arc<Self> {
        Arc::new(Self {
            channel,
            tracks: tracks
                .into_iter()
                .map(|track| {
                    Arc::new(TrackStats {
                        track,
                        frames_encoded: AtomicU64::new(0),
                        chunks: AtomicU64::new(0),
                        outputs: Mutex::new(Vec::new()),
                    })
                })
                .collect(),
            started: Instant::now(),
            last_chunk_ms: AtomicU64::new(0),
            failure: Mutex::new(None),
            restarts: AtomicU64::new(0),
        })
    }

    pub fn track(&self, track: &TrackName) -> Option<&Arc<TrackStats>> {
        self.tracks.iter().find(|stats| &stats.track == track)
    }

    pub fn chunk_produced(&self, track: &TrackStats) {
        track.chunks.fetch_add(1, Relaxed);
        let since_start = self.started.elapsed().as_millis() as u64;
        self.last_chunk_ms.store(since_start.max(1), Relaxed);
    }

    pub fn has_produced(&self) -> bool {
        self.last_chunk_ms.load(Relaxed) > 0
    }

    pub fn set_failure(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }

    /// The mood now, with the reason when it is not happy.
    pub fn mood(&self) -> (Mood, Option<String>) {
        self.mood_at(self.started.elapsed())
    }

    fn mood_at(&self, since_start: Duration) -> (Mood, Option<String>) {
        if let Some(failure) = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return (Mood::Sad, Some(failure));
        }
        let last_chunk_ms = self.last_chunk_ms.load(Relaxed);
        if last_chunk_ms == 0 {
            return if since_start < WAKING_FOR {
                (Mood::Waking, None)
            } else {
                (Mood::Hungry, Some("no media from the source yet".into()))
            };
        }
        let quiet = since_start.saturating_sub(Duration::from_millis(last_chunk_ms));
        if quiet > HUNGRY_AFTER {
            return (
                Mood::Hungry,
                Some(format!(
                    "no media from the source for {} s",
                    quiet.as_secs()
                )),
            );
        }
        for track in &self.tracks {
            for output in track
                .outputs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                if let Some(error) = output.error() {
                    return (Mood::Sad, Some(format!("{}: {error}", output.target)));
                }
            }
        }
        (Mood::Happy, None)
    }
}

/// `/healthz`: the worker's mood (the worst of its channels') and each channel's, as JSON.
pub fn healthz(channels: &[Arc<ChannelHealth>]) -> (Mood, String) {
    let moods: Vec<_> = channels.iter().map(|c| (c, c.mood())).collect();
    let worst = moods
        .iter()
        .map(|(_, (mood, _))| *mood)
        .max_by_key(|mood| match mood {
            Mood::Happy => 0,
            Mood::Draining => 1,
            Mood::Waking => 2,
            Mood::Hungry => 3,
            Mood::Sad | Mood::Lost => 4,
        })
        .unwrap_or(Mood::Waking);
    let body = serde_json::json!({
        "role": "ingest",
        "mood": worst,
        "channels": moods.iter().map(|(health, (mood, reason))| serde_json::json!({
            "channel": health.channel.as_str(),
            "mood": mood,
            "reason": reason,
            "restarts": health.restarts.load(Relaxed),
            "tracks": health.tracks.iter().map(|track| serde_json::json!({
                "track": track.track.as_str(),
                "frames_encoded": track.frames_encoded.load(Relaxed),
                "chunks": track.chunks.load(Relaxed),
                "outputs": track.outputs.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|o| serde_json::json!({
                    "kind": o.kind,
                    "target": o.target,
                    "connected": o.connected.load(Relaxed),
                    "bytes_sent": o.bytes_sent.load(Relaxed),
                    "reconnects": o.reconnects.load(Relaxed),
                    "error": o.error(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    (worst, format!("{body:#}\n"))
}

/// `/metrics` in the Prometheus text format.
pub fn metrics(channels: &[Arc<ChannelHealth>]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let per_track = |value: &dyn Fn(&TrackStats) -> u64| {
        channels
            .iter()
            .flat_map(|c| {
                c.tracks.iter().map(move |t| {
                    (
                        format!("channel=\"{}\",track=\"{}\"", c.channel, t.track),
                        value(t),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let per_output = |value: &dyn Fn(&OutputStats) -> u64| {
        let mut rows = Vec::new();
        for channel in channels {
            for track in &channel.tracks {
                for output in track
                    .outputs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                {
                    rows.push((
                        format!(
                            "channel=\"{}\",track=\"{}\",output=\"{}\"",
                            channel.channel, track.track, output.kind
                        ),
                        value(output),
                    ));
                }
            }
        }
        rows
    };
    family(
        "estuary_ingest_frames_encoded_total",
        "counter",
        "Frames out of the encoder (video frames, audio frames).",
        per_track(&|t| t.frames_encoded.load(Relaxed)),
    );
    family(
        "estuary_ingest_chunks_total",
        "counter",
        "CMAF chunks produced.",
        per_track(&|t| t.chunks.load(Relaxed)),
    );
    family(
        "estuary_ingest_bytes_sent_total",
        "counter",
        "Bytes written to each output.",
        per_output(&|o| o.bytes_sent.load(Relaxed)),
    );
    family(
        "estuary_ingest_reconnects_total",
        "counter",
        "Times an output connected again after losing its receiver.",
        per_output(&|o| o.reconnects.load(Relaxed)),
    );
    family(
        "estuary_ingest_chunks_dropped_total",
        "counter",
        "Chunks an output could not take because its receiver was away or slow.",
        per_output(&|o| o.chunks_dropped.load(Relaxed)),
    );
    family(
        "estuary_ingest_pipeline_restarts_total",
        "counter",
        "Times a channel's pipeline was started again after an error.",
        channels
            .iter()
            .map(|c| {
                (
                    format!("channel=\"{}\"", c.channel),
                    c.restarts.load(Relaxed),
                )
            })
            .collect(),
    );
    let mut moods = Vec::new();
    for channel in channels {
        let (current, _) = channel.mood();
        for mood in Mood::ALL {
            moods.push((
                format!("channel=\"{}\",mood=\"{mood}\"", channel.channel),
                u64::from(mood == current),
            ));
        }
    }
    family(
        "estuary_ingest_mood",
        "gauge",
        "1 for the channel's current mood.",
        moods,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Arc<ChannelHealth> {
        ChannelHealth::new(
            ChannelName::new("demo").unwrap(),
            [TrackName::video(720), TrackName::audio(128)],
        )
    }

    #[test]
    fn moods_follow_the_media_and_the_outputs() {
        let health = health();
        assert_eq!(health.mood_at(Duration::from_secs(1)).0, Mood::Waking);
        assert_eq!(health.mood_at(Duration::from_secs(11)).0, Mood::Hungry);
        health.chunk_produced(&health.tracks[0]);
        assert_eq!(health.mood_at(Duration::from_millis(500)).0, Mood::Happy);
        let output = OutputStats::new("http", "http://127.0.0.1:1/ingest/demo/v720".into(), true);
        health.tracks[0]
            .outputs
            .lock()
            .unwrap()
            .push(output.clone());
        output.set_error(Some("connection refused".into()));
        let (mood, reason) = health.mood_at(Duration::from_millis(500));
        assert_eq!(mood, Mood::Sad);
        assert!(reason.unwrap().contains("connection refused"));
        output.set_error(None);
        let (mood, reason) = health.mood_at(Duration::from_secs(60));
        assert_eq!(mood, Mood::Hungry);
        assert!(reason.unwrap().contains("no media"));
        health.set_failure(Some("device unplugged".into()));
        assert_eq!(health.mood_at(Duration::from_millis(500)).0, Mood::Sad);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let health = health();
        health.tracks[1].frames_encoded.store(94, Relaxed);
        let text = metrics(&[health]);
        assert!(
            text.contains(
                "estuary_ingest_frames_encoded_total{channel=\"demo\",track=\"a128\"} 94\n"
            )
        );
        assert!(text.contains("estuary_ingest_mood{channel=\"demo\",mood=\"waking\"} 1\n"));
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
