//! A channel's plan made real: the GStreamer pipeline on a UTC clock, with the probes that lock
//! media time to UTC and the appsinks that hand CMAF to the outputs.
//!
//! The pipeline runs on the system's real-time clock with a base time of zero, so a running time
//! is nanoseconds since the Unix epoch: live sources stamp buffers with their capture time in
//! UTC, and cmafmux writes that time into every fragment's `tfdt`. Sources that are not live
//! (the test pattern, files) get an offset from their media time to UTC on their pads, and a
//! clocksync paces them.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use gst::prelude::*;
use gst_app::AppSink;

use crate::chunk_time;
use crate::config::Channel;
use crate::health::{ChannelHealth, TrackStats};
use crate::mp3::Mp3Fragmenter;
use crate::output::{TrackEvent, TrackOutput};
use crate::plan::{self, PipelinePlan};
use crate::timing::{
    Admission, EndPoint, FrameSnapper, Kind, SegmentOpener, Split, Splitter, StartGate, UtcGrid,
};
use estuary_proto::utc::UtcTime;

/// The outputs of one track.
pub struct TrackOutputs {
    pub stats: Arc<TrackStats>,
    pub outputs: Vec<Arc<dyn TrackOutput>>,
}

/// Asks a running pipeline to end every track on the next part boundary.
#[derive(Clone)]
pub struct Stopper(Arc<Mutex<EndPoint>>);

impl Stopper {
    pub fn stop(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).request();
    }

    fn is_past(&self, utc_ns: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_past(utc_ns)
    }

    /// Whether a buffer at `utc_ns` is past the end; pushes end-of-stream on `pad` for the
    /// first such buffer.
    fn ends_before(&self, pad: &gst::Pad, utc_ns: u64, ended: &AtomicBool) -> bool {
        let past = self.is_past(utc_ns);
        if past && !ended.swap(true, Relaxed) {
            pad.push_event(gst::event::Eos::new());
        }
        past
    }
}

/// Builds the pipeline of `channel` from its plan, ready to be set playing.
pub fn build(
    channel: &Channel,
    plan: &PipelinePlan,
    health: &Arc<ChannelHealth>,
    outputs: &[TrackOutputs],
) -> Result<(gst::Pipeline, Stopper), String> {
    let pipeline = gst::parse::launch(&plan.to_string())
        .map_err(|error| error.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "the plan did not describe a pipeline".to_owned())?;

    let clock = gst::glib::Object::builder::<gst::SystemClock>()
        .property("clock-type", gst::ClockType::Realtime)
        .build();
    pipeline.use_clock(Some(&clock));
    pipeline.set_start_time(gst::ClockTime::NONE);
    pipeline.set_base_time(gst::ClockTime::ZERO);

    if channel.source.is_paced() {
        // Media time 0 of a paced source is now on the UTC timeline; clocksync then plays it in
        // real time. (A looping file sets this again when it starts its first loop.)
        set_pace_offset(&pipeline, SystemTime::now());
    }

    let grid = UtcGrid::new(channel.segment, channel.parts_per_segment);
    let stopper = Stopper(Arc::new(Mutex::new(EndPoint::new(grid))));
    let gate = Arc::new(Mutex::new(StartGate::new(
        grid,
        !channel.renditions.is_empty(),
        channel.audio.is_some(),
    )));

    if !channel.renditions.is_empty() {
        let timing = element(&pipeline, plan::VIDEO_TIMING)?;
        let overlay = pipeline.by_name(plan::CLOCK_OVERLAY);
        let snapper = FrameSnapper::new(channel.framerate.0, channel.framerate.1);
        attach_video_timing(
            &timing,
            gate.clone(),
            stopper.clone(),
            grid,
            snapper,
            overlay,
        )?;
    }
    if channel.audio.is_some() {
        let timing = element(&pipeline, plan::AUDIO_TIMING)?;
        attach_audio_timing(&timing, gate, stopper.clone())?;
    }

    for track in outputs {
        let name = track.stats.track.as_str();
        let encoder = element(&pipeline, &plan::encoder_name(name))?;
        count_frames(&encoder, track.stats.clone())?;
        let sink = element(&pipeline, &plan::sink_name(name))?
            .downcast::<AppSink>()
            .map_err(|_| format!("{} is not an appsink", plan::sink_name(name)))?;
        if channel
            .mp3
            .as_ref()
            .is_some_and(|mp3| mp3.track.as_str() == name)
        {
            deliver_mp3(&sink, grid, stopper.clone(), health.clone(), track);
            continue;
        }
        let mux = element(&pipeline, &plan::muxer_name(name))?;
        attach_splitter(&mux, grid, stopper.clone())?;
        deliver(
            &sink,
            grid,
            health.clone(),
            track.stats.clone(),
            track.outputs.clone(),
        );
    }
    Ok((pipeline, stopper))
}

/// Maps media time 0 of a paced source to `zero` on the UTC timeline.
pub fn set_pace_offset(pipeline: &gst::Pipeline, zero: SystemTime) {
    let offset = zero
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64;
    for pace in [plan::VIDEO_PACE, plan::AUDIO_PACE] {
        if let Some(sink) = pipeline.by_name(pace).and_then(|e| e.static_pad("sink")) {
            sink.set_offset(offset);
        }
    }
}

fn element(pipeline: &gst::Pipeline, name: &str) -> Result<gst::Element, String> {
    pipeline
        .by_name(name)
        .ok_or_else(|| format!("the pipeline has no element {name}"))
}

fn src_pad(element: &gst::Element) -> Result<gst::Pad, String> {
    element
        .static_pad("src")
        .ok_or_else(|| format!("{} has no src pad", element.name()))
}

/// The running time (= UTC nanoseconds) of a buffer leaving `pad`.
fn running_time(
    pad: &gst::Pad,
    buffer: &gst::BufferRef,
) -> Option<(u64, gst::FormattedSegment<gst::ClockTime>)> {
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = segment.segment().downcast_ref::<gst::ClockTime>()?.clone();
    let running = segment.to_running_time(buffer.pts()?)?;
    Some((running.nseconds(), segment))
}

/// Video: start on the channel's first segment boundary, put frames on the UTC frame grid,
/// burn in their time, and force a keyframe on every segment boundary (through the tee, so in
/// every rendition alike).
fn attach_video_timing(
    timing: &gst::Element,
    gate: Arc<Mutex<StartGate>>,
    stopper: Stopper,
    grid: UtcGrid,
    snapper: FrameSnapper,
    overlay: Option<gst::Element>,
) -> Result<(), String> {
    let pad = src_pad(timing)?;
    let fresh = (snapper, SegmentOpener::new(grid));
    let state = Mutex::new(fresh.clone());
    let ended = AtomicBool::new(false);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_FLUSH,
        move |pad, info| {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            let buffer = match &mut info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => buffer,
                Some(gst::PadProbeData::Event(event)) => {
                    if event.type_() == gst::EventType::FlushStop {
                        *state = fresh.clone();
                    }
                    return gst::PadProbeReturn::Ok;
                }
                _ => return gst::PadProbeReturn::Ok,
            };
            let Some((captured, segment)) = running_time(pad, buffer) else {
                return gst::PadProbeReturn::Drop;
            };
            let (snapper, opener) = &mut *state;
            let Some(snapped) = snapper.snap(captured) else {
                return gst::PadProbeReturn::Drop;
            };
            let admission = gate.lock().unwrap_or_else(|e| e.into_inner()).admit(
                Kind::Video,
                snapped,
                snapper.frame_duration_ns(),
            );
            tracing::trace!(captured, snapped, ?admission, "video frame");
            if admission == Admission::Drop || stopper.ends_before(pad, snapped, &ended) {
                return gst::PadProbeReturn::Drop;
            }
            let placed = opener.place(snapped);
            let Some(pts) =
                segment.position_from_running_time(gst::ClockTime::from_nseconds(placed.utc_ns))
            else {
                return gst::PadProbeReturn::Drop;
            };
            {
                let buffer = buffer.make_mut();
                buffer.set_pts(pts);
                buffer.set_dts(gst::ClockTime::NONE);
                buffer.set_duration(gst::ClockTime::from_nseconds(snapper.frame_duration_ns()));
            }
            if let Some(overlay) = &overlay {
                overlay.set_property("text", UtcTime::from_unix_nanos(placed.utc_ns).iso8601());
            }
            if placed.opens_segment {
                if placed.utc_ns != snapped {
                    tracing::debug!(
                        snapped,
                        "a late frame opening a segment goes on its boundary"
                    );
                }
                let keyframe = gst_video::DownstreamForceKeyUnitEvent::builder()
                    .running_time(gst::ClockTime::from_nseconds(placed.utc_ns))
                    .all_headers(true)
                    .build();
                pad.push_event(keyframe);
            }
            gst::PadProbeReturn::Ok
        },
    );
    Ok(())
}

/// Audio: start on the channel's first segment boundary, clipping the buffer that straddles it
/// so the audio track begins exactly there.
fn attach_audio_timing(
    timing: &gst::Element,
    gate: Arc<Mutex<StartGate>>,
    stopper: Stopper,
) -> Result<(), String> {
    let pad = src_pad(timing)?;
    let ended = AtomicBool::new(false);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let Some((start_ns, segment)) = running_time(pad, buffer) else {
            return gst::PadProbeReturn::Drop;
        };
        let Some(audio) = pad
            .current_caps()
            .and_then(|c| gst_audio::AudioInfo::from_caps(&c).ok())
        else {
            return gst::PadProbeReturn::Drop;
        };
        let frames = buffer.size() as u64 / u64::from(audio.bpf().max(1));
        let duration_ns = frames * 1_000_000_000 / u64::from(audio.rate().max(1));
        let admission = gate.lock().unwrap_or_else(|e| e.into_inner()).admit(
            Kind::Audio,
            start_ns,
            duration_ns,
        );
        tracing::trace!(start_ns, duration_ns, ?admission, "audio buffer");
        if stopper.ends_before(pad, start_ns, &ended) {
            return gst::PadProbeReturn::Drop;
        }
        match admission {
            Admission::Drop => gst::PadProbeReturn::Drop,
            Admission::Pass { start } if start_ns < start => {
                let mut clip = segment.clone();
                clip.set_start(
                    segment.position_from_running_time(gst::ClockTime::from_nseconds(start)),
                );
                match gst_audio::audio_buffer_clip(
                    buffer.clone(),
                    clip.upcast_ref(),
                    audio.rate(),
                    audio.bpf(),
                ) {
                    Some(clipped) => {
                        *buffer = clipped;
                        gst::PadProbeReturn::Ok
                    }
                    None => gst::PadProbeReturn::Drop,
                }
            }
            Admission::Pass { .. } => gst::PadProbeReturn::Ok,
        }
    });
    Ok(())
}

/// Tells cmafmux (in manual-split mode) where each part and segment begins on the UTC grid.
fn attach_splitter(mux: &gst::Element, grid: UtcGrid, stopper: Stopper) -> Result<(), String> {
    let mux_sink = mux
        .sink_pads()
        .into_iter()
        .next()
        .ok_or("cmafmux has no sink pad")?;
    let feeder = mux_sink.peer().ok_or("nothing feeds cmafmux")?;
    let splitter = Mutex::new(Splitter::new(grid));
    feeder.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_FLUSH,
        move |pad, info| {
            let buffer = match &info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => buffer,
                Some(gst::PadProbeData::Event(event)) => {
                    if event.type_() == gst::EventType::FlushStop {
                        *splitter.lock().unwrap_or_else(|e| e.into_inner()) = Splitter::new(grid);
                    }
                    return gst::PadProbeReturn::Ok;
                }
                _ => return gst::PadProbeReturn::Ok,
            };
            let Some((utc, _)) = running_time(pad, buffer) else {
                return gst::PadProbeReturn::Ok;
            };
            if stopper.is_past(utc) {
                // An encoder flushing at the end may emit a frame that starts past it.
                return gst::PadProbeReturn::Drop;
            }
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let split = splitter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .split_before(utc, keyframe);
            let chunk = match split {
                Split::None => return gst::PadProbeReturn::Ok,
                Split::Chunk => true,
                Split::Fragment => {
                    tracing::debug!(pad = %pad.name(), utc, keyframe, "segment starts");
                    if !keyframe {
                        tracing::warn!(pad = %pad.name(), "segment starts without a keyframe");
                    }
                    false
                }
                Split::AwaitKeyframe => {
                    // The keyframe forced at the boundary did not come: ask the encoder for
                    // one now, and start the segment on it.
                    tracing::debug!(pad = %pad.name(), utc, "segment waits for a keyframe");
                    let request = gst_video::UpstreamForceKeyUnitEvent::builder()
                        .all_headers(true)
                        .build();
                    pad.send_event(request);
                    return gst::PadProbeReturn::Ok;
                }
            };
            pad.push_event(split_now(chunk));
            gst::PadProbeReturn::Ok
        },
    );
    Ok(())
}

/// cmafmux's request to cut before the next buffer: a chunk, or a whole fragment.
fn split_now(chunk: bool) -> gst::Event {
    gst::event::CustomDownstream::new(
        gst::Structure::builder("FMP4MuxSplitNow")
            .field("chunk", chunk)
            .build(),
    )
}

fn count_frames(encoder: &gst::Element, stats: Arc<TrackStats>) -> Result<(), String> {
    src_pad(encoder)?.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        stats
            .frames_encoded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Hands what cmafmux pushes to the track's outputs: the header once, then one event per
/// CMAF chunk (cmafmux pushes each chunk as one buffer list).
fn deliver(
    sink: &AppSink,
    grid: UtcGrid,
    health: Arc<ChannelHealth>,
    stats: Arc<TrackStats>,
    outputs: Vec<Arc<dyn TrackOutput>>,
) {
    // The track's timescale, from its header: chunks are placed on the grid by their own
    // timestamps (see `chunk_time` for why not by the sample's segment).
    let mut timescale = None;
    let callbacks = gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let buffers: Vec<gst::Buffer> = match (sample.buffer_list(), sample.buffer()) {
                (Some(list), _) => list.iter_owned().collect(),
                (None, Some(buffer)) => vec![buffer.to_owned()],
                (None, None) => return Ok(gst::FlowSuccess::Ok),
            };
            for mut event in cmaf_events(&buffers) {
                if let TrackEvent::Header(header) = &event {
                    timescale = chunk_time::header_timescale(header);
                }
                if let TrackEvent::Chunk {
                    data,
                    fragment_start,
                } = &mut event
                {
                    let start =
                        timescale.and_then(|timescale| chunk_time::chunk_start_ns(data, timescale));
                    if start.is_some_and(|utc| grid.position(utc).part != 0) {
                        if *fragment_start {
                            tracing::debug!(start, "a fragment off the segment grid stays a chunk");
                        }
                        // At EOS cmafmux puts a `styp` (with CMAF's last-segment brand) before
                        // the final partial part, which would make it look like a segment of
                        // its own that does not start on a keyframe: keep it a plain chunk.
                        *data = strip_styp(data);
                        *fragment_start = false;
                    }
                    health.chunk_produced(&stats);
                }
                for output in &outputs {
                    output.push(&event);
                }
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .build();
    sink.set_callbacks(callbacks);
}

/// Hands the MP3 track's frames to its outputs, cut into the header and chunks on the UTC grid
/// by an [`Mp3Fragmenter`]; frames past the stop point are left out, and the part being
/// gathered goes out at the end of the stream.
fn deliver_mp3(
    sink: &AppSink,
    grid: UtcGrid,
    stopper: Stopper,
    health: Arc<ChannelHealth>,
    track: &TrackOutputs,
) {
    let fragmenter = Arc::new(Mutex::new(Mp3Fragmenter::new(grid)));
    let hand_out = {
        let stats = track.stats.clone();
        let outputs = track.outputs.clone();
        move |events: Vec<TrackEvent>| {
            for event in events {
                if matches!(event, TrackEvent::Chunk { .. }) {
                    health.chunk_produced(&stats);
                }
                for output in &outputs {
                    output.push(&event);
                }
            }
        }
    };
    let hand_out = Arc::new(hand_out);
    let at_end = (fragmenter.clone(), hand_out.clone());
    let callbacks = gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let (Some(buffer), Some(segment)) = (
                sample.buffer(),
                sample
                    .segment()
                    .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned()),
            ) else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let Some(utc) = buffer.pts().and_then(|pts| segment.to_running_time(pts)) else {
                return Ok(gst::FlowSuccess::Ok);
            };
            if stopper.is_past(utc.nseconds()) {
                return Ok(gst::FlowSuccess::Ok);
            }
            let frame = copy_out(std::slice::from_ref(&buffer.to_owned()));
            let events = fragmenter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(frame, utc.nseconds());
            hand_out(events);
            Ok(gst::FlowSuccess::Ok)
        })
        .eos(move |_| {
            let (fragmenter, hand_out) = &at_end;
            let last = fragmenter.lock().unwrap_or_else(|e| e.into_inner()).flush();
            hand_out(last.into_iter().collect());
        })
        .build();
    sink.set_callbacks(callbacks);
}

/// The chunk without its leading `styp` box, if it has one.
fn strip_styp(chunk: &Bytes) -> Bytes {
    let size = chunk
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match (size, chunk.get(4..8)) {
        (Some(size), Some(b"styp")) if size >= 8 && size <= chunk.len() => chunk.slice(size..),
        _ => chunk.clone(),
    }
}

/// Splits one push of cmafmux into the header (flagged DISCONT | HEADER) and the chunk after it.
fn cmaf_events(buffers: &[gst::Buffer]) -> Vec<TrackEvent> {
    let mut events = Vec::new();
    let mut rest = buffers;
    if let Some((first, after)) = rest.split_first()
        && first
            .flags()
            .contains(gst::BufferFlags::DISCONT | gst::BufferFlags::HEADER)
    {
        events.push(TrackEvent::Header(copy_out(std::slice::from_ref(first))));
        rest = after;
    }
    if let Some(first) = rest.first() {
        events.push(TrackEvent::Chunk {
            fragment_start: !first.flags().contains(gst::BufferFlags::DELTA_UNIT),
            data: copy_out(rest),
        });
    }
    events
}

fn copy_out(buffers: &[gst::Buffer]) -> Bytes {
    let mut out = BytesMut::with_capacity(buffers.iter().map(|b| b.size()).sum());
    for buffer in buffers {
        if let Ok(map) = buffer.map_readable() {
            out.extend_from_slice(map.as_slice());
        }
    }
    out.freeze()
}
