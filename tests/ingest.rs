//! End to end: the `estuary ingest` binary with real GStreamer pipelines, checked with ffprobe
//! and an independent MP4 parser, and a real HTTP receiver on 127.0.0.1.

mod support;

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
    let status = estuary()
        .args(["ingest", "--source", "file", "--uri"])
        .arg(&media)
        .args(["--renditions", "360", "--duration", "10s", "--out"])
        .arg(&out)
        .status()
        .unwrap();
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
    let status = estuary()
        .args(["ingest", "--source", "file", "--uri"])
        .arg(&media)
        .args(["--renditions", "360", "--duration", "37s", "--out"])
        .arg(&out)
        .status()
        .unwrap();
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

/// What the receiver saw of one POST: its path, its keycard, and each piece of body with the
/// UTC time it arrived.
#[derive(Debug, Default, Clone)]
struct Post {
    path: String,
    authorization: Option<String>,
    transfer_encoding: Option<String>,
    pieces: Vec<(f64, Bytes)>,
    ended: bool,
}

impl Post {
    fn body(&self) -> Vec<u8> {
        self.pieces
            .iter()
            .flat_map(|(_, piece)| piece.iter().copied())
            .collect()
    }
}

type Posts = Arc<Mutex<Vec<Post>>>;

/// A DASH-IF ingest receiver: records every POST as it streams in; stopping it closes every
/// connection, as a crashed packager would.
struct Receiver {
    tasks: JoinSet<()>,
}

impl Receiver {
    async fn start(address: SocketAddr, posts: Posts) -> Receiver {
        let listener = TcpListener::bind(address).await.unwrap();
        let mut tasks = JoinSet::new();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            let _held = held;
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let posts = posts.clone();
                connections.lock().unwrap().spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let posts = posts.clone();
                        async move {
                            let index = {
                                let mut posts = posts.lock().unwrap();
                                posts.push(Post {
                                    path: request.uri().path().to_owned(),
                                    authorization: header(&request, "authorization"),
                                    transfer_encoding: header(&request, "transfer-encoding"),
                                    ..Default::default()
                                });
                                posts.len() - 1
                            };
                            let mut body = request.into_body();
                            while let Some(Ok(frame)) = body.frame().await {
                                if let Ok(data) = frame.into_data() {
                                    posts.lock().unwrap()[index].pieces.push((unix_now(), data));
                                }
                            }
                            posts.lock().unwrap()[index].ended = true;
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { tasks }
    }

    async fn stop(mut self) {
        // Aborting the accept loop drops the listener and, with it, every connection task.
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn header(request: &Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit_once(' '))
        .map(|(_, value)| value.parse().unwrap())
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_output_streams_chunks_and_survives_the_receiver_going_away() {
    const KEY: &str = "00112233445566778899aabbccddeeff";
    let receiver_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let posts: Posts = Arc::default();
    let receiver = Receiver::start(receiver_address, posts.clone()).await;
    let mut ingest = Running(
        estuary()
            .args(["ingest", "--source", "test", "--renditions", "360"])
            .arg(format!("--to=http://{receiver_address}/ingest"))
            .arg(format!("--admin={admin_address}"))
            .args(["--keycard-secret", KEY, "--keycard-key-id", "k1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // One POST per track, each with at least 4 s of media.
    let enough = |posts: &Posts| {
        let posts = posts.lock().unwrap();
        ["/ingest/demo/v360", "/ingest/demo/a128"]
            .iter()
            .all(|path| {
                posts.iter().filter(|p| p.path == *path).any(|p| {
                    let track = Track::parse(&p.body());
                    track.chunks.len() >= 12
                })
            })
    };
    wait_for(
        "4 s of media on both tracks",
        Duration::from_secs(25),
        || enough(&posts),
    )
    .await;
    let first: Vec<Post> = posts.lock().unwrap().clone();
    assert_eq!(
        first.len(),
        2,
        "one POST per track: {:?}",
        first.iter().map(|p| &p.path).collect::<Vec<_>>()
    );
    let keys = [KeycardKey::from_hex(Some("k1"), KEY).unwrap()];
    for post in &first {
        let body = post.body();
        assert_eq!(
            &body[4..8],
            b"ftyp",
            "{} does not start with the CMAF header",
            post.path
        );
        let keycard = post
            .authorization
            .as_deref()
            .and_then(|v| v.strip_prefix("Bearer "))
            .expect("a keycard");
        let card = Keycard::parse(keycard).unwrap();
        card.verify(&keys, &post.path, None, unix_now() as u64)
            .unwrap();

        // Latency from capture to delivery: a chunk's last sample was captured at its media end
        // time; it was delivered when the piece completing its bytes arrived.
        let track = Track::parse(&body);
        let mut offsets = Vec::new();
        let mut total = 0;
        for (arrived, piece) in &post.pieces {
            total += piece.len();
            offsets.push((total, *arrived));
        }
        let delivered: Vec<f64> = track
            .chunks
            .iter()
            .map(|chunk| {
                offsets
                    .iter()
                    .find(|(end, _)| *end >= chunk.end_offset)
                    .unwrap()
                    .1
            })
            .collect();
        let mut latencies: Vec<f64> = track
            .chunks
            .iter()
            .zip(&delivered)
            .map(|(chunk, arrived)| arrived - track.seconds(chunk.start + chunk.duration))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let median = latencies[latencies.len() / 2];
        let worst = latencies[latencies.len() - 1];
        // Chunks keep coming, one per part (1/3 s).
        let span = delivered.last().unwrap() - delivered.first().unwrap();
        let per_second = (delivered.len() - 1) as f64 / span.max(0.001);
        let longest_gap = delivered
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .fold(0.0, f64::max);
        println!(
            "{}: {} chunks, {per_second:.2} chunks/s, longest gap {:.0} ms, \
             capture-to-delivery latency median {:.0} ms, worst {:.0} ms",
            post.path,
            track.chunks.len(),
            longest_gap * 1000.0,
            median * 1000.0,
            worst * 1000.0
        );
        assert_eq!(
            post.transfer_encoding.as_deref(),
            Some("chunked"),
            "{}",
            post.path
        );
        assert!(
            longest_gap < 1.0,
            "{}: no data for {longest_gap:.3} s",
            post.path
        );
        assert!(
            per_second >= 2.7,
            "{}: {per_second:.2} chunks/s is fewer than one per part",
            post.path
        );
        assert!(
            worst < 2.0,
            "{}: a chunk arrived {worst:.3} s after its capture",
            post.path
        );
    }

    receiver.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        ingest.0.try_wait().unwrap().is_none(),
        "the ingest exited when its receiver went away"
    );
    let health = http_get(admin_address, "/healthz").await.1;
    assert!(
        health.contains("\"sad\""),
        "a lost receiver should make the channel sad: {health}"
    );

    let count_before = posts.lock().unwrap().len();
    let _receiver = Receiver::start(receiver_address, posts.clone()).await;
    let reconnected = wait_for("both tracks to reconnect", Duration::from_secs(10), || {
        let posts = posts.lock().unwrap();
        posts.len() >= count_before + 2
            && posts[count_before..].iter().all(|p| !p.pieces.is_empty())
    })
    .await;
    println!(
        "both tracks reconnected {:.0} ms after the receiver came back",
        reconnected.as_secs_f64() * 1000.0
    );
    assert!(
        reconnected < Duration::from_secs(2),
        "reconnecting took {reconnected:?}"
    );
    for post in &posts.lock().unwrap()[count_before..] {
        assert_eq!(
            &post.body()[4..8],
            b"ftyp",
            "{} resumed without the CMAF header",
            post.path
        );
    }

    let metrics = http_get(admin_address, "/metrics").await.1;
    assert!(
        metric(
            &metrics,
            "estuary_ingest_reconnects_total{channel=\"demo\",track=\"v360\",output=\"http\"}"
        ) >= 1
    );
    assert!(
        metric(
            &metrics,
            "estuary_ingest_frames_encoded_total{channel=\"demo\",track=\"v360\"}"
        ) > 100
    );
    assert!(
        metric(
            &metrics,
            "estuary_ingest_bytes_sent_total{channel=\"demo\",track=\"a128\",output=\"http\"}"
        ) > 10_000
    );

    // SIGTERM: the worker finishes its POSTs and exits cleanly.
    let status = ingest.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(
        posts.lock().unwrap()[count_before..]
            .iter()
            .all(|p| p.ended),
        "the POSTs were not ended"
    );
}
