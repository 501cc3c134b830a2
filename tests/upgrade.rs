//! End to end: an edge upgraded in place. A new `estuary edge --takeover SOCKET` takes the
//! running edge's listening socket over a Unix socket while a client connects again and again
//! and a viewer takes a segment the upstream sends slowly: no connection is refused or cut,
//! the segment in flight reaches its viewer whole from the old process, which then exits on its
//! own; a second upgrade, by `scripts/upgrade-edge`, takes the socket from the first new
//! process the same way, and eight more show that no generation holds more descriptors than
//! the one before. Continuous-stream listeners (MP3, half of them with ICY metadata, and
//! MPEG-TS) are handed from process to process: none is cut, none waits long, and what each
//! received decodes from end to end.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Running, estuary, free_port, require_tool};

fn start_edge(port: u16, upstream: SocketAddr, socket: &Path, takeover: bool) -> Running {
    let mut command = estuary();
    command
        .args(["edge", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--upstream")
        .arg(format!("http://{upstream}"))
        .arg("--takeover-socket")
        .arg(socket)
        .args(["--drain-grace", "20s"]);
    if takeover {
        command.arg("--takeover").arg(socket);
    }
    Running(command.stdout(Stdio::null()).spawn().unwrap())
}

/// One request on a connection of its own; whether a whole 200 came back.
fn healthy(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200 ")
}

/// A process started in a session of its own (by the upgrade script), killed when the test
/// ends however it ends.
struct Detached(u32);

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// Upgrades the edge offering its sockets at `socket` by `scripts/upgrade-edge`, to a new edge
/// on `address` in front of `upstream` with `extra` arguments (its log in `log`): what the
/// script printed, and the new edge, killed when dropped.
fn upgrade_by_script(
    log: &Path,
    socket: &Path,
    address: SocketAddr,
    upstream: SocketAddr,
    extra: &[&str],
) -> (String, Detached) {
    let script = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/upgrade-edge"))
        .arg("--log")
        .arg(log)
        .arg(socket)
        .arg(env!("CARGO_BIN_EXE_estuary"))
        .args(["edge", "--listen", &address.to_string()])
        .arg("--upstream")
        .arg(format!("http://{upstream}"))
        .arg("--takeover-socket")
        .arg(socket)
        .args(extra)
        .env("ESTUARY_LOG", "info")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&script.stdout).into_owned();
    let new = said
        .split_whitespace()
        .nth(2)
        .and_then(|pid| pid.parse::<u32>().ok())
        .map(Detached);
    assert!(
        script.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&script.stderr)
    );
    (said, new.expect("the script named the new edge"))
}

/// Whether process `pid` has ended (an exited child not reaped yet has).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// How many file descriptors process `pid` holds.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits for `edge` to exit on its own: its status and when.
fn exits(edge: &mut Running, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = edge.0.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "the old edge did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_upgraded_edge_refuses_no_connection_and_finishes_what_it_serves() {
    require_tool("curl", "curl");
    require_tool("ss", "iproute2");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("edge.takeover");
    let asked = Arc::new(AtomicBool::new(false));
    let upstream = support::slow_upstream(asked.clone());
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut first = start_edge(port, upstream, &socket, false);
    let started = Instant::now();
    while !healthy(address) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the edge never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A client that connects again and again all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let counter = if healthy(address) { &served } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // A viewer takes a segment that the upstream sends over about 3 s.
    let viewer = support::slow_segment_viewer(address, &asked);

    // The upgrade: the first edge stops accepting once the second serves, finishes the segment
    // and exits.
    let upgrade = Instant::now();
    let mut second = start_edge(port, upstream, &socket, true);
    let answer = viewer.join().unwrap();
    assert_eq!(
        answer,
        format!("200 {}", support::SLOW_SEGMENT_BYTES),
        "the segment in flight"
    );
    assert!(exits(&mut first, Duration::from_secs(20)).success());
    let first_gone = upgrade.elapsed();

    // And again, from the process that took over: the socket path is offered anew.
    let before = served.load(Ordering::SeqCst);
    while served.load(Ordering::SeqCst) < before + 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // This time by the script an operator runs, which waits for the old edge to leave.
    let upgrade = Instant::now();
    let (said, third) = upgrade_by_script(
        &dir.path().join("third.log"),
        &socket,
        address,
        upstream,
        &[],
    );
    assert!(exits(&mut second, Duration::from_secs(5)).success());
    let second_gone = upgrade.elapsed();
    print!("{said}");
    let before = served.load(Ordering::SeqCst);
    while served.load(Ordering::SeqCst) < before + 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let (served, failed) = (served.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));

    // Eight more, the client stopped so that only the edges' own descriptors count: each new
    // edge holds as many as the one it took over from, so ten upgrades leak none.

    let mut descriptors = vec![open_descriptors(third.0)];
    let mut previous = third.0;
    let mut later = Vec::new();
    for _ in 0..8 {
        let next = start_edge(port, upstream, &socket, true);
        let started = Instant::now();
        while !gone(previous) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "edge {previous} stayed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(healthy(address));
        previous = next.0.id();
        descriptors.push(open_descriptors(previous));
        later.push(next);
    }
    // A connection to the upstream may come and go (the edge watches it); a leak would grow
    // by at least one a generation.
    let (fewest, most) = (
        descriptors.iter().min().unwrap(),
        descriptors.iter().max().unwrap(),
    );
    assert!(
        most - fewest <= 1,
        "open descriptors by generation: {descriptors:?}"
    );
    println!("open descriptors of the edge after each of the last nine upgrades: {descriptors:?}");
    println!(
        "two upgrades: {served} requests served, {failed} failed; the first edge exited {} ms \
         after the second started (a segment in flight), the second {} ms after the third",
        first_gone.as_millis(),
        second_gone.as_millis()
    );
    assert_eq!(failed, 0, "requests refused or cut across the upgrades");
}

/// What a continuous-stream listener saw.
struct Heard {
    bytes: Vec<u8>,
    /// The longest wait between two reads once the stream flowed.
    longest_gap: Duration,
    /// Why the stream stopped before the listener let go, if it did.
    cut: Option<String>,
}

/// Listens to `path` on `address` (asking for ICY metadata when `icy`) until `stop`; keeps the
/// bytes when `keep`.
async fn listen(
    address: SocketAddr,
    path: &'static str,
    icy: bool,
    keep: bool,
    stop: Arc<AtomicBool>,
) -> Heard {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let extra = if icy { "Icy-MetaData: 1\r\n" } else { "" };
    let request = format!("GET {path} HTTP/1.1\r\nHost: edge\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "{path}: closed in the head"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(head.contains("icy-metaint: 16000"), icy, "{head}");
    let mut heard = Heard {
        bytes: Vec::new(),
        longest_gap: Duration::ZERO,
        cut: None,
    };
    let mut buffer = vec![0u8; 64 * 1024];
    let mut last: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await;
        match read {
            Err(_) => continue,
            Ok(Ok(0)) => {
                heard.cut = Some("closed".into());
                break;
            }
            Ok(Err(error)) => {
                heard.cut = Some(error.to_string());
                break;
            }
            Ok(Ok(read)) => {
                let now = Instant::now();
                if let Some(last) = last {
                    heard.longest_gap = heard.longest_gap.max(now - last);
                }
                last = Some(now);
                if keep {
                    heard.bytes.extend_from_slice(&buffer[..read]);
                } else {
                    heard.bytes.resize(heard.bytes.len() + read, 0);
                }
            }
        }
    }
    heard
}

/// The audio of an ICY stream (a block after every 16,000 bytes of it), its blocks taken out;
/// panics where a block is not one.
fn icy_audio(mut bytes: &[u8]) -> Vec<u8> {
    let mut audio = Vec::new();
    loop {
        let take = bytes.len().min(16_000);
        audio.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        let Some((&length, rest)) = bytes.split_first() else {
            return audio;
        };
        let length = usize::from(length) * 16;
        assert!(
            length == 0 || rest[..length.min(rest.len())].starts_with(b"StreamTitle='"),
            "no ICY block where one is due, {} bytes of audio in",
            audio.len()
        );
        bytes = &rest[length.min(rest.len())..];
    }
}

/// What ffmpeg says, at the error level, decoding `bytes` as `format`.
fn decode_errors(bytes: &[u8], format: &str, dir: &Path) -> String {
    let file = dir.join(format!("heard.{format}"));
    std::fs::write(&file, bytes).unwrap();
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-f", format, "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffmpeg failed on {}",
        file.display()
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_stream_listeners_go_on_across_upgrades() {
    require_tool("ffmpeg", "ffmpeg");
    require_tool("ss", "iproute2");
    estuary_http::sealed::raise_file_limit();
    // Full form: ESTUARY_UPGRADE_LISTENERS=2000 (and 200 TS viewers beside).
    let mp3: usize = std::env::var("ESTUARY_UPGRADE_LISTENERS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(200);
    let ts = mp3 / 10;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("edge.takeover");
    let (_packager, origin) = support::start_packager(&[]).await;
    let _ingest = Running(
        support::test_ingest(origin, &["--duration", "300s", "--audio", "aac,mp3"])
            .spawn()
            .unwrap(),
    );
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut first = start_edge(port, origin, &socket, false);
    support::wait_until_served(
        &format!("http://{origin}/live/demo/master.m3u8"),
        Duration::from_secs(60),
    );
    support::wait_until_served(
        &format!("http://{address}/healthz"),
        Duration::from_secs(10),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut listeners = tokio::task::JoinSet::new();
    for index in 0..mp3 + ts {
        let stop = stop.clone();
        let (path, icy) = if index < mp3 {
            ("/live/demo/stream.mp3", index % 2 == 1)
        } else {
            ("/live/demo/stream.ts", false)
        };
        // The first of each kind is kept whole, to decode.
        let keep = index <= 1 || index == mp3;
        listeners.spawn(async move { (index, listen(address, path, icy, keep, stop).await) });
        if index % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A listener of the packager itself: how evenly the stream comes before any edge.
    let reference = tokio::spawn(listen(
        origin,
        "/live/demo/stream.mp3",
        false,
        false,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Upgrade by the script, to an edge on the epoll engine; then again, back to the engine
    // the kernel offers (io_uring here): viewers go from each engine to the other.
    let (said, second) = upgrade_by_script(
        &dir.path().join("second.log"),
        &socket,
        address,
        origin,
        &["--fanout", "epoll"],
    );
    assert!(exits(&mut first, Duration::from_secs(5)).success());
    print!("{said}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let upgrade = Instant::now();
    let _third = start_edge(port, origin, &socket, true);
    while !gone(second.0) {
        assert!(
            upgrade.elapsed() < Duration::from_secs(10),
            "the second edge stayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "the second edge (epoll) exited {} ms after the third (io_uring) started",
        upgrade.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Every listener is the third edge's now.
    let (_, metrics) = support::http_get(address, "/metrics").await;
    let viewers: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("estuary_edge_stream_viewers{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    stop.store(true, Ordering::SeqCst);

    let reference = reference.await.unwrap().longest_gap;
    let mut heard: Vec<(usize, Heard)> = Vec::new();
    while let Some(done) = listeners.join_next().await {
        heard.push(done.unwrap());
    }
    heard.sort_by_key(|(index, _)| *index);
    let cut: Vec<_> = heard
        .iter()
        .filter_map(|(index, heard)| heard.cut.as_ref().map(|why| (*index, why.clone())))
        .collect();
    let mut gaps: Vec<Duration> = heard.iter().map(|(_, heard)| heard.longest_gap).collect();
    gaps.sort();
    // A wait longer than 500 ms counts against the edges unless the packager's own listener
    // waited as long (a pause of the stream reaches every listener, upgrade or not).
    let limit = Duration::from_millis(500).max(reference + Duration::from_millis(100));
    let over = gaps.iter().filter(|gap| **gap > limit).count();
    let least = heard
        .iter()
        .map(|(_, heard)| heard.bytes.len())
        .min()
        .unwrap_or(0);
    println!(
        "{mp3} MP3 listeners (half with ICY metadata) and {ts} TS viewers across two upgrades: \
         {} cut; longest wait between reads: median {} ms, worst {} ms ({} ms for a listener \
         of the packager), {over} over {} ms; the least any received: {least} bytes",
        cut.len(),
        gaps[gaps.len() / 2].as_millis(),
        gaps[gaps.len() - 1].as_millis(),
        reference.as_millis(),
        limit.as_millis(),
    );
    assert!(cut.is_empty(), "listeners cut: {cut:?}");
    assert_eq!(viewers as usize, mp3 + ts, "viewers on the third edge");
    // A chunk lands every third of a second; the upgrades must add no long wait.
    assert_eq!(
        over,
        0,
        "waits over {limit:?}; the longest: {:?}",
        &gaps[gaps.len().saturating_sub(5)..]
    );
    // What the kept listeners heard decodes from end to end.
    let errors = decode_errors(&heard[0].1.bytes, "mp3", dir.path());
    assert!(errors.is_empty(), "the MP3 listener's bytes: {errors}");
    let errors = decode_errors(&icy_audio(&heard[1].1.bytes), "mp3", dir.path());
    assert!(errors.is_empty(), "the ICY listener's audio: {errors}");
    let errors = decode_errors(&heard[mp3].1.bytes, "mpegts", dir.path());
    assert!(errors.is_empty(), "the TS viewer's bytes: {errors}");
}

/// HTTP/2 over cleartext (prior knowledge) to `address`: the request sender, and the task
/// driving the connection, which ends when the connection does.
async fn http2_connection(
    address: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(address).await.unwrap());
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

fn get(path: &str) -> hyper::Request<http_body_util::Empty<bytes::Bytes>> {
    hyper::Request::get(format!("http://edge{path}"))
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// An HTTP/2 client on the old edge is told to go (GOAWAY) as soon as the new edge serves, and
/// the segment it is downloading on that connection still arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_goaway_at_an_upgrade_and_finish_their_download() {
    use http_body_util::BodyExt as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("edge.takeover");
    let asked = Arc::new(AtomicBool::new(false));
    let upstream = support::slow_upstream(asked.clone());
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut first = start_edge(port, upstream, &socket, false);
    support::wait_until_served(
        &format!("http://{address}/healthz"),
        Duration::from_secs(10),
    );
    let (mut sender, connection) = http2_connection(address).await;
    let answer = sender.send_request(get("/healthz")).await.unwrap();
    assert_eq!(answer.status(), 200);
    let slow = sender
        .send_request(get("/live/demo/v360/100.m4s"))
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    let download =
        tokio::spawn(async move { slow.into_body().collect().await.map(|b| b.to_bytes().len()) });
    while !asked.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let upgrade = Instant::now();
    let _second = start_edge(port, upstream, &socket, true);
    // The old edge closes the connection to new requests once the new one serves: a request
    // on it is refused by the client (GOAWAY) long before the download ends.
    let refused = loop {
        assert!(
            upgrade.elapsed() < Duration::from_secs(10),
            "the old edge never sent GOAWAY"
        );
        let ready = sender.ready().await;
        let refused = match ready {
            Err(_) => true,
            Ok(()) => sender.send_request(get("/healthz")).await.is_err(),
        };
        if refused {
            break upgrade.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let bytes = download.await.unwrap().expect("the download, whole");
    assert_eq!(bytes, support::SLOW_SEGMENT_BYTES);
    let downloaded = upgrade.elapsed();
    assert!(
        connection.await.unwrap().is_ok(),
        "the connection closed gracefully"
    );
    assert!(exits(&mut first, Duration::from_secs(10)).success());
    println!(
        "HTTP/2: GOAWAY {} ms after the new edge started; the download on the connection \
         ended whole {} ms after it",
        refused.as_millis(),
        downloaded.as_millis()
    );
    assert!(
        refused < downloaded,
        "GOAWAY came before the download ended"
    );
    // A new connection is served by the new edge.
    let (mut sender, _) = http2_connection(address).await;
    assert_eq!(
        sender.send_request(get("/healthz")).await.unwrap().status(),
        200
    );
}
