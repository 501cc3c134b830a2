//! End to end: the `estuary ingest` binary with real GStreamer pipelines, checked with ffprobe
//! and an independent MP4 parser, and a real HTTP receiver on 127.0.0.1.

mod support;

#[path = "ingest/http_output.rs"]
mod http_output;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use estuary_packager_core::cmaf::{self, CmafReader, Piece};
use estuary_proto::keycard::{Keycard, KeycardKey};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use support::{
    Running, Track, estuary, ffprobe_stream, free_port, http_get, require_tool, unix_now,
};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// One AAC frame at 48 kHz: how far an audio segment may start after the video's.
const AAC_FRAME_SECONDS: f64 = 1024.0 / 48_000.0;

#[test]
fn test_source_writes_three_aligned_cmaf_tracks() {
    require_tool("ffprobe", "ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let launched = unix_now();
    let status = estuary()
        .args([
            "ingest",
            "--source",
            "test",
            "--channel",
            "demo",
            "--renditions",
            "720,360",
        ])
        .args(["--duration", "12s", "--out"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "estuary ingest exited with {status}");

    assert_h264(&dir.path().join("v720.mp4"), 1280, 720);
    assert_h264(&dir.path().join("v360.mp4"), 640, 360);
    let a128 = ffprobe_stream(&dir.path().join("a128.mp4"));
    assert_eq!(
        (a128["codec_name"].as_str(), a128["sample_rate"].as_str()),
        (Some("aac"), Some("48000"))
    );

    let tracks: HashMap<&str, Track> = ["v720", "v360", "a128"]
        .into_iter()
        .map(|name| (name, Track::read(&dir.path().join(format!("{name}.mp4")))))
        .collect();
    for name in ["v720", "v360"] {
        let track = &tracks[name];
        assert!(
            track.segments.len() >= 4,
            "{name}: only {} segments",
            track.segments.len()
        );
        for (index, segment) in track.segments.iter().enumerate() {
            assert!(
                segment.starts_with_sync_sample,
                "{name} segment {index} starts without a keyframe"
            );
            // On the UTC grid: the segment number is floor(utc / 2 s), with no remainder.
            assert_eq!(
                segment.start % (2 * u64::from(track.timescale)),
                0,
                "{name} segment {index} is off the grid"
            );
        }
        let (last, whole) = track.segments.split_last().unwrap();
        for segment in whole {
            assert_eq!(
                segment.duration,
                2 * u64::from(track.timescale),
                "{name}: {segment:?} is not 2 s"
            );
            assert_eq!(
                (segment.samples, segment.chunks),
                (60, 6),
                "{name}: {segment:?}"
            );
        }
        assert!(last.duration <= 2 * u64::from(track.timescale));
    }
    let starts = |name: &str| -> Vec<f64> {
        tracks[name]
            .segments
            .iter()
            .map(|s| tracks[name].seconds(s.start))
            .collect()
    };
    assert_eq!(
        starts("v720"),
        starts("v360"),
        "the renditions' segments differ"
    );
    let audio = starts("a128");
    assert_eq!(audio.len(), starts("v720").len());
    for (video, audio) in starts("v720").iter().zip(&audio) {
        let lag = audio - video;
        assert!(
            (0.0..AAC_FRAME_SECONDS + 1e-6).contains(&lag),
            "audio segment starts {lag:.6} s after video's"
        );
    }
    // The packager's CMAF reader takes the ingest's output as it is.
    for (name, codec) in [
        ("v720", "avc1.64001f"),
        ("v360", "avc1.64001e"),
        ("a128", "mp4a.40.2"),
    ] {
        let bytes = std::fs::read(dir.path().join(format!("{name}.mp4"))).unwrap();
        let mut reader = CmafReader::new();
        let pieces = reader.push(&bytes).unwrap();
        reader.finish().unwrap();
        let Some(Piece::Header(header)) = pieces.first() else {
            panic!("{name} has no header")
        };
        let header = cmaf::parse_header(header.clone()).unwrap();
        assert_eq!(header.media.codec(), codec, "{name}");
        let chunks: Vec<cmaf::Chunk> = pieces[1..]
            .iter()
            .map(|piece| match piece {
                Piece::Chunk(bytes) => cmaf::parse_chunk(bytes.clone(), &header).unwrap(),
                Piece::Header(_) => panic!("{name} has a second header"),
            })
            .collect();
        assert_eq!(chunks.len(), tracks[name].chunks.len(), "{name}");
        assert_eq!(chunks[0].start, tracks[name].chunks[0].start, "{name}");
    }
    let first = starts("v720")[0];
    println!(
        "first segment at UTC {first:.3}, {:.3} s after launch; {} segments of 2 s per track",
        first - launched,
        tracks["v720"].segments.len()
    );
    // The first segment starts at the first boundary after the pipeline runs.
    assert!(
        (launched..launched + 5.0).contains(&first),
        "first tfdt {first} vs launch {launched}"
    );
}

fn assert_h264(path: &std::path::Path, width: u64, height: u64) {
    let stream = ffprobe_stream(path);
    let found = (
        stream["codec_name"].as_str(),
        stream["width"].as_u64(),
        stream["height"].as_u64(),
    );
    assert_eq!(
        found,
        (Some("h264"), Some(width), Some(height)),
        "{}",
        path.display()
    );
}

#[test]
fn file_source_loops_with_continuous_timestamps() {
    require_tool("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("three-seconds.mp4");
    let made = support::ffmpeg_test_pattern(3, false)
        .args([
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "30", "-c:a", "aac",
        ])
        .arg(&media)
        .status()
        .unwrap();
    assert!(made.success());
    let out = dir.path().join("out");
    let mut ingest = estuary();
    ingest
        .args(["ingest", "--source", "file", "--uri"])
        .arg(&media)
        .args(["--renditions", "360", "--duration", "10s", "--out"])
        .arg(&out);
    let status = support::status_within(&mut ingest, Duration::from_secs(120));
    assert!(status.success(), "estuary ingest exited with {status}");

    let video = Track::read(&out.join("v360.mp4"));
    let played = video.seconds(video.segments.iter().map(|s| s.duration).sum());
    assert!(
        played > 6.5,
        "only {played:.2} s of a 3 s file were sent: it did not loop twice"
    );
    for pair in video.segments.windows(2) {
        assert_eq!(
            pair[0].start + pair[0].duration,
            pair[1].start,
            "a gap or overlap in {pair:?}"
        );
        assert_eq!(
            pair[0].duration,
            2 * u64::from(video.timescale),
            "{:?} is not 2 s",
            pair[0]
        );
    }
    assert!(video.segments.iter().all(|s| s.starts_with_sync_sample));
    let audio = Track::read(&out.join("a128.mp4"));
    for pair in audio.chunks.windows(2) {
        let gap = audio.seconds(pair[1].start) - audio.seconds(pair[0].start + pair[0].duration);
        assert!(
            gap.abs() < 0.05,
            "audio jumps by {gap:.3} s between {pair:?}"
        );
    }
    println!("file of 3 s looped into {played:.2} s of continuous video");
}

/// A file shorter than a part, looped more than fifty times: the seams fall at every phase of
/// the part and segment grid, and every segment must still be whole, on the grid and 2 s long.
#[test]
fn file_source_looped_past_fifty_seams_keeps_every_segment_whole() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("short.mp4");
    // 0.7 s: 2.1 parts, so successive seams land at ten different phases of the part grid.
    let made = support::ffmpeg_test_pattern("0.7", false)
        .args([
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "30", "-c:a", "aac",
        ])
        .arg(&media)
        .status()
        .unwrap();
    assert!(made.success());
    let out = dir.path().join("out");
    let mut ingest = estuary();
    ingest
        .args(["ingest", "--source", "file", "--uri"])
        .arg(&media)
        .args(["--renditions", "360", "--duration", "37s", "--out"])
        .arg(&out);
    let status = support::status_within(&mut ingest, Duration::from_secs(180));
    assert!(status.success(), "estuary ingest exited with {status}");

    let video = Track::read(&out.join("v360.mp4"));
    let played = video.seconds(video.segments.iter().map(|s| s.duration).sum());
    let seams = (played / 0.7) as u32;
    assert!(seams >= 50, "only {seams} seams in {played:.2} s");
    let two_seconds = 2 * u64::from(video.timescale);
    let (last, whole) = video.segments.split_last().expect("segments");
    for (index, segment) in whole.iter().enumerate() {
        assert_eq!(
            (
                segment.start % two_seconds,
                segment.duration,
                segment.samples,
                segment.chunks
            ),
            (0, two_seconds, 60, 6),
            "segment {index} of {}: {segment:?}",
            video.segments.len()
        );
        assert!(
            segment.starts_with_sync_sample,
            "segment {index}: {segment:?}"
        );
    }
    assert!(last.duration <= two_seconds);
    for pair in video.chunks.windows(2) {
        assert_eq!(pair[0].start + pair[0].duration, pair[1].start, "{pair:?}");
    }
    let audio = Track::read(&out.join("a128.mp4"));
    for pair in audio.chunks.windows(2) {
        let gap = audio.seconds(pair[1].start) - audio.seconds(pair[0].start + pair[0].duration);
        assert!(
            gap.abs() < 0.05,
            "audio jumps by {gap:.3} s between {pair:?}"
        );
    }
    println!(
        "{seams} seams in {played:.2} s: {} whole segments of 2 s",
        whole.len()
    );
}

#[test]
fn srt_listener_takes_mpeg_ts_from_an_ffmpeg_caller() {
    require_tool("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut ingest = Running(
        estuary()
            .args([
                "ingest",
                "--source",
                "srt",
                "--uri",
                &format!("srt://127.0.0.1:{port}?mode=listener"),
            ])
            .args(["--renditions", "360", "--duration", "12s", "--out"])
            .arg(dir.path())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    // What OBS or a field encoder sends: H.264 and AAC in MPEG-TS, in real time.
    let sent = support::ffmpeg_test_pattern(11, true)
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            "30",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts"])
        .arg(format!("srt://127.0.0.1:{port}?mode=caller&pkt_size=1316"))
        .status()
        .unwrap();
    assert!(sent.success(), "ffmpeg could not send over SRT");
    let status = ingest.0.wait().unwrap();
    assert!(status.success(), "estuary ingest exited with {status}");
    let video = Track::read(&dir.path().join("v360.mp4"));
    let audio = Track::read(&dir.path().join("a128.mp4"));
    assert!(video.segments.len() >= 3, "{:?}", video.segments);
    assert!(video.segments.iter().all(|s| s.starts_with_sync_sample));
    let (_, whole) = video.segments.split_last().unwrap();
    assert!(
        whole
            .iter()
            .all(|s| s.duration == 2 * u64::from(video.timescale)),
        "{whole:?}"
    );
    let lag = audio.seconds(audio.segments[0].start) - video.seconds(video.segments[0].start);
    assert!(
        (0.0..AAC_FRAME_SECONDS + 1e-6).contains(&lag),
        "audio starts {lag:.6} s after video"
    );
    println!(
        "SRT: {} video segments of 2 s from an ffmpeg caller",
        whole.len()
    );
}

#[test]
fn missing_capture_device_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = estuary()
        .args([
            "ingest",
            "--source",
            "v4l2",
            "--device",
            "/dev/video9",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/dev/video9") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn missing_encoder_is_named_with_its_package() {
    if support::has_gstreamer_element("nvh264enc") {
        println!("this machine has NVENC: nothing is missing to report");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = estuary()
        .args(["ingest", "--encoder", "nvenc", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("nvh264enc") && stderr.contains("gstreamer1.0-plugins-bad"),
        "{stderr}"
    );
}

#[test]
fn probe_lists_sources_encoders_and_the_muxer() {
    let output = estuary().args(["ingest", "--probe"]).output().unwrap();
    assert!(output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "videotestsrc ok",
        "x264enc ok",
        "cmafmux ok",
        "H.264 encoders, best first",
    ] {
        assert!(
            report.contains(needle),
            "{needle:?} missing from:\n{report}"
        );
    }
}

#[test]
fn bad_config_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    std::fs::write(
        &config,
        "out = \"/tmp\"\n[[channel]]\nname = \"a\"\nrenditoins = [720]\n",
    )
    .unwrap();
    let output = estuary()
        .args(["ingest", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ingest.toml")
            && stderr.contains("line 4")
            && stderr.contains("renditoins"),
        "{stderr}"
    );
}
