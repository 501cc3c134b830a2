//! The ingest worker: turns live sources into UTC-locked CMAF tracks (DESIGN.md "ingest").
//!
//! One GStreamer pipeline per channel: source -> effects -> tee -> per-rendition scale + encode
//! -> cmafmux -> appsink -> outputs (files, or DASH-IF live media ingest POSTs). This is the only
//! crate that links GStreamer.

pub mod admin;
pub mod catalog;
pub mod chunk_time;
pub mod config;
pub mod health;
pub mod mp3;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod supervisor;
pub mod timing;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use estuary_proto::keycard::KeycardKey;

use crate::catalog::VideoEncoder;
use crate::config::{Channel, OutputSpec, Source};
use crate::health::ChannelHealth;
use crate::output::{FileOutput, HttpOutput, HttpTarget, TrackOutput};
use crate::pipeline::TrackOutputs;
use crate::plan::{Encoders, PipelinePlan};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Config(String),
    #[error("{}: {reason}", path.display())]
    MissingFile { path: PathBuf, reason: String },
    #[error("GStreamer element {element} is missing: install the Debian package {package}")]
    MissingElement {
        element: String,
        package: &'static str,
    },
    #[error("no {wanted} encoder is available: install one of {options}")]
    NoEncoder { wanted: String, options: String },
    #[error(
        "video device {0} does not exist: plug the capture card or webcam in, \
         or list devices with `estuary ingest --probe`"
    )]
    MissingDevice(String),
    #[error("GStreamer could not start: {0}")]
    Init(String),
    #[error("channel {channel}: {reason}")]
    Pipeline { channel: String, reason: String },
    #[error("{target}: {reason}")]
    Output { target: String, reason: String },
}

/// Everything one `estuary ingest` run does.
#[derive(Clone, Debug)]
pub struct IngestRun {
    pub channels: Vec<Channel>,
    pub outputs: OutputSpec,
    /// Stop after this long (the last fragment is finished first).
    pub duration: Option<Duration>,
}

/// Starts GStreamer and registers the statically linked cmafmux; safe to call more than once.
pub fn init_gstreamer() -> Result<(), IngestError> {
    gst::init().map_err(|error| IngestError::Init(error.to_string()))?;
    gstfmp4::plugin_register_static().map_err(|error| IngestError::Init(error.to_string()))
}

/// Looks at the machine and decides each channel's pipeline: checks devices and files, picks
/// encoders, and checks every element the plan needs is installed.
pub fn plan(channel: &Channel) -> Result<(Channel, PipelinePlan), IngestError> {
    let mut channel = channel.clone();
    match &channel.source {
        Source::V4l2 { device, .. } if !Path::new(device).exists() => {
            return Err(IngestError::MissingDevice(device.clone()));
        }
        Source::File { uri } => {
            let uri = uri.clone();
            discover_streams(&mut channel, &uri)?
        }
        _ => {}
    }
    let video = if channel.renditions.is_empty() {
        None
    } else {
        Some(VideoEncoder::choose(channel.video_codec, channel.encoder)?)
    };
    let audio = match &channel.audio {
        Some(audio) => Some(catalog::choose_audio_encoder(audio.codec)?),
        None => None,
    };
    let plan = plan::plan_channel(&channel, Encoders { video, audio });
    for factory in plan.factories() {
        catalog::require(factory)?;
    }
    Ok((channel, plan))
}

/// Drops the video or audio side of a file channel when the file has none.
fn discover_streams(channel: &mut Channel, uri: &str) -> Result<(), IngestError> {
    let unreadable = |reason: String| IngestError::Pipeline {
        channel: channel.name.to_string(),
        reason: format!("cannot read {uri}: {reason}"),
    };
    let discoverer = gst_pbutils::Discoverer::new(gst::ClockTime::from_seconds(10))
        .map_err(|error| unreadable(error.to_string()))?;
    let info = discoverer
        .discover_uri(uri)
        .map_err(|error| unreadable(error.to_string()))?;
    let has_video = !info.video_streams().is_empty();
    let has_audio = !info.audio_streams().is_empty();
    if !has_video && !has_audio {
        return Err(unreadable("it has no audio or video stream".into()));
    }
    if !has_video {
        channel.renditions.clear();
    }
    if !has_audio {
        channel.audio = None;
    }
    Ok(())
}

/// Runs every channel until `duration` has passed or `shutdown` resolves, then stops them
/// cleanly. Fails when a channel could not run at all.
pub async fn run(
    run: IngestRun,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), IngestError> {
    init_gstreamer()?;
    let keycard_key = match &run.outputs.keycard_secret {
        Some(secret) => Some(
            KeycardKey::from_hex(run.outputs.keycard_key_id.as_deref(), secret)
                .map_err(|error| IngestError::Config(format!("--keycard-secret: {error}")))?,
        ),
        None => None,
    };
    let target = match &run.outputs.to {
        Some(url) => Some(HttpTarget::parse(url, keycard_key)?),
        None => None,
    };
    if target.is_none() && run.outputs.out.is_none() {
        return Err(IngestError::Config(
            "say where the tracks go: --out DIR, --to URL, or both".into(),
        ));
    }

    let mut planned = Vec::new();
    for (index, channel) in run.channels.iter().enumerate() {
        if run.channels[..index]
            .iter()
            .any(|earlier| earlier.name == channel.name)
        {
            return Err(IngestError::Config(format!(
                "channel {} is configured twice; channel names must differ",
                channel.name
            )));
        }
        planned.push(plan(channel)?);
    }

    let mut senders = Vec::new();
    let mut healths = Vec::new();
    let mut stops = Vec::new();
    let mut channels = tokio::task::JoinSet::new();
    let several = planned.len() > 1;
    for (channel, plan) in planned {
        let health = ChannelHealth::new(channel.name.clone(), channel.tracks().cloned());
        let mut outputs = Vec::new();
        for stats in &health.tracks {
            let mut track_outputs: Vec<Arc<dyn TrackOutput>> = Vec::new();
            if let Some(dir) = &run.outputs.out {
                let dir = if several {
                    dir.join(channel.name.as_str())
                } else {
                    dir.clone()
                };
                let (file, file_stats) =
                    FileOutput::create(&dir.join(format!("{}.mp4", stats.track)))?;
                stats
                    .outputs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(file_stats);
                track_outputs.push(Arc::new(file));
            }
            if let Some(target) = &target {
                let (http, http_stats, task) =
                    HttpOutput::start(target, &channel.name, &stats.track);
                stats
                    .outputs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(http_stats);
                track_outputs.push(Arc::new(http));
                senders.push(task);
            }
            outputs.push(TrackOutputs {
                stats: stats.clone(),
                outputs: track_outputs,
            });
        }
        let tracks: Vec<String> = channel.tracks().map(ToString::to_string).collect();
        let encoders: Vec<&str> = plan
            .factories()
            .into_iter()
            .filter(|f| f.contains("enc"))
            .collect();
        tracing::info!(channel = %channel.name, tracks = %tracks.join(","), encoders = %encoders.join(","), "starting");
        tracing::debug!(channel = %channel.name, pipeline = %plan, "gst-launch-1.0 description");
        let (stop, stopped) = std::sync::mpsc::channel();
        let name = channel.name.to_string();
        let job = supervisor::ChannelRun {
            channel,
            plan,
            health: health.clone(),
            outputs,
        };
        // A channel's supervisor blocks on its pipeline's bus: it gets a thread of its own.
        channels.spawn_blocking(move || {
            supervisor::run(job, stopped).map_err(|reason| IngestError::Pipeline {
                channel: name,
                reason,
            })
        });
        healths.push(health);
        stops.push(stop);
    }

    if let Some(address) = run.outputs.admin {
        let bound = admin::serve(address, healths.clone()).await?;
        tracing::info!(%bound, "admin endpoints /healthz and /metrics");
    }
    // Every channel's pipeline is started (each retries on its own): a service manager may count
    // the worker as up.
    estuary_proto::systemd::notify(estuary_proto::systemd::State::Ready);

    // Run until the duration has passed or a shutdown signal comes, then stop every channel;
    // a channel that fails on its own leaves the others running.
    let duration = async {
        match run.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(duration, shutdown);
    let mut first_failure = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            joined = channels.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => {
                    tracing::error!(%error, "channel stopped");
                    first_failure.get_or_insert(error);
                }
                Some(Err(panic)) => {
                    first_failure.get_or_insert(IngestError::Init(format!("a channel thread died: {panic}")));
                }
            },
            () = &mut duration, if !stopping => stopping = true,
            () = &mut shutdown, if !stopping => {
                tracing::info!("stopping");
                estuary_proto::systemd::notify(estuary_proto::systemd::State::Stopping);
                stopping = true;
            }
        }
        if stopping {
            for stop in stops.drain(..) {
                let _ = stop.send(());
            }
        }
    }
    // The outputs were finished by their channels: let the POSTs end cleanly.
    for sender in senders {
        let _ = tokio::time::timeout(Duration::from_secs(5), sender).await;
    }
    match first_failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The gst-launch-1.0 description of each channel, as `--print-pipeline` shows it.
pub fn describe(channels: &[Channel]) -> Result<Vec<(String, String)>, IngestError> {
    init_gstreamer()?;
    channels
        .iter()
        .map(|channel| {
            plan(channel).map(|(channel, plan)| (channel.name.to_string(), plan.to_string()))
        })
        .collect()
}

/// Element lookups for `estuary ingest --probe`.
pub fn probe_report() -> Result<String, IngestError> {
    init_gstreamer()?;
    Ok(catalog::probe_report())
}
