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
//!   comes by a plain socket ([`stream`]): a wait of over a second between
//!   reads counts as a stall; `stream.mp4` also gives each chunk's live latency.
//!
//! Only the video rendition is loaded (players load audio beside it; the edge's answers for
//! it are the same kind of request).

mod dash;
mod fetch;
mod hls;
mod playback;
mod report;
pub mod stream;
pub mod tls;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use estuary_proto::url::{LiveObject, PublicPath, VodObject};
use serde::Serialize;
use tokio::time::Instant;

use fetch::Fetcher;
pub use fetch::resolve;
use playback::{Playback, Unit};
pub use report::Report;
use report::summarize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hls,
    Llhls,
    Dash,
    Continuous,
}

/// A kind name that is none of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?}: expected hls, llhls, dash or continuous")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(text: &str) -> Result<Kind, UnknownKind> {
        match text {
            "hls" => Ok(Kind::Hls),
            "llhls" => Ok(Kind::Llhls),
            "dash" => Ok(Kind::Dash),
            "continuous" => Ok(Kind::Continuous),
            _ => Err(UnknownKind(text.to_owned())),
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
    /// The certificates trusted for `https://` URLs; none: only `http://` is watched.
    pub trust: Option<tls::Trust>,
}

/// Why a viewer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: no answer in {waited:?}")]
    Silent { url: String, waited: Duration },
    #[error("{url}: {status}")]
    Status { url: String, status: String },
    #[error("{url}: too many redirects")]
    Redirects { url: String },
    #[error("{url}: {problem}")]
    Url { url: String, problem: &'static str },
    #[error("{url}: not text")]
    NotText { url: String },
    #[error("{url}: {problem}")]
    Head {
        url: String,
        problem: stream::BadHead,
    },
    #[error("{url}: {problem}")]
    Unplayable { url: String, problem: Unreadable },
    #[error("{url}: fell out of the window")]
    FellBehind { url: String },
    #[error("{url}: {path} is {what} of the public layout, which --kind {kind} does not play")]
    WrongKind {
        url: String,
        path: String,
        what: &'static str,
        kind: &'static str,
    },
    #[error("no data for {0:?}")]
    NoData(Duration),
    #[error("the server ended the stream")]
    Ended,
}

impl ViewerError {
    /// A request that failed, with the causes beneath the error (a client's "connect error"
    /// says little; the TLS or socket error under it says why).
    fn request(url: &str, reason: impl std::error::Error) -> ViewerError {
        let mut text = reason.to_string();
        let mut cause = reason.source();
        while let Some(next) = cause {
            text.push_str(": ");
            text.push_str(&next.to_string());
            cause = next.source();
        }
        ViewerError::Request {
            url: url.to_owned(),
            reason: text,
        }
    }
}

/// What a viewer found wrong with a playlist or a manifest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("{0}")]
    Playlist(&'static str),
    #[error("not XML: {0}")]
    NotXml(String),
    #[error("{0}")]
    Manifest(&'static str),
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hls => "hls",
            Kind::Llhls => "llhls",
            Kind::Dash => "dash",
            Kind::Continuous => "continuous",
        }
    }
}

/// A URL whose path is one of Estuary's public layout must name what the kind plays: a
/// multivariant playlist for hls and llhls, an MPD for dash, a continuous stream for
/// continuous. A path outside the layout (another server's) is left for the server to answer.
fn check_kind(url: &str, kind: Kind) -> Result<(), ViewerError> {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return Ok(());
    };
    let Ok(path) = PublicPath::parse(uri.path(), uri.query()) else {
        return Ok(());
    };
    let (plays, what) = match &path {
        PublicPath::Live { object, .. } => match object {
            LiveObject::Master | LiveObject::TsMaster => (
                matches!(kind, Kind::Hls | Kind::Llhls),
                "a multivariant playlist",
            ),
            LiveObject::Manifest => (kind == Kind::Dash, "a DASH manifest"),
            LiveObject::Stream { .. } => (kind == Kind::Continuous, "a continuous stream"),
            LiveObject::MediaPlaylist { .. } | LiveObject::TsMediaPlaylist { .. } => {
                (false, "a media playlist")
            }
            _ => (false, "a media object"),
        },
        PublicPath::Vod { object, .. } => match object {
            VodObject::Master => (kind == Kind::Hls, "an archive's multivariant playlist"),
            _ => (false, "an archive's media object"),
        },
        _ => (false, "no stream"),
    };
    if plays {
        Ok(())
    } else {
        Err(ViewerError::WrongKind {
            url: url.to_owned(),
            path: uri.path().to_owned(),
            what,
            kind: kind.name(),
        })
    }
}

/// One viewer's result.
#[derive(Default)]
pub(super) struct Outcome {
    pub startup: Option<Duration>,
    pub latencies: Vec<f64>,
    pub stalls: u64,
    pub stalled_for: Duration,
    pub requests: u64,
    pub bytes: u64,
    pub failure: Option<String>,
}

pub(super) fn utc_now() -> f64 {
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
        let (url, kind, trust) = (options.url.clone(), options.kind, options.trust.clone());
        let (progress, finished) = (progress.clone(), finished.clone());
        let stop = began + delay + options.duration;
        viewers.spawn(async move {
            tokio::time::sleep_until(began + delay).await;
            let outcome = view(&url, kind, stop, trust).await;
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

/// One viewer, until `stop`.
async fn view(url: &str, kind: Kind, stop: Instant, trust: Option<tls::Trust>) -> Outcome {
    if let Err(wrong) = check_kind(url, kind) {
        return Outcome {
            failure: Some(wrong.to_string()),
            ..Outcome::default()
        };
    }
    if kind == Kind::Continuous {
        let watched = stream::watch(url, stop, utc_now, trust.as_ref()).await;
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
    let mut fetcher = Fetcher::new(trust);
    let mut playback = Playback::starting(Instant::now());
    let mut latencies = Vec::new();
    let played = async {
        let mut on_unit = |unit: &Unit| {
            latencies.extend(playback.arrived(unit, Instant::now(), utc_now()));
        };
        match kind {
            Kind::Hls => hls::play_hls(&mut fetcher, url, false, &mut on_unit).await,
            Kind::Llhls => hls::play_hls(&mut fetcher, url, true, &mut on_unit).await,
            Kind::Dash => dash::play_dash(&mut fetcher, url, &mut on_unit).await,
            Kind::Continuous => unreachable!("watched above"),
        }
    };
    let failure = match tokio::time::timeout_at(stop, played).await {
        Ok(Err(reason)) => Some(reason.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_the_layout_must_name_what_the_kind_plays() {
        let edge = "http://127.0.0.1:8090";
        for (path, kind) in [
            ("/live/demo/master.m3u8", Kind::Hls),
            ("/live/demo/master.m3u8?keycard=k", Kind::Llhls),
            ("/live/demo/manifest.mpd", Kind::Dash),
            ("/live/demo/stream.mp4", Kind::Continuous),
            ("/live/demo/stream.ts?track=v360", Kind::Continuous),
            // Another server's paths are its own business (Icecast's mounts, say).
            ("/radio.mp3", Kind::Continuous),
            ("/hls/index.m3u8", Kind::Llhls),
        ] {
            assert!(check_kind(&format!("{edge}{path}"), kind).is_ok(), "{path}");
        }
        for (path, kind, says) in [
            (
                "/live/demo/master.m3u8",
                Kind::Dash,
                "a multivariant playlist",
            ),
            ("/live/demo/manifest.mpd", Kind::Hls, "a DASH manifest"),
            (
                "/live/demo/v720/media.m3u8",
                Kind::Llhls,
                "a media playlist",
            ),
            ("/live/demo/stream.aac", Kind::Hls, "a continuous stream"),
            ("/healthz", Kind::Continuous, "no stream"),
        ] {
            let error = check_kind(&format!("{edge}{path}"), kind)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(says) && error.contains(kind.name()),
                "{path}: {error}"
            );
        }
    }
}
