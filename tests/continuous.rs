//! End to end: `estuary ingest --source test` into `estuary packager`, and the packager's
//! continuous streams (`/live/{channel}/stream.{ts,mp4,aac}`) read by ffprobe and decoded by
//! ffmpeg, as a viewer's player would, including one that joins in the middle of a segment.

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
    let test_started = Instant::now();
    let (mut packager, address) = start_packager(&[]).await;
    let ingest = Running(
        estuary()
            .args(["ingest", "--source", "test", "--channel", "demo"])
            .args(["--renditions", "360", "--duration", "60s"])
            .arg("--to")
            .arg(format!("http://{address}/ingest"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
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
    assert_eq!(headers["content-type"], "video/mp4");
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

    // ffprobe finds the codecs, and ffmpeg decodes ten seconds of each without an error; all
    // three at once, as three viewers.
    let formats = [
        ("ts", vec!["h264", "aac"]),
        ("mp4", vec!["h264", "aac"]),
        ("aac", vec!["aac"]),
    ];
    std::thread::scope(|scope| {
        let runs: Vec<_> = formats
            .iter()
            .map(|(extension, expected)| {
                let url = format!("http://{address}/live/demo/stream.{extension}");
                scope.spawn(move || {
                    let (codecs, probe_seconds) = probe(&url);
                    assert_eq!(&codecs, expected, "ffprobe {url}");
                    let (ok, _, errors, seconds) =
                        run("ffmpeg", &["-nostdin"], &url, &["-t", "10", "-f", "null", "-"]);
                    assert!(ok && errors.trim().is_empty(), "ffmpeg {url}: {errors}");
                    println!(
                        "stream.{extension}: ffprobe {codecs:?} in {probe_seconds:.1} s; ffmpeg decoded 10 s in {seconds:.1} s"
                    );
                })
            })
            .collect();
        // While they play, /metrics counts a viewer of each format.
        std::thread::sleep(Duration::from_secs(6));
        let metrics = Command::new("curl")
            .args(["-s", &format!("http://{address}/metrics")])
            .output()
            .unwrap();
        let metrics = String::from_utf8_lossy(&metrics.stdout);
        for extension in ["ts", "mp4", "aac"] {
            let line = format!("estuary_packager_continuous_viewers{{format=\"{extension}\"}} ");
            let viewers: usize = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&line))
                .and_then(|count| count.parse().ok())
                .unwrap_or_else(|| panic!("no {line} in /metrics:\n{metrics}"));
            assert!(viewers >= 1, "{line}{viewers}");
        }
        for run in runs {
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });

    // A viewer joining in the middle of a segment starts with a keyframe: its first video
    // packet is flagged as one, and its first frame decodes as an I frame.
    for extension in ["ts", "mp4"] {
        wait_for_mid_segment();
        let url = format!("http://{address}/live/demo/stream.{extension}");
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
    println!(
        "the whole test took {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
    drop(ingest);
    assert!(packager.terminate(Duration::from_secs(10)).success());
}
