//! End to end: `estuary edge` in front of `estuary packager`, fed by `estuary ingest`, each its
//! own process on 127.0.0.1, played through by ffmpeg and by this test acting as many viewers.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use support::{Running, estuary, free_port, require_tool};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A packager, an ingest (360p and AAC) into it, and an edge in front, with the token bouncer
/// on when `key_file` is given.
struct Stack {
    // Dropped (stopped) in this order: the ingest before the packager it sends to.
    ingest: Running,
    packager: Running,
    packager_address: SocketAddr,
    edge_process: Running,
    edge: SocketAddr,
}

fn start_packager(address: SocketAddr) -> Running {
    Running(
        estuary()
            .args(["packager", "--listen", &address.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn stack(key_file: Option<&Path>, access_log: Option<&Path>, extra: &[&str]) -> Stack {
    let packager_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let packager = start_packager(packager_address);
    let ingest = Running(
        support::test_ingest(packager_address, &[])
            // It says when it reconnects; the outage test makes it.
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = estuary();
    command
        .args(["edge", "--listen", &edge.to_string()])
        .arg("--upstream")
        .arg(format!("http://{packager_address}"));
    if let Some(key_file) = key_file {
        command.arg("--key-file").arg(key_file);
    }
    if let Some(log) = access_log {
        command.arg("--access-log").arg(log);
    }
    command.args(extra);
    // The edge's log (warnings) is read by the tests that need it.
    let edge_process = Running(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    // Until the channel has a whole segment, the packager answers 404.
    let started = Instant::now();
    while tokio::net::TcpStream::connect(packager_address)
        .await
        .is_err()
        || get(packager_address, "/live/demo/master.m3u8").await.0 != StatusCode::OK
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the channel never became playable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Stack {
        packager,
        packager_address,
        ingest,
        edge_process,
        edge,
    }
}

/// Waits until something listens on `address` (at most 10 s).
async fn wait_for_listener(address: SocketAddr) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing listens on {address}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(address: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (parts.status, parts.headers, body)
}

fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The value of a counter (`name` with its labels, if any) in a Prometheus text page; 0 when
/// it has not been counted yet.
async fn counter(address: SocketAddr, name: &str) -> u64 {
    let (_, _, page) = get(address, "/metrics").await;
    text(&page)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0)
}

/// A token as Akamai's EdgeAuth 2.0 documentation (and its reference EdgeAuth-Token
/// libraries) describe it, written here independently of Estuary's signer: the fields
/// `st=`, `exp=`, `acl=` joined by `~`; HMAC-SHA256 of that text under the hex-decoded key;
/// the token is the fields, then `~hmac=` and the MAC in lowercase hex.
fn akamai_edgeauth_token(key_hex: &str, start: u64, end: u64, acl: &str) -> String {
    let key: Vec<u8> = (0..key_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap())
        .collect();
    let fields = format!("st={start}~exp={end}~acl={acl}");
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        fields.as_bytes(),
    );
    let hex: String = mac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{fields}~hmac={hex}")
}

fn sign(key_file: &Path, acl: &str, ttl: &str) -> String {
    let output = estuary()
        .args(["keycard", "sign", "--acl", acl, "--ttl", ttl, "--key-file"])
        .arg(key_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The newest whole segment of the v360 track, as `address` lists it (`{msn}.m4s`).
async fn newest_segment(address: SocketAddr) -> String {
    let (_, _, playlist) = get(address, "/live/demo/v360/media.m3u8").await;
    text(&playlist)
        .lines()
        .rfind(|line| line.ends_with(".m4s") && !line.starts_with('#'))
        .expect("a whole segment")
        .to_owned()
}

/// The newest `(msn, part)` a media playlist lists.
fn newest_part(playlist: &str) -> (u64, usize) {
    let hint = playlist
        .lines()
        .find_map(|line| line.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .expect("a preload hint");
    let name = hint.split(".m4s").next().unwrap();
    let (msn, part) = name.split_once('.').unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycards_guard_the_stream_and_travel_with_the_player() {
    require_tool("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys");
    std::fs::write(&key_file, format!("# test keys\nk1 {KEY}\n")).unwrap();
    let log = dir.path().join("access.log");
    let revoked = dir.path().join("revoked");
    std::fs::write(&revoked, "# revoked keycard ids\n").unwrap();
    let revoked_arg = revoked.to_str().unwrap();
    let stack = stack(Some(&key_file), Some(&log), &["--revoked", revoked_arg]).await;
    let edge = stack.edge;

    let good = sign(&key_file, "/live/demo/*", "300s");
    let (status, _, reason) = get(edge, "/live/demo/master.m3u8").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", text(&reason));
    let (status, _, master) = get(edge, &format!("/live/demo/master.m3u8?keycard={good}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text(&master).contains(&format!("v360/media.m3u8?keycard={good}")),
        "{}",
        text(&master)
    );
    // The keycard also works from a cookie and from the Authorization header.
    for header in [
        ("cookie", format!("keycard={good}")),
        ("authorization", format!("Bearer {good}")),
    ] {
        let stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get("/live/demo/v360/init.mp4")
            .header("host", "localhost")
            .header(header.0, &header.1)
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(
            sender.send_request(request).await.unwrap().status(),
            StatusCode::OK,
            "{}",
            header.0
        );
    }

    let tampered = good.replacen("acl=/live/demo/*", "acl=/live/*", 1);
    let other_channel = sign(&key_file, "/live/other/*", "300s");
    let expired = sign(&key_file, "/live/demo/*", "1s");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (name, card, expected) in [
        ("tampered", tampered.as_str(), "signature"),
        ("wrong ACL", other_channel.as_str(), "does not cover"),
        ("expired", expired.as_str(), "expired"),
        ("garbage", "not-a-keycard", "malformed"),
    ] {
        let (status, _, reason) =
            get(edge, &format!("/live/demo/master.m3u8?keycard={card}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}");
        assert!(
            text(&reason).contains(expected),
            "{name}: {}",
            text(&reason)
        );
    }

    // A token made by Akamai's published EdgeAuth 2.0 algorithm, under Akamai's default name.
    let now = support::unix_now() as u64;
    let akamai = akamai_edgeauth_token(KEY, now, now + 300, "/live/demo/*");
    let (status, _, reason) =
        get(edge, &format!("/live/demo/master.m3u8?__token__={akamai}")).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&reason));

    // Continuous streams meet the same bouncers before the fan-out engine takes them; a
    // viewer whose keycard expires is disconnected then.
    let stream_url = |card: &str| format!("http://{edge}/live/demo/stream.ts?keycard={card}");
    let watch = |url: &str, seconds: &str| {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-m", seconds])
            .args([
                "-w",
                "%{http_code} %{content_type} %{size_download} %{time_total}",
            ])
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let refused = watch(&format!("http://{edge}/live/demo/stream.ts"), "5");
    assert!(refused.starts_with("403 "), "{refused}");
    let short = sign(&key_file, "/live/demo/*", "3s");
    let watched = watch(&stream_url(&short), "15");
    let fields: Vec<&str> = watched.split(' ').collect();
    assert_eq!(fields[..2], ["200", "video/mp2t"], "{watched}");
    let (bytes, seconds): (u64, f64) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert!(bytes > 10_000, "{watched}");
    assert!(
        (1.5..6.0).contains(&seconds),
        "a 3 s keycard watched for {seconds} s"
    );
    println!("a viewer of stream.ts with a 3 s keycard got {bytes} bytes in {seconds:.1} s");
    // A keycard revoked while its viewer watches: the viewer is disconnected within a second
    // or two of the file's change, and the keycard is refused from then on.
    let signed = estuary()
        .args(["keycard", "sign", "--acl", "/live/demo/*", "--ttl", "300s"])
        .args(["--id", "viewer-7", "--key-file"])
        .arg(&key_file)
        .output()
        .unwrap();
    let card = String::from_utf8(signed.stdout).unwrap().trim().to_owned();
    let watching = std::thread::spawn({
        let url = stream_url(&card);
        move || watch(&url, "15")
    });
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&revoked, "# revoked keycard ids\nviewer-7\n").unwrap();
    let watched = watching.join().unwrap();
    let fields: Vec<&str> = watched.split(' ').collect();
    let seconds: f64 = fields[3].parse().unwrap();
    assert_eq!(fields[0], "200", "{watched}");
    assert!(seconds < 6.0, "revoked after 2 s, watched for {seconds} s");
    let (status, _, reason) = get(edge, &format!("/live/demo/master.m3u8?keycard={card}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        text(&reason).contains("viewer-7 is revoked"),
        "{}",
        text(&reason)
    );
    println!("a viewer whose keycard was revoked after 2 s was disconnected at {seconds:.1} s");

    // `estuary keycard verify` says the same as the edge.
    let verify = |card: &str| {
        estuary()
            .args([
                "keycard",
                "verify",
                card,
                "--path",
                "/live/demo/master.m3u8",
                "--key-file",
            ])
            .arg(&key_file)
            .output()
            .unwrap()
    };
    let accepted = verify(&good);
    assert!(accepted.status.success());
    assert!(String::from_utf8_lossy(&accepted.stdout).starts_with("accepted"));
    let refused = verify(&expired);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("expired"));

    // ffmpeg plays 20 s through the edge with nothing but the keycard on the master playlist.
    let started = Instant::now();
    let played = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(format!(
            "http://{edge}/live/demo/master.m3u8?keycard={good}"
        ))
        .args([
            "-map", "0:v:0", "-map", "0:a:0", "-t", "20", "-f", "null", "-",
        ])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&played.stderr);
    assert!(
        played.status.success() && errors.trim().is_empty(),
        "ffmpeg: {errors}"
    );
    println!(
        "ffmpeg played 20 s through the edge in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every playlist, part and segment ffmpeg asked for was answered 200.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&log).unwrap();
    let player_lines: Vec<&str> = log.lines().filter(|line| line.contains("Lavf")).collect();
    assert!(player_lines.len() >= 10, "{log}");
    let refused: Vec<&&str> = player_lines
        .iter()
        .filter(|line| !line.contains("\" 200 "))
        .collect();
    assert!(refused.is_empty(), "not 200: {refused:#?}");
    println!("ffmpeg made {} requests, all 200", player_lines.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewers_missing_at_once_make_one_upstream_request() {
    let stack = stack(None, None, &[]).await;
    let edge = stack.edge;
    let segment = newest_segment(stack.packager_address).await;

    let packager = stack.packager_address;
    let segments = "estuary_packager_requests_total{kind=\"segment\"}";
    let before = counter(edge, "estuary_edge_upstream_requests_total").await;
    let packager_before = counter(packager, segments).await;
    let path = format!("/live/demo/v360/{segment}");
    let viewers: Vec<_> = (0..500)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { get(edge, &path).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for viewer in viewers {
        let (status, _, body) = viewer.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
    }
    let fetched = counter(edge, "estuary_edge_upstream_requests_total").await - before;
    let served = counter(packager, segments).await - packager_before;
    let (_, _, direct) = get(packager, &path).await;
    assert!(bodies.iter().all(|body| *body == direct));
    println!(
        "500 concurrent requests for {segment}: {fetched} upstream request(s) from the edge, {served} at the packager"
    );
    assert_eq!((fetched, served), (1, 1));

    // 500 viewers blocked on the next part: one upstream request per part.
    let (_, _, playlist) = get(edge, "/live/demo/v360/media.m3u8").await;
    let (msn, part) = newest_part(&text(&playlist));
    for round in 0..3 {
        let next = (msn, part + round);
        let blocking = "estuary_packager_requests_total{kind=\"blocking_playlist\"}";
        let before = counter(edge, "estuary_edge_upstream_requests_total").await;
        let packager_before = counter(packager, blocking).await;
        let path = format!(
            "/live/demo/v360/media.m3u8?_HLS_msn={}&_HLS_part={}",
            next.0, next.1
        );
        let viewers: Vec<_> = (0..500)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { get(edge, &path).await })
            })
            .collect();
        for viewer in viewers {
            let (status, _, body) = viewer.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{}", text(&body));
        }
        let fetched = counter(edge, "estuary_edge_upstream_requests_total").await - before;
        let served = counter(packager, blocking).await - packager_before;
        println!(
            "500 viewers blocked on part {}.{}: {fetched} upstream request(s), {served} at the packager",
            next.0, next.1
        );
        assert_eq!((fetched, served), (1, 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_rides_out_a_packager_outage() {
    let mut stack = stack(None, None, &[]).await;
    let edge = stack.edge;
    let (status, _, playlist) = get(edge, "/live/demo/v360/media.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    let playlist = text(&playlist);
    let segment = playlist
        .lines()
        .rfind(|line| line.ends_with(".m4s") && !line.starts_with('#'))
        .unwrap()
        .to_owned();
    let (status, _, cached) = get(edge, &format!("/live/demo/v360/{segment}")).await;
    assert_eq!(status, StatusCode::OK);
    let (before, _) = newest_part(&playlist);

    // The packager goes away for 20 s (after the playlist's 100 ms of freshness, the edge asks
    // upstream again, fails, and serves its stale copy).
    assert!(stack.packager.terminate(Duration::from_secs(10)).success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(20) {
        let (status, headers, body) = get(edge, "/live/demo/v360/media.m3u8").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.get("x-cache").unwrap(), "STALE");
        assert!(headers.get("warning").is_some());
        assert!(text(&body).contains("#EXT-X-PART"), "{}", text(&body));
        let (status, _, body) = get(edge, &format!("/live/demo/v360/{segment}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, cached);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (_, _, health) = get(edge, "/healthz").await;
    assert!(
        text(&health).contains("\"mood\":\"sad\""),
        "{}",
        text(&health)
    );

    // It comes back on the same address; the ingest reconnects and the stream goes on.
    stack.packager = start_packager(stack.packager_address);
    let back = Instant::now();
    loop {
        let (status, headers, body) = get(edge, "/live/demo/v360/media.m3u8").await;
        if status == StatusCode::OK && headers.get("x-cache").is_some_and(|v| v != "STALE") {
            let (after, _) = newest_part(&text(&body));
            if after > before + 5 {
                println!(
                    "the stream went on {:.1} s after the packager came back (segment {before} -> {after})",
                    back.elapsed().as_secs_f64()
                );
                break;
            }
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the stream did not come back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, _, health) = get(edge, "/healthz").await;
    assert!(
        text(&health).contains("\"mood\":\"happy\""),
        "{}",
        text(&health)
    );

    // The edge said in its log that it served stale playlists.
    stack.edge_process.terminate(Duration::from_secs(10));
    let mut log = String::new();
    let stderr = stack.edge_process.0.stderr.as_mut().unwrap();
    std::io::Read::read_to_string(stderr, &mut log).unwrap();
    assert!(log.contains("serving a stale playlist"), "{log}");
}

/// When the ingest stops, a blocking playlist request for the next part gets the packager's
/// 503 ("did not arrive in time") through the edge, within the packager's blocking limit, and
/// the edge stays happy: its upstream answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_request_the_packager_gives_up_on_gets_its_503() {
    let mut stack = stack(None, None, &[]).await;
    stack.ingest.terminate(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, _, playlist) = get(stack.packager_address, "/live/demo/v360/media.m3u8").await;
    let (msn, part) = newest_part(&text(&playlist));
    let asked = Instant::now();
    let (status, _, body) = get(
        stack.edge,
        &format!("/live/demo/v360/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    )
    .await;
    println!("{status} after {:?}: {}", asked.elapsed(), text(&body));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", text(&body));
    assert!(
        text(&body).contains("did not arrive in time"),
        "{}",
        text(&body)
    );
    assert!(asked.elapsed() < Duration::from_secs(10));
    let (_, _, health) = get(stack.edge, "/healthz").await;
    assert!(
        text(&health).contains("\"mood\":\"happy\""),
        "{}",
        text(&health)
    );
    // Continuous streams over HTTP/2 too: the fan-out engine relays the stream into the
    // response's body (curl gives up after 3 s of it).
    let h2 = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "3",
            "--http2-prior-knowledge",
        ])
        .args([
            "-w",
            "%{http_version} %{http_code} %{content_type} %{size_download}",
        ])
        .arg(format!("http://{}/live/demo/stream.ts", stack.edge))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&h2.stdout);
    let fields: Vec<&str> = answer.split(' ').collect();
    assert_eq!(fields[..3], ["2", "200", "video/mp2t"], "{answer}");
    assert!(fields[3].parse::<u64>().unwrap() > 10_000, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_in_bounded_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string()])
            .args(["--upstream", "http://127.0.0.1:9"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    async fn exchange(edge: SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(
        exchange(edge, huge.as_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    for path in [
        "/live/../etc/passwd",
        "/live/%2e%2e/etc/passwd",
        "/live/%2E%2E%2Fetc",
    ] {
        let answer = exchange(
            edge,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert!(
        exchange(edge, b"\x16\x03\x01\x00\xa5garbage")
            .await
            .starts_with("HTTP/1.1 400")
    );
    // One byte a second: the porter gives up after its 10 s head timeout.
    let slow = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
    let mut answer = Vec::new();
    for byte in b"GET /live/demo/master.m3u8 HTTP/1.1\r\n" {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if slow.elapsed() > Duration::from_secs(12) {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(slow.elapsed() < Duration::from_secs(13));
    // With no upstream, a request gets 502 with the reason.
    let (status, _, reason) = get(edge, "/live/demo/master.m3u8").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", text(&reason));
    println!(
        "refused: oversized head 431, traversal 400, garbage 400, slow head 408 after {:.1} s",
        slow.elapsed().as_secs_f64()
    );
}

/// GeoIP: the client address comes from X-Forwarded-For only when the peer (127.0.0.1) is a
/// trusted proxy; countries are let in or turned away as configured, in both database schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countries_are_let_in_or_turned_away() {
    let dir = tempfile::tempdir().unwrap();
    // Let in: the request reaches for the upstream, which does not exist: 502. Turned away: 403.
    for (maxmind_schema, extra, cases) in [
        (
            true,
            vec![
                "--allow-countries",
                "GB",
                "--unknown-country",
                "deny",
                "--trusted-proxies",
                "127.0.0.1",
            ],
            vec![
                ("81.2.69.142", 502),
                ("89.160.20.112", 403),
                ("192.0.2.1", 403),
            ],
        ),
        (
            true,
            vec!["--deny-countries", "SE", "--trusted-proxies", "127.0.0.0/8"],
            vec![
                ("81.2.69.142", 502),
                ("89.160.20.112", 403),
                ("192.0.2.1", 502),
            ],
        ),
        (
            false,
            vec![
                "--allow-countries",
                "US",
                "--unknown-country",
                "deny",
                "--trusted-proxies",
                "127.0.0.1",
            ],
            vec![("8.8.8.8", 502), ("81.2.69.142", 403)],
        ),
        // No trusted proxy: X-Forwarded-For is not believed; the client is 127.0.0.1, which no
        // database places.
        (
            true,
            vec!["--allow-countries", "GB", "--unknown-country", "deny"],
            vec![("81.2.69.142", 403)],
        ),
    ] {
        let database = dir.path().join(format!("{maxmind_schema}.mmdb"));
        std::fs::write(
            &database,
            estuary_edge::geo::testing::database(maxmind_schema),
        )
        .unwrap();
        let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let _edge = Running(
            estuary()
                .args(["edge", "--listen", &edge.to_string()])
                .args(["--upstream", "http://127.0.0.1:9", "--geoip"])
                .arg(&database)
                .args(&extra)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for_listener(edge).await;
        for (client, expected) in cases {
            let stream = tokio::net::TcpStream::connect(edge).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let request = Request::get("/live/demo/master.m3u8")
                .header("host", "localhost")
                .header("x-forwarded-for", client)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(status, expected, "{client} with {extra:?}: {}", text(&body));
        }
    }
}

/// The PROXY protocol from a trusted proxy names the client (versions 1 and 2); a garbage
/// PROXY header gets 400 and a closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_name_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string()])
            .args([
                "--upstream",
                "http://127.0.0.1:9",
                "--deny-networks",
                "89.160.20.0/24",
            ])
            .args(["--trusted-proxies", "127.0.0.1", "--proxy-protocol"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    let request = b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut v2_denied = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2_denied.extend_from_slice(&[
        0x21, 0x11, 0, 12, 89, 160, 20, 112, 127, 0, 0, 1, 0, 80, 0, 80,
    ]);
    for (name, header, expected) in [
        (
            "v1, let in",
            b"PROXY TCP4 81.2.69.142 127.0.0.1 5000 80\r\n".to_vec(),
            "502",
        ),
        (
            "v1, denied range",
            b"PROXY TCP4 89.160.20.112 127.0.0.1 5000 80\r\n".to_vec(),
            "403",
        ),
        ("v2, denied range", v2_denied, "403"),
        ("no header", Vec::new(), "502"),
        ("garbage", b"PROXY TCP4 not an address\r\n".to_vec(), "400"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        stream
            .write_all(&[header, request.to_vec()].concat())
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the edge answers and closes")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{name}: {answer}"
        );
    }
}

/// HTTP Basic against an htpasswd file whose hash openssl wrote (SHA-256 crypt); the password
/// bouncer combined with the network bouncer by a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_an_htpasswd_file() {
    require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let hash = Command::new("openssl")
        .args(["passwd", "-5", "s3cret"])
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap();
    let file = dir.path().join("viewers.htpasswd");
    std::fs::write(&file, format!("ann:{}\n", hash.trim())).unwrap();
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string()])
            .args(["--upstream", "http://127.0.0.1:9", "--htpasswd"])
            .arg(&file)
            .args([
                "--allow-networks",
                "10.0.0.0/8",
                "--bouncers",
                "any(password, network)",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    // ann:s3cret, ann:wrong, nobody.
    for (authorization, expected) in [
        (Some("Basic YW5uOnMzY3JldA=="), 502),
        (Some("Basic YW5uOndyb25n"), 401),
        (None, 401),
    ] {
        let stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::get("/live/demo/master.m3u8").header("host", "localhost");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{authorization:?}");
        if expected == 401 {
            assert!(response.headers().get("www-authenticate").is_some());
        }
    }
}

/// With --control, the edge reports every second: who and where it is, its clients, egress,
/// hit ratio, CPU and mood (sad, with the reason, while its upstream fails), each signed with
/// the --report-key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reports_to_control_every_second() {
    use estuary_proto::report::EdgeReport;
    let dir = tempfile::tempdir().unwrap();
    let report_keys = dir.path().join("report-keys.txt");
    let key_hex = "0123456789abcdef".repeat(4);
    std::fs::write(&report_keys, format!("edges {key_hex}\n")).unwrap();
    let key = estuary_proto::KeycardKey::from_hex(Some("edges"), &key_hex).unwrap();
    // A stand-in for control's registry: it keeps every report body, with its signature.
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_address = control.local_addr().unwrap();
    let (reports, mut received) =
        tokio::sync::mpsc::unbounded_channel::<(String, Option<Vec<u8>>, Bytes)>();
    tokio::spawn(async move {
        loop {
            let (stream, _) = control.accept().await.unwrap();
            let reports = reports.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let reports = reports.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let signature = request
                                .headers()
                                .get("x-estuary-signature")
                                .map(|value| value.as_bytes().to_vec());
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let _ = reports.send((path, signature, body));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string()])
            .args(["--upstream", "http://127.0.0.1:9"])
            .arg("--control")
            .arg(format!("http://{control_address}"))
            .arg("--report-key")
            .arg(&report_keys)
            .args([
                "--id",
                "lon-1",
                "--site",
                "lon",
                "--public-url",
                "http://lon-1.example",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    type Received = (String, Option<Vec<u8>>, Bytes);
    let next = async |received: &mut tokio::sync::mpsc::UnboundedReceiver<Received>| {
        let (path, signature, body) = tokio::time::timeout(Duration::from_secs(3), received.recv())
            .await
            .expect("a report within 3 s")
            .unwrap();
        assert_eq!(path, "/api/v1/reports");
        let now = (support::unix_now() * 1000.0) as u64;
        let signed = estuary_proto::report::verify(
            signature.as_deref(),
            &body,
            std::slice::from_ref(&key),
            now,
            Duration::from_secs(5),
        )
        .expect("a report signed with the report key");
        assert_eq!(signed.key_id.as_deref(), Some("edges"));
        serde_json::from_slice::<EdgeReport>(&body).expect("a report in the documented shape")
    };
    let first = next(&mut received).await;
    let started = Instant::now();
    assert_eq!((first.id.as_str(), first.site.as_str()), ("lon-1", "lon"));
    assert_eq!(first.url, "http://lon-1.example");
    assert_eq!(first.mood, estuary_proto::Mood::Waking);
    let second = next(&mut received).await;
    let gap = started.elapsed();
    assert!(
        gap > Duration::from_millis(700) && gap < Duration::from_millis(1500),
        "{gap:?}"
    );
    assert!(second.cpu >= 0.0 && second.cache_hit_ratio <= 1.0);

    // The upstream fails: the next reports say sad, and why.
    let (status, _, _) = get(edge, "/live/demo/master.m3u8").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let sad = loop {
        let report = next(&mut received).await;
        if report.mood != estuary_proto::Mood::Waking {
            break report;
        }
    };
    assert_eq!(sad.mood, estuary_proto::Mood::Sad);
    assert!(sad.reason.unwrap().contains("127.0.0.1:9"));
    println!(
        "reports every {:.2} s; egress {} bit/s",
        gap.as_secs_f64(),
        second.egress_bps
    );
}

/// HTTP/2 (prior knowledge) gets the same bytes as HTTP/1.1 for a playlist and a segment, from
/// two clients: curl and nghttp. Then h2load fetches them 2,000 times over 20 connections with
/// 10 streams each, and every answer is a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_gets_the_same_bytes_as_http1() {
    require_tool("curl", "curl");
    require_tool("nghttp", "nghttp2-client");
    require_tool("h2load", "nghttp2-client");
    // The edge keeps playlists for a minute, so that all clients see the same one.
    let stack = stack(None, None, &["--playlist-ttl", "60s"]).await;
    let segment = newest_segment(stack.edge).await;
    let paths = [
        "/live/demo/v360/media.m3u8".to_owned(),
        "/live/demo/v360/init.mp4".to_owned(),
        format!("/live/demo/v360/{segment}"),
    ];
    for path in &paths {
        let url = format!("http://{}{path}", stack.edge);
        let fetch = |version: &str| {
            let output = Command::new("curl")
                .args([
                    "-s",
                    "-f",
                    version,
                    "-w",
                    "%{http_version}",
                    "-o",
                    "-",
                    &url,
                ])
                .output()
                .unwrap();
            assert!(output.status.success(), "curl {version} {url}");
            output.stdout
        };
        let one = fetch("--http1.1");
        let two = fetch("--http2-prior-knowledge");
        // curl writes the body, then the protocol version it used.
        assert!(one.ends_with(b"1.1") && two.ends_with(b"2"), "{url}");
        let one = &one[..one.len() - 3];
        assert_eq!(one, &two[..two.len() - 1], "{url}");
        // nghttp speaks HTTP/2 with prior knowledge to http:// URLs and writes the body.
        let nghttp = Command::new("nghttp").arg(&url).output().unwrap();
        assert!(nghttp.status.success(), "nghttp {url}");
        assert_eq!(one, &nghttp.stdout[..], "nghttp {url}");
    }
    let urls: Vec<String> = paths
        .iter()
        .map(|path| format!("http://{}{path}", stack.edge))
        .collect();
    let load = Command::new("h2load")
        .args(["-n", "2000", "-c", "20", "-m", "10"])
        .args(&urls)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&load.stdout);
    println!("{report}");
    assert!(load.status.success(), "h2load: {report}");
    assert!(
        report.contains("2000 succeeded, 0 failed, 0 errored")
            && report.contains("status codes: 2000 2xx"),
        "h2load: {report}"
    );
    assert!(report.contains("Application protocol: h2c"), "{report}");
}

/// HTTPS: with a certificate from files (made by openssl for 127.0.0.1, trusted by curl) and
/// with one made up at start, HTTP/1.1 and HTTP/2 (by ALPN) over TLS get the same bytes as the
/// packager serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_bytes() {
    require_tool("openssl", "openssl");
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = (dir.path().join("edge.pem"), dir.path().join("edge.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&certificate)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let files = [
        "--tls-cert",
        certificate.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    for (extra, trust) in [
        (
            &files[..],
            vec![
                "--cacert".to_owned(),
                certificate.to_str().unwrap().to_owned(),
            ],
        ),
        (&["--tls-self-signed"][..], vec!["--insecure".to_owned()]),
    ] {
        let stack = stack(None, None, extra).await;
        let segment = newest_segment(stack.packager_address).await;
        for path in [
            "/live/demo/v360/init.mp4".to_owned(),
            format!("/live/demo/v360/{segment}"),
        ] {
            let (_, _, direct) = get(stack.packager_address, &path).await;
            for (version, said) in [("--http1.1", "1.1"), ("--http2", "2")] {
                let output = Command::new("curl")
                    .args(["-s", "-f", version, "-w", "%{http_version}", "-o", "-"])
                    .args(&trust)
                    .arg(format!("https://{}{path}", stack.edge))
                    .output()
                    .unwrap();
                assert!(output.status.success(), "curl {version} {extra:?} {path}");
                let body = &output.stdout[..output.stdout.len() - said.len()];
                assert!(
                    output.stdout.ends_with(said.as_bytes()),
                    "{version} {extra:?}"
                );
                assert_eq!(body, &direct[..], "{version} {extra:?} {path}");
            }
        }
        // Plain HTTP to a TLS port is refused, not served.
        let plain = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://{}/healthz", stack.edge))
            .output()
            .unwrap();
        assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    }
}

/// HTTP/3: headless Chromium, told to speak QUIC to the edge from its first request and to
/// trust the edge's self-signed certificate by the hash of its public key, fetches a
/// playlist, an init segment and a media segment; each arrives over h3 with the bytes the edge
/// serves over HTTP/1.1, and the edge advertises its HTTP/3 endpoint in Alt-Svc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_in_chromium_gets_the_same_bytes_as_http1() {
    let web = support::require_browser();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let edge_options = ["--tls-self-signed", "--playlist-ttl", "60s"];
    let stack = stack(None, Some(&log), &edge_options).await;
    // The hash of the public key of the certificate the edge presents, worked out by openssl.
    require_tool("openssl", "openssl");
    let pipeline = format!(
        "openssl s_client -connect {} </dev/null 2>/dev/null | openssl x509 -pubkey -noout \
         | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        stack.edge
    );
    let spki = Command::new("sh").args(["-c", &pipeline]).output().unwrap();
    let spki = String::from_utf8(spki.stdout).unwrap().trim().to_owned();
    assert_eq!(spki.len(), 44, "a base64 SHA-256: {spki}");

    let segment = newest_segment(stack.packager_address).await;
    let paths = [
        "/live/demo/master.m3u8".to_owned(),
        "/live/demo/v360/init.mp4".to_owned(),
        format!("/live/demo/v360/{segment}"),
    ];
    // Over HTTP/1.1 from the same edge first. The master playlist's BANDWIDTH is measured and
    // changes as the stream goes on, so this edge keeps playlists for a minute.
    let mut direct = Vec::new();
    for path in &paths {
        let output = Command::new("curl")
            .args(["-s", "-f", "-k", "--http1.1", "-o", "-"])
            .arg(format!("https://{}{path}", stack.edge))
            .output()
            .unwrap();
        assert!(output.status.success(), "curl --http1.1 {path}");
        direct.push(output.stdout);
    }
    let output = Command::new("node")
        .arg(web.join("tests/fetch.mjs"))
        .arg(format!("https://{}", stack.edge))
        .args(&paths)
        .env("QUIC", "1")
        .env("SPKI", &spki)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the browser could not fetch over HTTP/3:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(output.stdout.trim_ascii()).unwrap();
    println!("Chromium over QUIC: {report}");
    assert_eq!(report["navigation"], "h3", "{report}");
    let answers = report["answers"].as_array().unwrap();
    assert_eq!(answers.len(), paths.len());
    for ((path, answer), direct) in paths.iter().zip(answers).zip(&direct) {
        let sha256: String = ring::digest::digest(&ring::digest::SHA256, direct)
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(answer["status"], 200, "{path}: {answer}");
        assert_eq!(answer["protocol"], "h3", "{path}: {answer}");
        assert_eq!(answer["length"], direct.len(), "{path}: {answer}");
        assert_eq!(answer["sha256"], sha256, "{path}: {answer}");
        assert_eq!(
            answer["altSvc"],
            format!("h3=\":{}\"; ma=86400", stack.edge.port()),
            "{path}"
        );
    }
    // The edge's access log names the protocol.
    let logged = std::fs::read_to_string(&log).unwrap();
    for path in &paths {
        assert!(
            logged.contains(&format!("\"GET {path} HTTP/3.0\" 200")),
            "{path} is not logged as HTTP/3:\n{logged}"
        );
    }
}

/// `estuary edge --config FILE`: the documented example runs, flags given win over its keys,
/// and a file with an unknown key or a key file that is not there stops the edge at start with
/// the file and the line or key named.
#[tokio::test(flavor = "multi_thread")]
async fn the_edge_runs_from_its_configuration_file() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/edge.toml");
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--config"])
            .arg(&example)
            .args(["--listen", &edge.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    let (status, _, body) = get(edge, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert!(text(&body).contains("\"role\":\"edge\""));

    let dir = tempfile::tempdir().unwrap();
    for (name, content, says) in [
        (
            "unknown.toml",
            "upstreams = [\"http://127.0.0.1:9\"]\n\n[streams]\nslow = \"drop\"\n",
            "line 4",
        ),
        (
            "missing.toml",
            "upstreams = [\"http://127.0.0.1:9\"]\n[bouncers]\nkey_file = \"/nonexistent/keys\"\n",
            "bouncers.key_file",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let output = estuary()
            .args(["edge", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} started");
        assert!(
            errors.contains(name) || errors.contains(&path.display().to_string()),
            "{name}: {errors}"
        );
        assert!(errors.contains(says), "{name}: {errors}");
    }
}
