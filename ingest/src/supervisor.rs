//! Runs one channel's pipeline on its own thread: starts it, loops a file source seamlessly,
//! stops it cleanly on request, and starts it again after an error once it has worked before.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use gst::prelude::*;

use crate::config::Channel;
use crate::health::ChannelHealth;
use crate::pipeline::{self, Stopper, TrackOutputs};
use crate::plan::{self, PipelinePlan};

/// How long a stopping pipeline may take to drain its last fragment.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before restarting a pipeline that failed after it had worked.
const RESTART_DELAY: Duration = Duration::from_secs(2);
/// How long a stopping pipeline may stay silent (no frame encoded, no chunk made) before its
/// sources are told to end.
const NUDGE_AFTER: Duration = Duration::from_secs(3);
const LOOP_READY: &str = "estuary-loop-ready";

pub struct ChannelRun {
    pub channel: Channel,
    pub plan: PipelinePlan,
    pub health: Arc<ChannelHealth>,
    pub outputs: Vec<TrackOutputs>,
}

enum Outcome {
    /// Stopped on request (or the source ended) after draining.
    Finished,
    Failed(String),
}

/// Runs until `stop` says so. An error before any media was produced is returned: it is a
/// problem of configuration or hardware that retrying will not fix.
pub fn run(run: ChannelRun, stop: Receiver<()>) -> Result<(), String> {
    let ChannelRun {
        channel,
        plan,
        health,
        outputs,
    } = run;
    let result = loop {
        let (pipeline, stopper) = match pipeline::build(&channel, &plan, &health, &outputs) {
            Ok(built) => built,
            Err(error) => break Err(error),
        };
        let outcome = play(&channel, &pipeline, &stopper, &stop, &outputs);
        tracing::debug!(channel = %channel.name, "pipeline stopped, releasing it");
        let _ = pipeline.set_state(gst::State::Null);
        tracing::debug!(channel = %channel.name, "pipeline released");
        match outcome {
            Outcome::Finished => break Ok(()),
            Outcome::Failed(error) if !health.has_produced() => break Err(error),
            Outcome::Failed(error) => {
                tracing::warn!(channel = %channel.name, %error, "pipeline stopped, restarting it");
                health.set_failure(Some(error));
                health.restarts.fetch_add(1, Relaxed);
                match stop.recv_timeout(RESTART_DELAY) {
                    Err(RecvTimeoutError::Timeout) => health.set_failure(None),
                    _ => break Ok(()),
                }
            }
        }
    };
    for track in &outputs {
        for output in &track.outputs {
            output.finish();
        }
    }
    if let Err(error) = &result {
        health.set_failure(Some(error.clone()));
    }
    result
}

fn play(
    channel: &Channel,
    pipeline: &gst::Pipeline,
    stopper: &Stopper,
    stop: &Receiver<()>,
    tracks: &[TrackOutputs],
) -> Outcome {
    let Some(bus) = pipeline.bus() else {
        return Outcome::Failed("the pipeline has no bus".into());
    };
    let looping = channel.source.loops();
    let loop_pad = looping.then(|| hold_until_seek(pipeline)).flatten();
    if pipeline.set_state(gst::State::Playing).is_err() {
        return Outcome::Failed(
            first_error(&bus).unwrap_or_else(|| "the pipeline would not start".into()),
        );
    }
    let mut draining_since: Option<Instant> = None;
    let mut nudged = false;
    // Frames encoded and chunks made, over every track: a stopping pipeline that still moves is
    // draining (an encoder that fell behind under load catches up to the end point), and is
    // not nudged.
    let progress = || -> u64 {
        tracks
            .iter()
            .map(|track| {
                track.stats.frames_encoded.load(Relaxed) + track.stats.chunks.load(Relaxed)
            })
            .sum()
    };
    let mut moved = (progress(), Instant::now());
    loop {
        if draining_since.is_none() && !matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
            // The timing probes end every track on the next part boundary, and cmafmux
            // finishes its last fragment on the end of stream that follows.
            tracing::debug!(channel = %channel.name, "stopping");
            stopper.stop();
            draining_since = Some(Instant::now());
        }
        if let Some(since) = draining_since {
            if since.elapsed() > DRAIN_TIMEOUT {
                tracing::warn!(channel = %channel.name, "pipeline did not drain in time");
                return Outcome::Finished;
            }
            // A live source that sends nothing (an SRT listener nobody calls) never reaches the
            // probes: end it at its source. A file in pull mode must not be asked: it blocks.
            let now = progress();
            if now != moved.0 {
                moved = (now, Instant::now());
            }
            let silent = moved.1.elapsed() > NUDGE_AFTER && since.elapsed() > NUDGE_AFTER;
            if silent && !channel.source.loops() && !nudged {
                nudged = true;
                pipeline.send_event(gst::event::Eos::new());
            }
        }
        let Some(message) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match message.view() {
            gst::MessageView::Eos(_) if draining_since.is_some() => return Outcome::Finished,
            // Nobody asked it to end: the caller hung up, the camera or card went away.
            gst::MessageView::Eos(_) => {
                return Outcome::Failed("the source ended its stream".into());
            }
            gst::MessageView::Error(error) => return Outcome::Failed(describe_error(error)),
            gst::MessageView::Warning(warning) => {
                tracing::warn!(channel = %channel.name, source = ?warning.src().map(|s| s.name()), "{}", warning.error());
            }
            gst::MessageView::Application(message)
                if message.structure().is_some_and(|s| s.name() == LOOP_READY) =>
            {
                if let Some(pad) = &loop_pad {
                    // File time 0 is now: from here on the file plays in real time on UTC.
                    pipeline::set_pace_offset(pipeline, SystemTime::now());
                    seek_to_start(pad, gst::SeekFlags::FLUSH);
                }
            }
            // A non-flushing segment seek continues the running time: the loop is seamless.
            // Not while draining: the tracks have ended (or end at their next boundary), their
            // queues take nothing more, and the seek would wait for the demuxer's thread, which
            // waits for room in those queues, for ever.
            gst::MessageView::SegmentDone(_) if draining_since.is_none() => {
                if let Some(pad) = &loop_pad {
                    seek_to_start(pad, gst::SeekFlags::empty());
                }
            }
            _ => {}
        }
    }
}

/// A file source plays from a segment seek so that it ends with SEGMENT_DONE rather than EOS
/// and can be looped. The seek can only be made once the decoder's pads are linked: until then
/// the paced pads hold everything back, then one asks the bus thread to seek. A short file can
/// reach its end before the bus thread has seeked (on a loaded machine): that end of stream is
/// held back too, or it would end the channel before it began. Returns the pad to seek
/// through.
fn hold_until_seek(pipeline: &gst::Pipeline) -> Option<gst::Pad> {
    let pads: Vec<gst::Pad> = [plan::VIDEO_PACE, plan::AUDIO_PACE]
        .iter()
        .filter_map(|name| pipeline.by_name(name)?.static_pad("sink"))
        .collect();
    let seek_pad = pads.first()?.clone();
    for pad in &pads {
        let is_seek_pad = *pad == seek_pad;
        let bus = pipeline.bus()?;
        let asked = std::sync::atomic::AtomicBool::new(false);
        pad.add_probe(
            gst::PadProbeType::BUFFER
                | gst::PadProbeType::EVENT_FLUSH
                | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| match &info.data {
                Some(gst::PadProbeData::Event(event))
                    if event.type_() == gst::EventType::FlushStop =>
                {
                    gst::PadProbeReturn::Remove
                }
                Some(gst::PadProbeData::Event(event)) if event.type_() == gst::EventType::Eos => {
                    gst::PadProbeReturn::Drop
                }
                Some(gst::PadProbeData::Buffer(_)) => {
                    if is_seek_pad && !asked.swap(true, Relaxed) {
                        let _ = bus.post(gst::message::Application::new(
                            gst::Structure::new_empty(LOOP_READY),
                        ));
                    }
                    // Handled consumes the buffer; GStreamer 1.22 logs a CRITICAL when a probe on
                    // a sink pad drops a buffer pushed by a queue.
                    gst::PadProbeReturn::Handled
                }
                _ => gst::PadProbeReturn::Ok,
            },
        );
    }
    Some(seek_pad)
}

fn seek_to_start(pad: &gst::Pad, flush: gst::SeekFlags) {
    let seek = gst::event::Seek::new(
        1.0,
        flush | gst::SeekFlags::SEGMENT | gst::SeekFlags::ACCURATE,
        gst::SeekType::Set,
        gst::ClockTime::ZERO,
        gst::SeekType::None,
        gst::ClockTime::NONE,
    );
    if !pad.push_event(seek) {
        tracing::warn!("the file source refused to seek back to its start");
    }
}

fn first_error(bus: &gst::Bus) -> Option<String> {
    let message = bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(500),
        &[gst::MessageType::Error],
    )?;
    match message.view() {
        gst::MessageView::Error(error) => Some(describe_error(error)),
        _ => None,
    }
}

/// One line: the element that failed and what it said, without GStreamer's debug trace.
fn describe_error(error: &gst::message::Error) -> String {
    if let Some(details) = error.debug() {
        tracing::debug!(%details, "GStreamer error");
    }
    match error.src() {
        Some(source) => format!("{}: {}", source.name(), error.error()),
        None => error.error().to_string(),
    }
}
