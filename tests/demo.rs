//! End to end: `estuary demo` (ingest and packager in one process) played by real players:
//! ffprobe, ffmpeg and GStreamer's adaptive demuxers, over LL-HLS, DASH and HLS-TS.

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
    let mpd = format!("http://{address}/live/demo/manifest.mpd");
    let ts = format!("http://{address}/live/demo/ts/master.m3u8");
    // The master playlist is served once every track has a whole segment.
    wait_until_served(&master, Duration::from_secs(20));

    // LL-HLS through playbin3's hlsdemux2 (the older hlsdemux renders nothing of the CMAF
    // playlist); DASH through playbin's dashdemux; HLS-TS, for old players,
    // through playbin's hlsdemux.
    for (name, url, playbin, demuxer) in [
        ("LL-HLS", &master, "playbin3", "hlsdemux2"),
        ("DASH", &mpd, "playbin", "dashdemux"),
        ("HLS-TS", &ts, "playbin", "hlsdemux"),
    ] {
        probe(name, url);
        decode(name, url);
        play_in_gstreamer(name, url, playbin, demuxer);
    }

    assert!(demo.terminate(Duration::from_secs(15)).success());
    let mut printed = String::new();
    demo.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    for url in [&master, &mpd, &ts] {
        assert!(
            printed.contains(url.as_str()),
            "the demo did not print {url}:\n{printed}"
        );
    }
}

/// ffprobe finds H.264 at 720p and 360p, and AAC.
fn probe(name: &str, url: &str) {
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,sample_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(url)
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let streams = String::from_utf8_lossy(&probe.stdout);
    for expected in ["h264,1280,720", "h264,640,360", "aac,48000"] {
        assert!(
            streams.lines().any(|line| line.trim() == expected),
            "{name}: {expected} missing from:\n{streams}"
        );
    }
}

/// ffmpeg decodes 20 s of the first video and the audio with nothing on its error output.
fn decode(name: &str, url: &str) {
    let started = Instant::now();
    let decoded = Command::new("ffmpeg")
        .args([
            "-v", "error", "-i", url, "-map", "0:v:0", "-map", "0:a:0", "-t", "20", "-f", "null",
            "-",
        ])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&decoded.stderr);
    assert!(
        decoded.status.success() && errors.trim().is_empty(),
        "{name}: ffmpeg: {errors}"
    );
    println!(
        "{name}: ffmpeg decoded 20 s in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// GStreamer plays 20 s into fakesinks, with `demuxer` preferred: it gets 26 s, as a player
/// starts a few seconds after it is opened, and the frames' timestamps show how much media
/// went through.
fn play_in_gstreamer(name: &str, url: &str, playbin: &str, demuxer: &str) {
    let played = Command::new("timeout")
        .args(["-s", "INT", "26", "gst-launch-1.0", "-v", playbin])
        .arg(format!("uri={url}"))
        .args([
            "video-sink=fakesink name=video silent=false sync=true",
            "audio-sink=fakesink sync=true",
        ])
        .env("GST_PLUGIN_FEATURE_RANK", format!("{demuxer}:MAX"))
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
        "{name}: {log}"
    );
    assert!(
        frames.len() >= 500,
        "{name}: GStreamer {demuxer} rendered {} frames",
        frames.len()
    );
    let span = frames.last().unwrap() - frames.first().unwrap();
    println!(
        "{name}: GStreamer {playbin} ({demuxer}) rendered {} frames covering {span:.1} s of media",
        frames.len()
    );
    assert!(span >= 20.0, "{name}: only {span:.1} s of media played");
}
