//! Virtual viewers: each one plays a live stream as a player does (fetching playlists or the
//! MPD and then media in order, at the pace the stream is made), but decodes nothing: it keeps
//! the account a player keeps of its buffer, so it knows when playback starts, when it stalls
//! for want of media, and how far behind real time it plays. Media time is UTC (DESIGN.md
//! "Media time is UTC"): a segment numbered `n` of duration `d` starts at `n × d` seconds
//! since the Unix epoch, which is what the live latency is measured against.
//!
//! - `hls`: the first variant of the multivariant playlist; starts three segments behind the
//!   newest and loads whole segments, reloading the playlist when the next is not in it yet.
//! - `llhls`: the same playlist with parts; starts on the independent part nearest
//!   `PART-HOLD-BACK` behind the live edge and asks for each next part with a blocking
//!   playlist reload (`_HLS_msn`, `_HLS_part`).
//! - `dash`: the first video representation of the MPD's number template; starts
//!   `suggestedPresentationDelay` behind now and loads each segment once it is whole.
//! - `continuous`: a continuous stream (`stream.ts`, `stream.mp4`, `stream.aac`) read as it
//!   comes by a plain socket ([`crate::stream_viewer`]): a wait of over a second between
//!   reads counts as a stall; `stream.mp4` also gives each chunk's live latency.
//!
//! Only the video rendition is loaded (players load audio beside it; the edge's answers for
//! it are the same kind of request).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::LOCATION;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::time::Instant;

use crate::replay::Percentiles;

/// How long one request may take before the viewer counts it as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Whole segments a HLS viewer starts behind the newest (HLS's default hold-back is three
/// target durations).
const HLS_SEGMENTS_BEHIND: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hls,
    Llhls,
    Dash,
    Continuous,
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Kind, String> {
        match text {
            "hls" => Ok(Kind::Hls),
            "llhls" => Ok(Kind::Llhls),
            "dash" => Ok(Kind::Dash),
            "continuous" => Ok(Kind::Continuous),
            _ => Err(format!(
                "unknown kind {text:?}: expected hls, llhls, dash or continuous"
            )),
        }
    }
}

pub struct Options {
    /// The multivariant playlist (hls, llhls) or MPD (dash); redirects are followed.
    pub url: String,
    pub kind: Kind,
    pub count: usize,
    pub duration: Duration,
    /// Viewers start spread evenly over this long.
    pub ramp: Duration,
}

/// A piece of media to load: a segment or a part.
#[derive(Clone, Debug, PartialEq)]
struct Unit {
    url: String,
    /// UTC seconds of its first sample.
    start: f64,
    duration: f64,
    /// For the first unit: where playback starts when that is later than the unit's start (an
    /// LL-HLS player loads from a keyframe, then seeks to its target latency).
    play_from: Option<f64>,
}

/// The account of one viewer's buffer and playback.
#[derive(Debug, Default)]
struct Playback {
    /// When the viewer started, and when playback did.
    began: Option<Instant>,
    started: Option<Instant>,
    /// Where playback starts, once the first unit has said.
    play_from: Option<f64>,
    /// Media time (UTC seconds) played up to, as of `updated`.
    position: f64,
    buffered_until: f64,
    updated: Option<Instant>,
    stalls: u64,
    stalled_for: Duration,
}

impl Playback {
    /// A unit arrived at `now`: playback runs from its last account to now (stalling where
    /// the buffer ran out), then the unit is buffered. Gives the live latency at `now`, once
    /// playback has started: when the buffer holds a unit's length past where it starts.
    fn arrived(&mut self, unit: &Unit, now: Instant, utc_now: f64) -> Option<f64> {
        if self.started.is_none() {
            let from = *self
                .play_from
                .get_or_insert(unit.play_from.unwrap_or(unit.start).max(unit.start));
            self.buffered_until = self.buffered_until.max(unit.start) + unit.duration;
            if self.buffered_until < from + unit.duration {
                return None;
            }
            self.started = Some(now);
            self.position = from;
        } else {
            self.play_until(now);
            if unit.start > self.buffered_until {
                // A gap (the viewer skipped forward): playback that waits at the buffer's end
                // jumps to the new unit.
                if self.position >= self.buffered_until {
                    self.position = unit.start;
                }
                self.buffered_until = unit.start;
            }
            self.buffered_until += unit.duration;
        }
        self.updated = Some(now);
        Some(utc_now - self.position)
    }

    /// Plays from the last account to `now`; where the buffer ran out part-way, the rest of
    /// the time was a stall.
    fn play_until(&mut self, now: Instant) {
        let Some(updated) = self.updated else {
            return;
        };
        let elapsed = now.saturating_duration_since(updated).as_secs_f64();
        let playable = (self.buffered_until - self.position).max(0.0);
        if elapsed > playable {
            if playable > 0.0 {
                self.stalls += 1;
            }
            self.stalled_for += Duration::from_secs_f64(elapsed - playable);
            self.position = self.buffered_until;
        } else {
            self.position += elapsed;
        }
        self.updated = Some(now);
    }
}

/// What all the viewers saw.
#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub kind: Kind,
    pub viewers: usize,
    pub seconds: f64,
    /// Viewers whose playback started.
    pub started: usize,
    /// Viewers that stopped on an error, by the error.
    pub failures: BTreeMap<String, u64>,
    /// From a viewer's first request to its first media loaded, in milliseconds.
    pub startup_ms: Percentiles,
    /// Live latency (UTC now minus the media time played) over every unit loaded, ms.
    pub latency_ms: Percentiles,
    pub stalls: u64,
    pub viewers_with_stalls: usize,
    /// Time spent stalled, over all viewers, in seconds.
    pub stalled_seconds: f64,
    pub requests: u64,
    pub bytes: u64,
    /// Body bytes per viewer, percentiles, in kilobytes.
    pub kilobytes_per_viewer: Percentiles,
}

impl Report {
    pub fn text(&self) -> String {
        let mut text = format!(
            "{} {} viewers of {} for {:.1} s: {} started playing\n",
            self.viewers,
            serde_json::to_value(self.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            self.url,
            self.seconds,
            self.started
        );
        let s = &self.startup_ms;
        text += &format!(
            "start-up ms: p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}\n",
            s.p50, s.p90, s.p99, s.max
        );
        let l = &self.latency_ms;
        if self.kind == Kind::Continuous && l.max == 0.0 {
            text +=
                "live latency: not measured (stream.mp4 carries capture times, this does not)\n";
        } else {
            text += &format!(
                "live latency ms: p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}\n",
                l.p50, l.p90, l.p99, l.max
            );
        }
        if self.kind == Kind::Continuous {
            text += &format!(
                "gaps (over {} s without data): {} in {} viewers, {:.1} s in all\n",
                crate::stream_viewer::GAP.as_secs_f64(),
                self.stalls,
                self.viewers_with_stalls,
                self.stalled_seconds
            );
        } else {
            text += &format!(
                "stalls: {} in {} viewers, {:.1} s stalled in all\n",
                self.stalls, self.viewers_with_stalls, self.stalled_seconds
            );
        }
        let k = &self.kilobytes_per_viewer;
        text += &format!(
            "{} requests, {:.1} MB; per viewer kB: p50 {:.0}, p90 {:.0}, max {:.0}\n",
            self.requests,
            self.bytes as f64 / 1e6,
            k.p50,
            k.p90,
            k.max
        );
        if self.failures.is_empty() {
            text += "failures: none\n";
        } else {
            for (reason, count) in &self.failures {
                text += &format!("failure ({count} viewers): {reason}\n");
            }
        }
        text
    }
}

/// One viewer's result.
#[derive(Default)]
struct Outcome {
    startup: Option<Duration>,
    latencies: Vec<f64>,
    stalls: u64,
    stalled_for: Duration,
    requests: u64,
    bytes: u64,
    failure: Option<String>,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A viewer's connection and its tally.
struct Fetcher {
    client: HttpClient,
    requests: u64,
    bytes: u64,
}

impl Fetcher {
    fn new() -> Fetcher {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
            requests: 0,
            bytes: 0,
        }
    }

    /// GETs `url`, following redirects; gives the final URL and the body.
    async fn get(&mut self, url: &str) -> Result<(String, Bytes), String> {
        let mut url = url.to_owned();
        for _ in 0..5 {
            let request = Request::get(&url)
                .header("user-agent", "estuary-loadtest-viewer")
                .body(Empty::new())
                .map_err(|e| format!("{url}: {e}"))?;
            self.requests += 1;
            let exchange = async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let location = response.headers().get(LOCATION).cloned();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok::<_, String>((status, location, body))
            };
            let (status, location, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| format!("{url}: no answer in {REQUEST_TIMEOUT:?}"))?
                .map_err(|e| format!("{url}: {e}"))?;
            self.bytes += body.len() as u64;
            if status.is_redirection()
                && let Some(location) = location.and_then(|l| l.to_str().ok().map(str::to_owned))
            {
                url = resolve(&url, &location);
                continue;
            }
            if !status.is_success() {
                return Err(format!("{}: {status}", strip_query(&url)));
            }
            return Ok((url, body));
        }
        Err(format!("{url}: too many redirects"))
    }

    async fn text(&mut self, url: &str) -> Result<(String, String), String> {
        let (url, body) = self.get(url).await?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: not text"))?;
        Ok((url, text))
    }
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// `reference` (absolute, rooted or relative, with `..`) against the absolute URL `base`.
pub fn resolve(base: &str, reference: &str) -> String {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return reference.to_owned();
    }
    let Ok(uri) = base.parse::<Uri>() else {
        return reference.to_owned();
    };
    let origin = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str())
    );
    let (reference_path, query) = match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    };
    let mut segments: Vec<&str> = if reference_path.starts_with('/') {
        Vec::new()
    } else {
        let path = uri.path();
        let folder = &path[..path.rfind('/').unwrap_or(0)];
        folder.split('/').filter(|s| !s.is_empty()).collect()
    };
    for segment in reference_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut url = format!("{origin}/{}", segments.join("/"));
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// What a media playlist says, as far as a viewer needs it.
#[derive(Debug, Default, PartialEq)]
struct MediaPlaylist {
    target_duration: f64,
    part_hold_back: Option<f64>,
    /// Whole segments: (media sequence number, URI, duration).
    segments: Vec<(u64, String, f64)>,
    /// Parts: (msn, part index, URI, duration, independent).
    parts: Vec<(u64, u32, String, f64, bool)>,
}

fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[at..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(',').next(),
    }
}

fn parse_media_playlist(text: &str) -> Result<MediaPlaylist, String> {
    let mut playlist = MediaPlaylist::default();
    let mut msn = None;
    let mut duration = None;
    let mut part_index = 0;
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            playlist.target_duration = value.parse().map_err(|_| "bad EXT-X-TARGETDURATION")?;
        } else if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| "bad EXT-X-MEDIA-SEQUENCE")?,
            );
        } else if let Some(tag) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            playlist.part_hold_back = attribute(tag, "PART-HOLD-BACK").and_then(|v| v.parse().ok());
        } else if let Some(tag) = line.strip_prefix("#EXT-X-PART:") {
            let msn = msn.ok_or("a part before EXT-X-MEDIA-SEQUENCE")?;
            let uri = attribute(tag, "URI").ok_or("a part without URI")?;
            let length = attribute(tag, "DURATION")
                .and_then(|v| v.parse().ok())
                .ok_or("a part without DURATION")?;
            let independent = attribute(tag, "INDEPENDENT") == Some("YES");
            playlist
                .parts
                .push((msn, part_index, uri.to_owned(), length, independent));
            part_index += 1;
        } else if let Some(value) = line.strip_prefix("#EXTINF:") {
            duration = value.split(',').next().and_then(|v| v.parse::<f64>().ok());
        } else if !line.is_empty() && !line.starts_with('#') {
            let number = msn.ok_or("a segment before EXT-X-MEDIA-SEQUENCE")?;
            playlist.segments.push((
                number,
                line.to_owned(),
                duration.take().ok_or("a segment without EXTINF")?,
            ));
            msn = Some(number + 1);
            part_index = 0;
        }
    }
    if playlist.target_duration <= 0.0 {
        return Err("no EXT-X-TARGETDURATION".into());
    }
    Ok(playlist)
}

/// The first variant's URI of a multivariant playlist.
fn first_variant(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("#EXT-X-STREAM-INF") {
            return lines.find(|l| !l.is_empty() && !l.starts_with('#'));
        }
    }
    None
}

fn utc_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Runs the viewers and gathers what they saw.
pub async fn run(options: &Options, progress: impl Fn(usize) + Send + Sync + 'static) -> Report {
    let began = Instant::now();
    let progress = Arc::new(progress);
    let finished = Arc::new(Mutex::new(0usize));
    let mut viewers = tokio::task::JoinSet::new();
    for index in 0..options.count {
        let delay = options
            .ramp
            .mul_f64(index as f64 / options.count.max(1) as f64);
        let (url, kind) = (options.url.clone(), options.kind);
        let (progress, finished) = (progress.clone(), finished.clone());
        let stop = began + delay + options.duration;
        viewers.spawn(async move {
            tokio::time::sleep_until(began + delay).await;
            let outcome = view(&url, kind, stop).await;
            let mut count = finished.lock().unwrap_or_else(|e| e.into_inner());
            *count += 1;
            progress(*count);
            outcome
        });
    }
    let mut outcomes = Vec::with_capacity(options.count);
    while let Some(outcome) = viewers.join_next().await {
        outcomes.push(outcome.unwrap_or_else(|error| Outcome {
            failure: Some(format!("the viewer failed: {error}")),
            ..Outcome::default()
        }));
    }
    summarize(options, &outcomes, began.elapsed().as_secs_f64())
}

fn summarize(options: &Options, outcomes: &[Outcome], seconds: f64) -> Report {
    let histogram = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let (mut startup, mut latency, mut bytes_per_viewer) = (histogram(), histogram(), histogram());
    let mut failures = BTreeMap::new();
    for outcome in outcomes {
        if let Some(time) = outcome.startup {
            let _ = startup.record((time.as_micros() as u64).max(1));
        }
        for seconds in &outcome.latencies {
            let _ = latency.record(((seconds * 1e6).max(1.0)) as u64);
        }
        let _ = bytes_per_viewer.record(outcome.bytes.max(1));
        if let Some(reason) = &outcome.failure {
            *failures.entry(reason.clone()).or_default() += 1;
        }
    }
    Report {
        url: options.url.clone(),
        kind: options.kind,
        viewers: outcomes.len(),
        seconds,
        started: outcomes.iter().filter(|o| o.startup.is_some()).count(),
        failures,
        startup_ms: Percentiles::of(&startup, 1000.0),
        latency_ms: Percentiles::of(&latency, 1000.0),
        stalls: outcomes.iter().map(|o| o.stalls).sum(),
        viewers_with_stalls: outcomes.iter().filter(|o| o.stalls > 0).count(),
        stalled_seconds: outcomes.iter().map(|o| o.stalled_for.as_secs_f64()).sum(),
        requests: outcomes.iter().map(|o| o.requests).sum(),
        bytes: outcomes.iter().map(|o| o.bytes).sum(),
        kilobytes_per_viewer: Percentiles::of(&bytes_per_viewer, 1000.0),
    }
}

/// One viewer, until `stop`.
async fn view(url: &str, kind: Kind, stop: Instant) -> Outcome {
    if kind == Kind::Continuous {
        let watched = crate::stream_viewer::watch(url, stop, utc_now).await;
        return Outcome {
            startup: watched.startup,
            latencies: watched.latencies,
            stalls: watched.gaps,
            stalled_for: watched.gap_time,
            requests: watched.requests,
            bytes: watched.bytes,
            failure: watched.failure,
        };
    }
    let mut fetcher = Fetcher::new();
    let mut playback = Playback {
        began: Some(Instant::now()),
        ..Playback::default()
    };
    let mut latencies = Vec::new();
    let played = async {
        let mut on_unit = |unit: &Unit| {
            latencies.extend(playback.arrived(unit, Instant::now(), utc_now()));
        };
        match kind {
            Kind::Hls => play_hls(&mut fetcher, url, false, &mut on_unit).await,
            Kind::Llhls => play_hls(&mut fetcher, url, true, &mut on_unit).await,
            Kind::Dash => play_dash(&mut fetcher, url, &mut on_unit).await,
            Kind::Continuous => unreachable!("watched above"),
        }
    };
    let failure = match tokio::time::timeout_at(stop, played).await {
        Ok(Err(reason)) => Some(reason),
        Ok(Ok(())) | Err(_) => None,
    };
    playback.play_until(Instant::now().min(stop));
    Outcome {
        startup: playback
            .started
            .zip(playback.began)
            .map(|(started, began)| started - began),
        latencies,
        stalls: playback.stalls,
        stalled_for: playback.stalled_for,
        requests: fetcher.requests,
        bytes: fetcher.bytes,
        failure,
    }
}

/// Plays HLS (whole segments) or LL-HLS (parts, blocking reloads) until stopped from outside.
async fn play_hls(
    fetcher: &mut Fetcher,
    url: &str,
    low_latency: bool,
    on_unit: &mut impl FnMut(&Unit),
) -> Result<(), String> {
    let (master_url, master) = fetcher.text(url).await?;
    let variant = first_variant(&master).ok_or("the multivariant playlist names no variant")?;
    let media_url = resolve(&master_url, variant);
    let (media_url, text) = fetcher.text(&media_url).await?;
    let mut playlist = parse_media_playlist(&text).map_err(|e| format!("{media_url}: {e}"))?;
    let target = playlist.target_duration;
    let with_query = |base: &str, query: &str| {
        if base.contains('?') {
            format!("{base}&{query}")
        } else {
            format!("{base}?{query}")
        }
    };
    if low_latency {
        if playlist.parts.is_empty() {
            return Err(format!("{media_url}: no parts: not a low-latency playlist"));
        }
        let hold_back = playlist.part_hold_back.unwrap_or(3.0 * target / 6.0);
        // The live edge: the end of the newest part. Load from the newest independent part
        // at least PART-HOLD-BACK behind it, and start playing PART-HOLD-BACK behind it, as
        // players seek to their target latency once they hold a keyframe before it.
        let unit_of = |(msn, index, uri, duration, _): &(u64, u32, String, f64, bool),
                       playlist: &MediaPlaylist| {
            let offset: f64 = playlist
                .parts
                .iter()
                .filter(|p| p.0 == *msn && p.1 < *index)
                .map(|p| p.3)
                .sum();
            Unit {
                url: resolve(&media_url, uri),
                start: *msn as f64 * target + offset,
                duration: *duration,
                play_from: None,
            }
        };
        // A channel that has just started may list parts but no independent one yet: wait
        // for the next part with a blocking reload, as a player waits for a keyframe.
        let (first, live_edge) = loop {
            let last = playlist.parts.last().cloned().ok_or("no parts")?;
            let edge = unit_of(&last, &playlist);
            let live_edge = edge.start + edge.duration;
            let first = playlist
                .parts
                .iter()
                .rev()
                .find(|part| part.4 && unit_of(part, &playlist).start <= live_edge - hold_back)
                .or_else(|| playlist.parts.iter().find(|part| part.4))
                .cloned();
            if let Some(first) = first {
                break (first, live_edge);
            }
            let next = if playlist.segments.iter().any(|s| s.0 == last.0) {
                (last.0 + 1, 0)
            } else {
                (last.0, last.1 + 1)
            };
            let reload = with_query(
                &media_url,
                &format!("_HLS_msn={}&_HLS_part={}", next.0, next.1),
            );
            let (_, text) = fetcher.text(&reload).await?;
            playlist = parse_media_playlist(&text).map_err(|e| format!("{reload}: {e}"))?;
        };
        let (mut msn, mut index) = (first.0, first.1);
        loop {
            let found = playlist
                .parts
                .iter()
                .find(|p| p.0 == msn && p.1 == index)
                .cloned();
            match found {
                Some(part) => {
                    let mut unit = unit_of(&part, &playlist);
                    unit.play_from = Some(live_edge - hold_back);
                    fetcher.get(&unit.url).await?;
                    on_unit(&unit);
                    index += 1;
                }
                None if playlist.segments.iter().any(|s| s.0 == msn) => {
                    // The segment is whole and has no more parts: the next segment's first.
                    msn += 1;
                    index = 0;
                }
                None => {
                    let reload =
                        with_query(&media_url, &format!("_HLS_msn={msn}&_HLS_part={index}"));
                    let (_, text) = fetcher.text(&reload).await?;
                    playlist = parse_media_playlist(&text).map_err(|e| format!("{reload}: {e}"))?;
                    let older = playlist.parts.first().is_some_and(|p| p.0 > msn);
                    if older {
                        return Err(format!("{media_url}: fell out of the window"));
                    }
                }
            }
        }
    }
    // Whole segments, three behind the newest.
    // A channel that has just started may have no whole segment yet: reload until it has.
    while playlist.segments.is_empty() {
        tokio::time::sleep(Duration::from_secs_f64(target / 2.0)).await;
        let (_, text) = fetcher.text(&media_url).await?;
        playlist = parse_media_playlist(&text).map_err(|e| format!("{media_url}: {e}"))?;
    }
    let start = playlist.segments.len().saturating_sub(HLS_SEGMENTS_BEHIND);
    let mut next = playlist.segments[start].0;
    loop {
        match playlist.segments.iter().find(|s| s.0 == next).cloned() {
            Some((msn, uri, duration)) => {
                let unit = Unit {
                    url: resolve(&media_url, &uri),
                    start: msn as f64 * target,
                    duration,
                    play_from: None,
                };
                fetcher.get(&unit.url).await?;
                on_unit(&unit);
                next += 1;
            }
            None => {
                if playlist.segments.first().is_some_and(|s| s.0 > next) {
                    return Err(format!("{media_url}: fell out of the window"));
                }
                // Not made yet: reload after half a target duration, as players do.
                tokio::time::sleep(Duration::from_secs_f64(target / 2.0)).await;
                let (_, text) = fetcher.text(&media_url).await?;
                playlist = parse_media_playlist(&text).map_err(|e| format!("{media_url}: {e}"))?;
            }
        }
    }
}

/// The parts of an MPD a viewer needs: the first video representation's number template.
#[derive(Debug, PartialEq)]
struct Manifest {
    availability_start: f64,
    delay: f64,
    /// Seconds per segment.
    duration: f64,
    start_number: u64,
    /// The media URL template, with the representation filled in; `$Number$` left.
    media: String,
}

fn seconds_of_iso_duration(text: &str) -> Option<f64> {
    // PT4S, PT0.5S, PT1M30S: the forms MPDs use for short durations.
    let body = text.strip_prefix("PT")?;
    let (mut total, mut number) = (0.0, String::new());
    for c in body.chars() {
        match c {
            'H' => total += number.parse::<f64>().ok()? * 3600.0,
            'M' => total += number.parse::<f64>().ok()? * 60.0,
            'S' => total += number.parse::<f64>().ok()?,
            c => {
                number.push(c);
                continue;
            }
        }
        number.clear();
    }
    Some(total)
}

fn parse_mpd(text: &str) -> Result<Manifest, String> {
    let document = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let mpd = document.root_element();
    let moment = |text: &str| -> Option<f64> {
        let (whole, fraction) = match text.trim_end_matches('Z').split_once('.') {
            Some((whole, fraction)) => (whole, format!("0.{fraction}").parse::<f64>().ok()?),
            None => (text.trim_end_matches('Z'), 0.0),
        };
        let seconds = estuary_proto::utc::parse_moment(&format!("{whole}Z")).ok()?;
        Some(seconds as f64 + fraction)
    };
    let availability_start = mpd
        .attribute("availabilityStartTime")
        .and_then(moment)
        .ok_or("no availabilityStartTime: not a live MPD")?;
    let delay = mpd
        .attribute("suggestedPresentationDelay")
        .and_then(seconds_of_iso_duration)
        .unwrap_or(4.0);
    let set = mpd
        .descendants()
        .find(|n| {
            n.has_tag_name("AdaptationSet")
                && (n.attribute("contentType") == Some("video")
                    || n.attribute("mimeType")
                        .is_some_and(|m| m.starts_with("video")))
        })
        .ok_or("no video adaptation set")?;
    let template = set
        .descendants()
        .find(|n| n.has_tag_name("SegmentTemplate"))
        .ok_or("no SegmentTemplate")?;
    let representation = set
        .descendants()
        .find(|n| n.has_tag_name("Representation"))
        .and_then(|n| n.attribute("id"))
        .ok_or("no Representation")?;
    let number = |name: &str| template.attribute(name).and_then(|v| v.parse::<f64>().ok());
    let timescale = number("timescale").unwrap_or(1.0);
    let duration = number("duration").ok_or("no SegmentTemplate@duration")? / timescale;
    let media = template
        .attribute("media")
        .ok_or("no SegmentTemplate@media")?
        .replace("$RepresentationID$", representation);
    Ok(Manifest {
        availability_start,
        delay,
        duration,
        start_number: number("startNumber").unwrap_or(1.0) as u64,
        media,
    })
}

/// Plays DASH: each segment once it is whole, starting the suggested delay behind now.
async fn play_dash(
    fetcher: &mut Fetcher,
    url: &str,
    on_unit: &mut impl FnMut(&Unit),
) -> Result<(), String> {
    let (mpd_url, text) = fetcher.text(url).await?;
    let manifest = parse_mpd(&text).map_err(|e| format!("{mpd_url}: {e}"))?;
    let since_start = utc_now() - manifest.delay - manifest.availability_start;
    let mut number =
        manifest.start_number + (since_start / manifest.duration).floor().max(0.0) as u64;
    loop {
        let start = manifest.availability_start
            + (number - manifest.start_number) as f64 * manifest.duration;
        let whole_at = start + manifest.duration;
        let wait = whole_at - utc_now();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        let unit = Unit {
            url: resolve(
                &mpd_url,
                &manifest.media.replace("$Number$", &number.to_string()),
            ),
            start,
            duration: manifest.duration,
            play_from: None,
        };
        fetcher.get(&unit.url).await?;
        on_unit(&unit);
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_against_their_playlist() {
        let base = "http://127.0.0.1:8090/live/demo/master.m3u8?keycard=k";
        assert_eq!(
            resolve(base, "v720/media.m3u8?keycard=k"),
            "http://127.0.0.1:8090/live/demo/v720/media.m3u8?keycard=k"
        );
        assert_eq!(
            resolve("http://h/live/demo/v720/media.m3u8", "../a128/media.m3u8"),
            "http://h/live/demo/a128/media.m3u8"
        );
        assert_eq!(resolve(base, "/x/y.m4s"), "http://127.0.0.1:8090/x/y.m4s");
        assert_eq!(resolve(base, "http://other/z"), "http://other/z");
    }

    #[test]
    fn media_playlists_give_segments_and_parts() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.001\n#EXT-X-MEDIA-SEQUENCE:100\n#EXTINF:2.0,\n100.m4s\n#EXT-X-PART:DURATION=1.0,URI=\"101.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=1.0,URI=\"101.1.m4s\"\n#EXTINF:2.0,\n101.m4s\n#EXT-X-PART:DURATION=1.0,URI=\"102.0.m4s\",INDEPENDENT=YES\n";
        let playlist = parse_media_playlist(text).unwrap();
        assert_eq!(playlist.target_duration, 2.0);
        assert_eq!(playlist.part_hold_back, Some(1.001));
        assert_eq!(
            playlist.segments,
            vec![(100, "100.m4s".into(), 2.0), (101, "101.m4s".into(), 2.0)]
        );
        assert_eq!(playlist.parts.len(), 3);
        assert_eq!(playlist.parts[1], (101, 1, "101.1.m4s".into(), 1.0, false));
        assert_eq!(playlist.parts[2].0, 102);
        assert!(parse_media_playlist("#EXTM3U\n").is_err());
    }

    #[test]
    fn mpds_give_the_number_template() {
        let text = r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="1970-01-01T00:00:02.000Z" suggestedPresentationDelay="PT4S"><Period start="PT0S"><AdaptationSet contentType="video" mimeType="video/mp4"><SegmentTemplate timescale="3000" duration="6000" startNumber="1" media="$RepresentationID$/$Number$.m4s"/><Representation id="v720"/></AdaptationSet></Period></MPD>"#;
        let manifest = parse_mpd(text).unwrap();
        assert_eq!(
            manifest,
            Manifest {
                availability_start: 2.0,
                delay: 4.0,
                duration: 2.0,
                start_number: 1,
                media: "v720/$Number$.m4s".into(),
            }
        );
        assert_eq!(seconds_of_iso_duration("PT1M30.5S"), Some(90.5));
    }

    #[test]
    fn a_buffer_that_runs_dry_is_a_stall() {
        let unit = |start: f64| Unit {
            url: String::new(),
            start,
            duration: 2.0,
            play_from: None,
        };
        let t0 = Instant::now();
        let mut playback = Playback::default();
        // Segment 100 (UTC 200-202 s) arrives when the clock says 203.5: 3.5 s behind.
        assert_eq!(playback.arrived(&unit(200.0), t0, 203.5), Some(3.5));
        // The next arrives 1.5 s later: no stall, 1.5 s played.
        let latency = playback.arrived(&unit(202.0), t0 + Duration::from_millis(1500), 205.0);
        assert!((latency.unwrap() - 3.5).abs() < 1e-9);
        assert_eq!(playback.stalls, 0);
        // The next only 4 s later: the buffer (to 204) ran out after 2.5 s; 1.5 s stalled.
        let latency = playback.arrived(&unit(204.0), t0 + Duration::from_millis(5500), 209.0);
        assert_eq!(playback.stalls, 1);
        assert_eq!(playback.stalled_for, Duration::from_millis(1500));
        assert!((latency.unwrap() - 5.0).abs() < 1e-9, "{latency:?}");
        playback.play_until(t0 + Duration::from_millis(6500));
        assert_eq!(playback.stalls, 1);
        // Nothing more comes: a second stall, counted once however long it lasts.
        playback.play_until(t0 + Duration::from_millis(8500));
        playback.play_until(t0 + Duration::from_millis(9500));
        assert_eq!(playback.stalls, 2);
        assert_eq!(playback.stalled_for, Duration::from_millis(3500));
    }

    #[test]
    fn playback_can_start_past_the_keyframe_it_loaded_from() {
        let part = |start: f64| Unit {
            url: String::new(),
            start,
            duration: 0.5,
            play_from: Some(201.2),
        };
        let t0 = Instant::now();
        let mut playback = Playback::default();
        // Parts from the keyframe at 200, playback from 201.2, once the buffer holds a
        // part's length past it.
        assert_eq!(playback.arrived(&part(200.0), t0, 201.6), None);
        assert_eq!(playback.arrived(&part(200.5), t0, 201.6), None);
        assert_eq!(playback.arrived(&part(201.0), t0, 201.6), None);
        assert_eq!(
            playback.arrived(&part(201.5), t0, 202.1),
            Some(202.1 - 201.2)
        );
        assert_eq!(playback.started, Some(t0));
        assert_eq!(playback.buffered_until, 202.0);
    }
}
