//! End to end: `estuary edge` in front of `estuary packager`, fed by `estuary ingest`, each its
//! own process on 127.0.0.1, played through by ffmpeg and by this test acting as many viewers.

mod support;

#[path = "edge/access.rs"]
mod access;
#[path = "edge/protocols.rs"]
mod protocols;
#[path = "edge/resilience.rs"]
mod resilience;

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
