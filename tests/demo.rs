//! End to end: `estuary demo` (ingest and packager in one process) played by real players:
//! ffprobe, ffmpeg and GStreamer's adaptive demuxer.

mod support;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Running, estuary, free_port, require_tool, wait_until_served};

#[test]
fn demo_plays_in_ffmpeg_and_gstreamer() {
    require_tool("ffprobe", "ffmpeg");
    require_tool("gst-launch-1.0", "gstreamer1.0-tools");
    let address = format!("127.0.0.1:{}", free_port());
    let mut demo = Running(
        estuary()
            .args(["demo", "--listen", &address])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let master = format!("http://{address}/live/demo/master.m3u8");
    // The master playlist is served once every track has a whole segment.
    wait_until_served(&master, Duration::from_secs(20));

    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,sample_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(&master)
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let streams = String::from_utf8_lossy(&probe.stdout);
    for expected in ["h264,1280,720", "h264,640,360", "aac,48000"] {
        assert!(
            streams.lines().any(|line| line.trim() == expected),
            "{expected} missing from:\n{streams}"
        );
    }

    let decode_started = Instant::now();
    let decoded = Command::new("ffmpeg")
        .args([
            "-v", "error", "-i", &master, "-map", "0:v:0", "-map", "0:a:0", "-t", "20", "-f",
            "null", "-",
        ])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&decoded.stderr);
    assert!(
        decoded.status.success() && errors.trim().is_empty(),
        "ffmpeg: {errors}"
    );
    println!(
        "ffmpeg decoded 20 s of LL-HLS in {:.1} s",
        decode_started.elapsed().as_secs_f64()
    );

    // GStreamer's adaptive demuxer (hlsdemux2, through playbin3) plays 20 s into fakesinks.
    let played = Command::new("timeout")
        .args([
            "-s",
            "INT",
            "22",
            "gst-launch-1.0",
            "-v",
            "playbin3",
            &format!("uri={master}"),
        ])
        .args([
            "video-sink=fakesink name=video silent=false sync=true",
            "audio-sink=fakesink sync=true",
        ])
        .env("GST_PLUGIN_FEATURE_RANK", "hlsdemux2:MAX")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&played.stdout);
    let frames: Vec<f64> = log
        .lines()
        .filter(|line| line.contains("video: last-message = chain"))
        .filter_map(|line| {
            let pts = line.split("pts: ").nth(1)?.split(',').next()?;
            let mut fields = pts.split(':');
            let hours: f64 = fields.next()?.parse().ok()?;
            let minutes: f64 = fields.next()?.parse().ok()?;
            let seconds: f64 = fields.next()?.parse().ok()?;
            Some(hours * 3600.0 + minutes * 60.0 + seconds)
        })
        .collect();
    assert!(
        !log.contains("ERROR") && !String::from_utf8_lossy(&played.stderr).contains("ERROR"),
        "{log}"
    );
    assert!(
        frames.len() >= 500,
        "GStreamer rendered {} frames in 20 s",
        frames.len()
    );
    let span = frames.last().unwrap() - frames.first().unwrap();
    println!(
        "GStreamer playbin3 rendered {} frames covering {span:.1} s of media",
        frames.len()
    );
    assert!(span >= 18.0, "only {span:.1} s of media played");

    assert!(demo.terminate(Duration::from_secs(15)).success());
    let mut printed = String::new();
    demo.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert!(
        printed.contains(&master),
        "the demo did not print {master}:\n{printed}"
    );
}
