//! End to end: the `estuary packager` binary on 127.0.0.1, fed by this test acting as an
//! ingest (CMAF made by ffmpeg, streamed as one chunked POST) and read by this test acting as
//! an LL-HLS player.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use estuary_packager_core::cmaf::{self, CmafReader, Piece};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use support::{estuary, http_get, require_tool, start_packager};
use tokio::sync::mpsc;

/// A request body fed chunk by chunk (sent chunked, as an ingest does).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(context)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// Starts one long chunked POST to `path`, as an ingest does: what is sent on the returned
/// channel goes out as the body; the task ends with the packager's answer.
async fn open_ingest(
    address: SocketAddr,
    path: &str,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>,
) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let (body, receiver) = mpsc::channel(4);
    let request = Request::post(path)
        .header("host", "localhost")
        .body(ChannelBody(receiver))
        .unwrap();
    (
        body,
        tokio::spawn(async move { sender.send_request(request).await }),
    )
}

/// POSTs `body` in one piece (with `authorization` when given) and returns the answer.
async fn post(
    address: SocketAddr,
    path: &str,
    body: Vec<u8>,
    authorization: Option<&str>,
) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::post(path).header("host", "localhost");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// 24 s of 30 fps H.264 as CMAF in parts of 1/3 s, made by ffmpeg: its header and its chunks.
fn ffmpeg_cmaf(dir: &std::path::Path) -> (Bytes, Vec<Bytes>) {
    let path = dir.join("cmaf.mp4");
    let made = support::ffmpeg_test_pattern(24, false)
        .args([
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-s",
            "320x180",
        ])
        .args([
            "-movflags",
            "+frag_keyframe+empty_moov+default_base_moof+cmaf",
            "-frag_duration",
            "333333",
        ])
        .args(["-f", "mp4"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg could not make CMAF");
    let mut reader = CmafReader::new();
    let pieces = reader.push(&std::fs::read(&path).unwrap()).unwrap();
    reader.finish().unwrap();
    let mut pieces = pieces.into_iter();
    let Some(Piece::Header(header)) = pieces.next() else {
        panic!("ffmpeg's CMAF starts with its header")
    };
    let chunks = pieces
        .map(|piece| match piece {
            Piece::Chunk(bytes) => bytes,
            Piece::Header(_) => panic!("a second header"),
        })
        .collect();
    (header, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_playlist_requests_answer_as_soon_as_the_part_lands() {
    require_tool("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let (header, chunks) = ffmpeg_cmaf(dir.path());
    let parsed_header = cmaf::parse_header(header.clone()).unwrap();
    assert!(chunks.len() >= 70, "ffmpeg made {} chunks", chunks.len());
    let (mut packager, address) = start_packager(&[]).await;

    // The ingest: one long chunked POST.
    let (body, ingest) = open_ingest(address, "/ingest/demo/v180").await;
    body.send(header.clone()).await.unwrap();
    let started = Instant::now();
    while http_get(address, "/live/demo/v180/init.mp4").await.0 != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the header never reached the packager"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The player: before each part is sent, ask for the playlist that holds it.
    let timescale = u64::from(parsed_header.timescale);
    let mut part_in_segment = 0usize;
    let mut segment_of_previous = None;
    let mut latencies = Vec::new();
    for (index, bytes) in chunks.iter().enumerate() {
        let chunk = cmaf::parse_chunk(bytes.clone(), &parsed_header).unwrap();
        let msn = chunk.start / (2 * timescale);
        part_in_segment = if segment_of_previous == Some(msn) {
            part_in_segment + 1
        } else {
            0
        };
        segment_of_previous = Some(msn);
        let blocked = tokio::spawn(async move {
            let path =
                format!("/live/demo/v180/media.m3u8?_HLS_msn={msn}&_HLS_part={part_in_segment}");
            let (status, playlist) = http_get(address, &path).await;
            (Instant::now(), status, playlist)
        });
        if index > 0 {
            // Let the request reach the packager and block there.
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        body.send(bytes.clone()).await.unwrap();
        let sent = Instant::now();
        let (answered, status, playlist) = blocked.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{playlist}");
        assert!(
            playlist.contains(&format!("URI=\"{msn}.{part_in_segment}.m4s\"")),
            "the answer to {msn}.{part_in_segment} lacks it:\n{playlist}"
        );
        if index > 0 {
            latencies.push(answered.saturating_duration_since(sent));
        }
    }
    let measured: Vec<Duration> = latencies.iter().rev().take(60).copied().collect();
    let mut sorted = measured.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    println!(
        "blocking reload over {} consecutive parts: median {:.2} ms, 90th percentile {:.2} ms, worst {:.2} ms",
        sorted.len(),
        median.as_secs_f64() * 1000.0,
        sorted[sorted.len() * 9 / 10].as_secs_f64() * 1000.0,
        sorted[sorted.len() - 1].as_secs_f64() * 1000.0
    );
    assert_eq!(sorted.len(), 60);
    assert!(median <= Duration::from_millis(20), "median {median:?}");

    // A request more than two segments ahead is refused at once (RFC 8216bis).
    let newest_msn = segment_of_previous.unwrap();
    let (status, reason) = http_get(
        address,
        &format!("/live/demo/v180/media.m3u8?_HLS_msn={}", newest_msn + 3),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");

    // Parts, segments and the header are served with their Cache-Control.
    let (status, _) = http_get(address, "/live/demo/v180/init.mp4").await;
    assert_eq!(status, StatusCode::OK);
    let (status, master) = http_get(address, "/live/demo/master.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    assert!(master.contains("RESOLUTION=320x180"), "{master}");

    // Bad ingest gets a reason and leaves the good track alone.
    let random: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (status, reason) = post(address, "/ingest/other/v1", random, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
    assert!(reason.contains("not CMAF"), "{reason}");
    let mut truncated = header.to_vec();
    truncated.truncate(truncated.len() - 10);
    let (status, reason) = post(address, "/ingest/other/v2", truncated, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reason.contains("ended inside"), "{reason}");
    let (status, reason) = post(address, "/ingest/other/v3", chunks[0].to_vec(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reason.contains("before the CMAF header"), "{reason}");
    println!("refused: {}", reason.trim());
    let (status, playlist) = http_get(address, "/live/demo/v180/media.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    assert!(playlist.contains("#EXTINF"), "{playlist}");

    drop(body);
    let answer = ingest.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(packager.terminate(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_keycards_are_checked() {
    const KEY: &str = "00112233445566778899aabbccddeeff";
    let (mut packager, address) = start_packager(&["--keycard-secret", KEY]).await;
    let (status, reason) = post(address, "/ingest/demo/v720", b"....ftyp".to_vec(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}");
    let other_key =
        estuary_proto::KeycardKey::from_hex(None, "ffeeddccbbaa99887766554433221100").unwrap();
    let now = support::unix_now() as u64;
    let request = estuary_proto::KeycardRequest {
        start: Some(now - 10),
        expires: now + 60,
        acl: "/ingest/demo/*".into(),
        ..Default::default()
    };
    let forged = format!(
        "Bearer {}",
        estuary_proto::keycard::sign(&request, &other_key)
    );
    let (status, reason) = post(
        address,
        "/ingest/demo/v720",
        b"....ftyp".to_vec(),
        Some(&forged),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reason}");
    assert!(reason.contains("signature"), "{reason}");
    let good_key = estuary_proto::KeycardKey::from_hex(None, KEY).unwrap();
    let good = format!(
        "Bearer {}",
        estuary_proto::keycard::sign(&request, &good_key)
    );
    let (status, reason) = post(address, "/ingest/demo/v720", Vec::new(), Some(&good)).await;
    assert_eq!(status, StatusCode::OK, "{reason}");
    assert!(packager.terminate(Duration::from_secs(10)).success());
}

/// `--config FILE`: the file's keys apply, a flag given wins over its key, and a file the
/// packager cannot use stops it with the file, the line and the key named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_is_read_and_flags_win_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("packager.toml");
    // Port 1 is not the packager's: start_packager's --listen must win.
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\nkeycard_secret = \"00112233445566778899aabbccddeeff\"\n",
    )
    .unwrap();
    let (mut packager, address) = start_packager(&["--config", path.to_str().unwrap()]).await;
    let (status, reason) = post(address, "/ingest/demo/v720", b"....ftyp".to_vec(), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the file's keycard key: {reason}"
    );
    assert!(packager.terminate(Duration::from_secs(10)).success());

    for (text, expected) in [
        ("segment = \"2s\"\nwindw = \"4s\"\n", "line 2"),
        (
            "window = \"1s\"\n",
            "window (1s) must hold at least one segment",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let output = estuary()
            .args(["packager", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// Low-latency DASH: the MPD parses as XML and describes the track; the segment being written
/// is sent while it grows, each chunk as it reaches the packager, and ends whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_in_progress_streams_as_its_chunks_arrive() {
    require_tool("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let (header, chunks) = ffmpeg_cmaf(dir.path());
    let parsed_header = cmaf::parse_header(header.clone()).unwrap();
    let segment_ticks = 2 * u64::from(parsed_header.timescale);
    let msn_of = |bytes: &Bytes| {
        cmaf::parse_chunk(bytes.clone(), &parsed_header)
            .unwrap()
            .start
            / segment_ticks
    };
    let (mut packager, address) = start_packager(&[]).await;

    let (ingest, posted) = open_ingest(address, "/ingest/demo/v180").await;
    ingest.send(header).await.unwrap();

    // Everything up to and including the first chunk of segment 2.
    let growing = 2;
    let first = chunks.iter().position(|c| msn_of(c) == growing).unwrap();
    let end = chunks.iter().position(|c| msn_of(c) > growing).unwrap();
    for chunk in &chunks[..=first] {
        ingest.send(chunk.clone()).await.unwrap();
    }
    let wait = Instant::now();
    while !http_get(address, "/live/demo/v180/media.m3u8")
        .await
        .1
        .contains(&format!("URI=\"{growing}.0.m4s\""))
    {
        assert!(
            wait.elapsed() < Duration::from_secs(5),
            "part {growing}.0 never appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, mpd) = http_get(address, "/live/demo/manifest.mpd").await;
    assert_eq!(status, StatusCode::OK, "{mpd}");
    let document = roxmltree::Document::parse(&mpd).expect("the MPD is XML");
    let root = document.root_element();
    assert_eq!(root.attribute("type"), Some("dynamic"));
    let representation = root
        .descendants()
        .find(|n| n.has_tag_name("Representation"))
        .unwrap();
    assert_eq!(representation.attribute("id"), Some("v180"));
    assert_eq!(representation.attribute("width"), Some("320"));
    let template = root
        .descendants()
        .find(|n| n.has_tag_name("SegmentTemplate"))
        .unwrap();
    assert_eq!(
        template.attribute("availabilityTimeComplete"),
        Some("false")
    );

    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut viewer, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(format!("/live/demo/v180/{growing}.m4s"))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = viewer.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("transfer-encoding").unwrap(),
        "chunked"
    );
    let mut body = response.into_body();
    let mut received = Vec::new();
    let mut next_frame = async || {
        tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the segment stopped coming")
            .map(|frame| frame.unwrap().into_data().unwrap())
    };
    // The first chunk is there at once; each later one arrives after it is sent.
    received.push(next_frame().await.unwrap());
    for chunk in &chunks[first + 1..end] {
        ingest.send(chunk.clone()).await.unwrap();
        let before = received.iter().map(Bytes::len).sum::<usize>();
        while received.iter().map(Bytes::len).sum::<usize>() < before + chunk.len() {
            received.push(next_frame().await.unwrap());
        }
    }
    // The next segment's first chunk completes this one at the latest: the body ends.
    ingest.send(chunks[end].clone()).await.unwrap();
    while let Some(frame) = next_frame().await {
        received.push(frame);
    }
    let whole: Vec<u8> = chunks[first..end].concat();
    assert_eq!(received.concat(), whole);
    println!(
        "segment {growing} streamed in {} pieces, {} bytes",
        received.len(),
        whole.len()
    );

    drop(ingest);
    assert_eq!(posted.await.unwrap().unwrap().status(), StatusCode::OK);
    assert!(packager.terminate(Duration::from_secs(10)).success());
}

/// The archive: a packager with a 4 s window and `--archive`, fed by a real ingest for 14 s.
/// Segments that have left the window are gone from /live but served from disk at /vod, as a
/// VOD playlist that ffmpeg decodes whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_serves_what_left_the_window_as_vod() {
    require_tool("ffmpeg", "ffmpeg");
    let archive = tempfile::tempdir().unwrap();
    let archive_path = archive.path().to_str().unwrap().to_owned();
    let (mut packager, address) =
        start_packager(&["--window", "4s", "--archive", archive_path.as_str()]).await;
    let started = support::unix_now();
    let ingest = estuary()
        .args(["ingest", "--source", "test", "--channel", "vodtest"])
        .args(["--renditions", "360", "--duration", "14s"])
        .arg("--to")
        .arg(format!("http://{address}/ingest"))
        .status()
        .unwrap();
    assert!(ingest.success());
    let ended = support::unix_now();

    // The whole run as VOD.
    let range = format!("{}-{}", started as u64, ended as u64 + 1);
    let (status, master) = http_get(address, &format!("/vod/vodtest/{range}/master.m3u8")).await;
    assert_eq!(status, StatusCode::OK, "{master}");
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    let (status, media) = http_get(address, &format!("/vod/vodtest/{range}/v360/media.m3u8")).await;
    assert_eq!(status, StatusCode::OK, "{media}");
    let parsed = match m3u8_rs::parse_playlist_res(media.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(parsed)) => parsed,
        other => panic!("not a media playlist: {other:?}\n{media}"),
    };
    assert_eq!(parsed.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
    assert!(parsed.end_list);
    let archived: f32 = parsed.segments.iter().map(|s| s.duration).sum();
    assert!(
        parsed.segments.len() >= 5 && archived >= 10.0,
        "{} segments, {archived} s archived:\n{media}",
        parsed.segments.len()
    );

    // The oldest archived segment has left the live window (4 s) but not the archive.
    let oldest = parsed.segments[0].uri.trim_end_matches(".m4s").to_owned();
    let (status, _) = http_get(address, &format!("/live/vodtest/v360/{oldest}.m4s")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = http_get(address, &format!("/vod/vodtest/{range}/v360/{oldest}.m4s")).await;
    assert_eq!(status, StatusCode::OK);

    let decoded = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(format!("http://{address}/vod/vodtest/{range}/master.m3u8"))
        .args(["-map", "0:v:0", "-map", "0:a:0", "-f", "null", "-"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&decoded.stderr);
    assert!(
        decoded.status.success() && errors.trim().is_empty(),
        "ffmpeg: {errors}"
    );
    println!(
        "VOD of {range}: {} segments, {archived:.1} s, decoded by ffmpeg",
        parsed.segments.len()
    );

    // A range that ends before it starts is no path of the layout.
    let (status, reason) = http_get(address, "/vod/vodtest/20-10/master.m3u8").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(reason.contains("public layout"), "{reason}");
    assert!(packager.terminate(Duration::from_secs(10)).success());
}
