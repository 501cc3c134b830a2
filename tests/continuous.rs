//! End to end: `estuary ingest --source test` into `estuary packager`, with `estuary edge` in
//! front, and the continuous streams (`/live/{channel}/stream.{ts,mp4,aac,mp3,webm}`, WebM from
//! a second channel in VP9 and Opus) read by ffprobe
//! and decoded by ffmpeg through the edge, as a viewer's player would, including one that joins
//! in the middle of a segment; GStreamer's playbin plays the radio stream (MP3), whose ICY
//! title ffprobe reads; many viewers of the edge cost the packager one; a viewer that stops
//! reading is dropped while the others play on; an edge behind the edge relays it too;
//! `estuary loadtest viewers --kind continuous`
//! watches stream.mp4 and measures each chunk's latency from capture.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use mp4_atom::{Any, DecodeMaybe};
use support::{Running, estuary, require_tool, start_packager};

/// The 2 s segments of the ingest's default.
const SEGMENT_SECONDS: f64 = 2.0;

/// GETs `path` and reads its body until at least `bytes` have come (or it ends), then hangs
/// up: the status, the headers and what was read.
async fn first_bytes(
    address: SocketAddr,
    path: &str,
    bytes: usize,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while read.len() < bytes {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{path}: only {} bytes in 15 s", read.len()));
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read.extend_from_slice(data);
                }
            }
            Some(Err(error)) => panic!("{path}: {error}"),
            None => break,
        }
    }
    (parts.status, parts.headers, read)
}

/// ffprobe or ffmpeg on `url`, giving up on a stalled read after 15 s: exit status, stdout,
/// stderr and how long it took.
fn run(program: &str, args: &[&str], url: &str, after: &[&str]) -> (bool, String, String, f64) {
    let started = Instant::now();
    let output = Command::new(program)
        .args(["-v", "error", "-rw_timeout", "15000000"])
        .args(args)
        .args(["-i", url])
        .args(after)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

/// The codec names ffprobe finds in `url`, in stream order.
fn probe(url: &str) -> (Vec<String>, f64) {
    let (ok, out, errors, seconds) = run(
        "ffprobe",
        &[],
        url,
        &["-show_entries", "stream=codec_name", "-of", "json"],
    );
    assert!(ok && errors.trim().is_empty(), "ffprobe {url}: {errors}");
    let parsed: serde_json::Value = serde_json::from_str(&out).expect("ffprobe JSON");
    let codecs = parsed["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("no streams in {url}: {out}"))
        .iter()
        .map(|stream| stream["codec_name"].as_str().unwrap_or("?").to_owned())
        .collect();
    (codecs, seconds)
}

/// GStreamer's playbin plays `url` for 12 s into a WAV file: it must have decoded at least 8 s
/// of sound, and sound that is not silence (the test source is a tone).
fn playbin_plays(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("radio.wav");
    let sink = format!(
        "audioconvert ! audio/x-raw,format=S16LE,rate=48000,channels=2 ! wavenc ! filesink location={}",
        wav.display()
    );
    let status = Command::new("timeout")
        .args(["-s", "INT", "12", "gst-launch-1.0", "-q", "-e", "playbin"])
        .arg(format!("uri={url}"))
        .arg("video-sink=fakesink")
        .arg(format!("audio-sink={sink}"))
        .stdin(Stdio::null())
        .status()
        .unwrap();
    let pcm = std::fs::read(&wav).unwrap_or_default();
    // 44 bytes of WAV header, then 4 bytes a sample frame at 48 kHz.
    let seconds = pcm.len().saturating_sub(44) as f64 / (48_000.0 * 4.0);
    let loudest = pcm
        .get(44..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|sample| i16::from_le_bytes([sample[0], sample[1]]).unsigned_abs())
        .max()
        .unwrap_or(0);
    assert!(
        seconds >= 8.0 && loudest > 1000,
        "playbin {url} ({status}): {seconds:.1} s of sound, loudest sample {loudest}"
    );
    println!("stream.mp3: playbin played {seconds:.1} s of sound in 12 s");
}

/// A metric's value in a Prometheus text page (the first sample whose name and labels are
/// `series`).
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Sleeps until the middle of a segment (UTC seconds, as the ingest's media time).
fn wait_for_mid_segment() {
    let into = support::unix_now() % SEGMENT_SECONDS;
    let wait = (SEGMENT_SECONDS / 2.0 - into).rem_euclid(SEGMENT_SECONDS);
    std::thread::sleep(Duration::from_secs_f64(wait));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_streams_play_from_the_packager() {
    require_tool("ffprobe", "ffmpeg");
    require_tool("ffmpeg", "ffmpeg");
    require_tool("curl", "curl");
    require_tool("gst-launch-1.0", "gstreamer1.0-tools");
    let test_started = Instant::now();
    // Titles need a credential: the admin token.
    const ADMIN_TOKEN: &str = "continuous-test-admin-token";
    let (mut packager, address) = start_packager(&["--admin-token", ADMIN_TOKEN]).await;
    let ingest = Running(
        support::test_ingest(address, &["--duration", "80s", "--audio", "aac,mp3"])
            .spawn()
            .unwrap(),
    );
    // A second channel in VP9 and Opus, for stream.webm.
    let webm_ingest = Running(
        estuary()
            .args([
                "ingest",
                "--source",
                "test",
                "--channel",
                "vp9",
                "--renditions",
                "360",
            ])
            .args([
                "--video-codec",
                "vp9",
                "--audio",
                "opus",
                "--duration",
                "100s",
            ])
            .arg("--to")
            .arg(format!("http://{address}/ingest"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (_edge, edge) =
        support::start_edge(address, &["--max-lag", "2s", "--client-timeout", "3s"]);
    // The channel is there once both tracks have a whole segment.
    let started = Instant::now();
    loop {
        let (status, _) = support::http_get(address, "/live/demo/master.m3u8").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the ingest's channel did not come"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Unknown channels and tracks are 404s with a reason.
    let (status, reason) = support::http_get(address, "/live/nothing/stream.ts").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reason}");
    let (status, reason) = support::http_get(address, "/live/demo/stream.ts?track=v9999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(reason.contains("v9999"), "{reason}");

    // The first bytes: the stream's header, as each format has it.
    let (status, headers, ts) =
        first_bytes(address, "/live/demo/stream.ts?track=v360", 4 * 188).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "video/mp2t");
    assert_eq!(headers["cache-control"], "no-store");
    let pid = |packet: &[u8]| u16::from(packet[1] & 0x1f) << 8 | u16::from(packet[2]);
    assert!(ts.chunks(188).take(4).all(|packet| packet[0] == 0x47));
    assert_eq!(
        (pid(&ts[..188]), pid(&ts[188..])),
        (0, 0x1000),
        "PAT, then PMT"
    );

    let (status, headers, mp4) = first_bytes(address, "/live/demo/stream.mp4", 256 << 10).await;
    assert_eq!(status, StatusCode::OK);
    // With its codecs, as MSE wants them.
    let mime = headers["content-type"].to_str().unwrap();
    assert!(
        mime.starts_with("video/mp4; codecs=\"avc1.") && mime.contains(",mp4a.40.2"),
        "{mime}"
    );
    assert_eq!(headers["cache-control"], "no-store");
    let mut cursor = &mp4[..];
    let mut kinds = Vec::new();
    let mut track_ids = Vec::new();
    let mut fragment_ids = Vec::new();
    while let Ok(Some(atom)) = Any::decode_maybe(&mut cursor) {
        match &atom {
            Any::Ftyp(_) => kinds.push("ftyp"),
            Any::Moov(moov) => {
                kinds.push("moov");
                track_ids = moov.trak.iter().map(|t| t.tkhd.track_id).collect();
            }
            Any::Moof(moof) => {
                kinds.push("moof");
                fragment_ids.push(moof.traf[0].tfhd.track_id);
            }
            Any::Mdat(_) => kinds.push("mdat"),
            _ => kinds.push("other"),
        }
    }
    assert_eq!(kinds[..4], ["ftyp", "moov", "moof", "mdat"], "{kinds:?}");
    assert!(!kinds[2..].contains(&"moov"), "one header: {kinds:?}");
    assert_eq!(track_ids, [1, 2], "video and audio in one moov");
    assert_eq!(fragment_ids[0], 1, "the video's keyframe first");
    // Audio comes in the order it lands, a part or so either side of the video.
    assert!(
        fragment_ids.contains(&2),
        "audio fragments too: {fragment_ids:?}"
    );

    let (status, headers, aac) = first_bytes(address, "/live/demo/stream.aac", 1024).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "audio/aac");
    assert_eq!((aac[0], aac[1] & 0xf6), (0xff, 0xf0), "an ADTS sync word");

    let (status, headers, mp3) = first_bytes(address, "/live/demo/stream.mp3", 1024).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "audio/mpeg");
    // An MPEG-1 Layer III frame header: sync, version 1, layer III.
    assert_eq!((mp3[0], mp3[1] & 0xfe), (0xff, 0xfa), "an MP3 frame header");

    // A radio's playout names what plays, as it would on Icecast; a player that asks for ICY
    // metadata gets it in the stream, from the packager and through the edge.
    let output = Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .arg(format!("http://{address}/admin/metadata?mount=/live/demo/stream.mp3&mode=updinfo&song=The+Band+-+Caf%C3%A9"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    for server in [address, edge] {
        let url = format!("http://{server}/live/demo/stream.mp3");
        let (ok, out, errors, _) = run(
            "ffprobe",
            &[],
            &url,
            &["-show_entries", "format_tags=StreamTitle", "-of", "csv=p=0"],
        );
        assert!(ok && errors.trim().is_empty(), "ffprobe {url}: {errors}");
        assert_eq!(
            out.trim(),
            "The Band - Café",
            "the title ffprobe read from {url}"
        );
    }
    println!("stream.mp3: ffprobe read the ICY title from the packager and through the edge");

    // Through the edge: ffprobe finds the codecs, and ffmpeg decodes twenty seconds of each
    // without an error; all four at once, as four viewers. Meanwhile playbin plays the radio.
    let formats = [
        ("ts", vec!["h264", "aac"]),
        ("mp4", vec!["h264", "aac"]),
        ("aac", vec!["aac"]),
        ("mp3", vec!["mp3"]),
    ];
    std::thread::scope(|scope| {
        let runs: Vec<_> = formats
            .iter()
            .map(|(extension, expected)| {
                let url = format!("http://{edge}/live/demo/stream.{extension}");
                scope.spawn(move || {
                    let (codecs, probe_seconds) = probe(&url);
                    assert_eq!(&codecs, expected, "ffprobe {url}");
                    let (ok, _, errors, seconds) =
                        run("ffmpeg", &["-nostdin"], &url, &["-t", "20", "-f", "null", "-"]);
                    assert!(ok && errors.trim().is_empty(), "ffmpeg {url}: {errors}");
                    println!(
                        "stream.{extension}: ffprobe {codecs:?} in {probe_seconds:.1} s; ffmpeg decoded 20 s in {seconds:.1} s"
                    );
                })
            })
            .collect();
        let radio = scope.spawn(|| playbin_plays(&format!("http://{edge}/live/demo/stream.mp3")));
        // While they play, the edge's /metrics counts a viewer of each stream, and the
        // packager's one (the edge) of each format.
        std::thread::sleep(Duration::from_secs(6));
        let page = |address: SocketAddr| {
            let output = Command::new("curl")
                .args(["-s", &format!("http://{address}/metrics")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let (packager_page, edge_page) = (page(address), page(edge));
        for extension in ["ts", "mp4", "aac", "mp3"] {
            let series = format!("estuary_packager_continuous_viewers{{format=\"{extension}\"}}");
            assert_eq!(
                metric(&packager_page, &series),
                Some(1.0),
                "{packager_page}"
            );
            let series =
                format!("estuary_edge_stream_viewers{{path=\"/live/demo/stream.{extension}\"}}");
            assert!(
                metric(&edge_page, &series).is_some_and(|n| n >= 1.0),
                "{edge_page}"
            );
        }
        for run in runs.into_iter().chain([radio]) {
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });

    // A viewer joining in the middle of a segment starts with a keyframe: its first video
    // packet is flagged as one, and its first frame decodes as an I frame.
    // The VP9 channel's WebM through the edge, like the others.
    let url = format!("http://{edge}/live/vp9/stream.webm");
    let (codecs, _) = probe(&url);
    assert_eq!(codecs, ["vp9", "opus"], "ffprobe {url}");
    let (ok, _, errors, seconds) = run(
        "ffmpeg",
        &["-nostdin"],
        &url,
        &["-t", "20", "-f", "null", "-"],
    );
    assert!(ok && errors.trim().is_empty(), "ffmpeg {url}: {errors}");
    println!("stream.webm: ffprobe {codecs:?}; ffmpeg decoded 20 s in {seconds:.1} s");

    for (channel, extension) in [("demo", "ts"), ("demo", "mp4"), ("vp9", "webm")] {
        wait_for_mid_segment();
        let url = format!("http://{edge}/live/{channel}/stream.{extension}");
        let (ok, out, errors, _) = run(
            "ffprobe",
            &["-select_streams", "v:0"],
            &url,
            &[
                "-show_entries",
                "packet=flags:frame=key_frame,pict_type",
                "-read_intervals",
                "%+#3",
                "-of",
                "csv",
            ],
        );
        assert!(ok && errors.trim().is_empty(), "ffprobe {url}: {errors}");
        let first = |kind: &str| {
            out.lines()
                .find(|line| line.starts_with(kind))
                .unwrap_or_else(|| panic!("no {kind} line from {url}:\n{out}"))
                .to_owned()
        };
        let (packet, frame) = (first("packet,"), first("frame,"));
        assert!(
            packet.starts_with("packet,K"),
            "stream.{extension} joined mid-segment begins with the packet {packet}"
        );
        assert_eq!(
            frame, "frame,1,I",
            "stream.{extension} joined mid-segment begins with the frame {frame}"
        );
    }
    // An edge behind the edge: it asks its upstream for the stream framed, as it asks a
    // packager.
    let (_second, second) = support::start_edge(edge, &[]);
    let (codecs, _) = probe(&format!("http://{second}/live/demo/stream.mp4"));
    assert_eq!(codecs, ["h264", "aac"], "stream.mp4 through two edges");
    println!("stream.mp4 through two edges: {codecs:?}");
    overflow(address, second).await;

    fan_out_and_slow_viewers(address, edge).await;
    virtual_viewers(edge);
    println!(
        "the whole test took {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
    drop((ingest, webm_ingest));
    assert!(packager.terminate(Duration::from_secs(10)).success());
}

/// Fifty viewers of the edge cost the packager one viewer; one of them that stops reading is
/// dropped (the edge runs with `--client-timeout 3s`) while the others keep getting the
/// stream.
async fn fan_out_and_slow_viewers(packager: SocketAddr, edge: SocketAddr) {
    use tokio::io::AsyncReadExt;
    const VIEWERS: usize = 50;
    let path = "/live/demo/stream.ts";
    let mut readers = Vec::new();
    for _ in 0..VIEWERS {
        let (mut stream, head) = support::open_viewer(edge, path, None).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: video/mp2t"), "{head}");
        readers.push(tokio::spawn(async move {
            // Reads for as long as the test runs: the bytes read and the longest wait.
            let mut buffer = vec![0u8; 64 << 10];
            let (mut read, mut longest) = (0usize, Duration::ZERO);
            let mut first = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                let waited = Instant::now();
                let count =
                    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                        .await
                    {
                        Ok(Ok(count)) if count > 0 => count,
                        _ => break,
                    };
                longest = longest.max(waited.elapsed());
                if first.len() < 188 {
                    first.extend_from_slice(&buffer[..count.min(188 - first.len())]);
                }
                read += count;
            }
            (read, longest, first)
        }));
    }
    // The stalled viewer: a small receive buffer, and it never reads.
    let (_stalled, head) = support::open_viewer(edge, "/live/demo/stream.mp4", Some(4096)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, packager_page) = support::http_get(packager, "/metrics").await;
    let (_, edge_page) = support::http_get(edge, "/metrics").await;
    let series = |name: &str| format!("{name}{{path=\"{path}\"}}");
    assert_eq!(
        metric(&edge_page, &series("estuary_edge_stream_viewers")),
        Some(VIEWERS as f64),
        "{edge_page}"
    );
    assert_eq!(
        metric(
            &packager_page,
            "estuary_packager_continuous_viewers{format=\"ts\"}"
        ),
        Some(1.0),
        "{VIEWERS} viewers of the edge are one of the packager: {packager_page}"
    );
    let mut total = 0;
    for reader in readers {
        let (read, longest, first) = reader.await.unwrap();
        assert_eq!(first.first(), Some(&0x47), "a TS packet first");
        assert!(read > 100_000, "a viewer read only {read} bytes in 8 s");
        assert!(
            longest < Duration::from_secs(2),
            "a viewer waited {longest:?}"
        );
        total += read;
    }
    println!(
        "{VIEWERS} viewers of {path} through the edge: {total} bytes in 8 s, one upstream viewer"
    );
    // By now the stalled viewer has filled its buffers and been dropped.
    let started = Instant::now();
    let drops = series("estuary_edge_stream_drops_total").replace(path, "/live/demo/stream.mp4");
    loop {
        let (_, edge_page) = support::http_get(edge, "/metrics").await;
        if metric(&edge_page, &drops).is_some_and(|n| n >= 1.0) {
            println!(
                "the viewer that stopped reading was dropped {:.1} s after the readers ended",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stalled viewer was not dropped: {edge_page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `estuary loadtest viewers --kind continuous`: 200 virtual viewers of stream.mp4 through the
/// edge for 10 s all get the stream, and the latency from each chunk's capture to its last
/// byte is measured (the target, a part plus 250 ms at the median, is checked by hand on a
/// quiet machine and recorded in PERFORMANCE.md, not here under the test suite's load).
fn virtual_viewers(edge: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("viewers.json");
    let text = support::run_ok(
        estuary()
            .args([
                "loadtest",
                "viewers",
                "--kind",
                "continuous",
                "--count",
                "200",
            ])
            .args(["--duration", "10s", "--url"])
            .arg(format!("http://{edge}/live/demo/stream.mp4"))
            .arg("--json")
            .arg(&json),
    );
    println!("{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["started"], 200, "{text}");
    assert_eq!(report["failures"], serde_json::json!({}), "{text}");
    // About 100 kB/s for 10 s each, less the start.
    assert!(
        report["kilobytes_per_viewer"]["p50"].as_f64().unwrap() > 300.0,
        "{text}"
    );
    let latency = &report["latency_ms"];
    let p50 = latency["p50"].as_f64().unwrap();
    assert!(
        p50 > 300.0 && p50 < 3000.0,
        "a part's duration at least, and live: {text}"
    );
}

/// An edge whose mount for stream.aac lets two viewers on sends the third to its overflow,
/// the same path there, and counts it; other streams of the edge have no limit.
async fn overflow(packager: SocketAddr, elsewhere: SocketAddr) {
    let mount = format!("/live/demo/stream.aac:stream-viewers=2,overflow=http://{elsewhere}");
    let (_full, full) = support::start_edge(packager, &["--mount", &mount]);
    let path = "/live/demo/stream.aac";
    let (_one, head) = support::open_viewer(full, path, None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_two, head) = support::open_viewer(full, path, None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_three, head) = support::open_viewer(full, path, None).await;
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    let location = format!("location: http://{elsewhere}{path}");
    assert!(head.contains(&location), "{head}");
    let mut others = Vec::new();
    for _ in 0..3 {
        let (viewer, head) = support::open_viewer(full, "/live/demo/stream.ts", None).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "stream.ts has no limit: {head}"
        );
        others.push(viewer);
    }
    let (_, page) = support::http_get(full, "/metrics").await;
    let refused = format!("estuary_edge_stream_refused_total{{path=\"{path}\"}}");
    assert_eq!(metric(&page, &refused), Some(1.0), "{page}");
    println!("the third viewer of a stream limited to two was sent to {location}");
}
