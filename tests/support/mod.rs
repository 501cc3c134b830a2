//! What the end-to-end tests share: running the `estuary` binary, checking for the external
//! tools they need, and reading CMAF tracks back with an independent MP4 parser (mp4-atom).

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;

use mp4_atom::{Any, DecodeMaybe};

pub fn estuary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_estuary"));
    // Quiet unless a run asks for more (ESTUARY_TEST_LOG=estuary_ingest=debug, say).
    let level = std::env::var("ESTUARY_TEST_LOG").unwrap_or_else(|_| "warn".into());
    command.env("ESTUARY_LOG", level);
    command
}

/// Fails the test, saying how to install `tool`, when it is missing.
pub fn require_tool(tool: &str, debian_package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "{tool} is needed for this test: apt-get install {debian_package}"
    );
}

/// The web folder, after checking that node, Chromium and playwright-core are there to drive
/// a headless browser.
pub fn require_browser() -> std::path::PathBuf {
    require_tool("node", "nodejs");
    require_tool("chromium", "chromium");
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in web/ (scripts/setup does)"
    );
    web
}

/// ffmpeg reading a 640x360, 30 fps test pattern and a 48 kHz tone for `seconds`, at their
/// real pace when `realtime`; the caller adds the codecs and the output.
pub fn ffmpeg_test_pattern(seconds: impl std::fmt::Display, realtime: bool) -> Command {
    require_tool("ffmpeg", "ffmpeg");
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-y"]);
    if realtime {
        command.arg("-re");
    }
    command
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string(), "-shortest"]);
    command
}

/// Whether this machine's GStreamer has `element`, as gst-inspect-1.0 sees it.
pub fn has_gstreamer_element(element: &str) -> bool {
    require_tool("gst-inspect-1.0", "gstreamer1.0-tools");
    Command::new("gst-inspect-1.0")
        .args(["--exists", element])
        .status()
        .is_ok_and(|status| status.success())
}

/// One CMAF track read back: its timescale and, per segment (a `styp` or a `moof` whose first
/// sample is where a fragment begins), what it holds.
#[derive(Debug)]
pub struct Track {
    pub timescale: u32,
    pub segments: Vec<Segment>,
    /// Every chunk (`moof` + `mdat`) in order, with its byte range in the input.
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone)]
pub struct Segment {
    /// `tfdt` of the first chunk, in timescale ticks.
    pub start: u64,
    pub duration: u64,
    pub samples: usize,
    pub chunks: usize,
    pub starts_with_sync_sample: bool,
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub start: u64,
    pub duration: u64,
    pub end_offset: usize,
}

impl Track {
    pub fn read(path: &Path) -> Track {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Track::parse(&bytes)
    }

    /// Parses as much of `bytes` as holds whole boxes (an HTTP body may end mid-box).
    pub fn parse(bytes: &[u8]) -> Track {
        let mut cursor = bytes;
        let mut timescale = 0;
        let mut segments: Vec<Segment> = Vec::new();
        let mut chunks = Vec::new();
        let mut new_segment = false;
        loop {
            let atom = match Any::decode_maybe(&mut cursor) {
                Ok(Some(atom)) => atom,
                Ok(None) => break,
                Err(error) => panic!("bad box at byte {}: {error}", bytes.len() - cursor.len()),
            };
            match atom {
                Any::Moov(moov) => timescale = moov.trak[0].mdia.mdhd.timescale,
                Any::Styp(_) => new_segment = true,
                Any::Moof(moof) => {
                    let traf = &moof.traf[0];
                    let start = traf
                        .tfdt
                        .as_ref()
                        .expect("every CMAF chunk has a tfdt")
                        .base_media_decode_time;
                    let default_duration = traf.tfhd.default_sample_duration.unwrap_or(0);
                    let default_flags = traf.tfhd.default_sample_flags.unwrap_or(0);
                    let mut duration = 0u64;
                    let mut samples = 0;
                    let mut first_flags = None;
                    for trun in &traf.trun {
                        for entry in trun.samples.iter() {
                            duration += u64::from(entry.duration.unwrap_or(default_duration));
                            first_flags.get_or_insert(entry.flags.unwrap_or(default_flags));
                            samples += 1;
                        }
                    }
                    // ISO/IEC 14496-12 sample flags: bit 16 is sample_is_non_sync_sample.
                    let sync = first_flags.is_some_and(|flags| flags & 0x1_0000 == 0);
                    if new_segment || segments.is_empty() {
                        segments.push(Segment {
                            start,
                            duration: 0,
                            samples: 0,
                            chunks: 0,
                            starts_with_sync_sample: sync,
                        });
                        new_segment = false;
                    }
                    let segment = segments.last_mut().expect("pushed above");
                    segment.duration += duration;
                    segment.samples += samples;
                    segment.chunks += 1;
                    chunks.push(Chunk {
                        start,
                        duration,
                        end_offset: 0,
                    });
                }
                Any::Mdat(_) => {
                    if let Some(chunk) = chunks.last_mut() {
                        chunk.end_offset = bytes.len() - cursor.len();
                    }
                }
                _ => {}
            }
        }
        assert!(timescale > 0, "no moov box: the CMAF header is missing");
        // A chunk whose mdat has not arrived yet is not whole.
        if chunks.last().is_some_and(|chunk| chunk.end_offset == 0) {
            chunks.pop();
        }
        Track {
            timescale,
            segments,
            chunks,
        }
    }

    pub fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / f64::from(self.timescale)
    }
}

/// The first stream of `path` as ffprobe describes it.
pub fn ffprobe_stream(path: &Path) -> serde_json::Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_streams"])
        .arg(path)
        .output()
        .expect("running ffprobe");
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut parsed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("ffprobe JSON");
    parsed["streams"][0].take()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process that is killed when the test ends, however it ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// SIGTERM, then the exit status (within `limit`).
    pub fn terminate(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "pid {pid} did not stop on SIGTERM within {limit:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// GET `path` from `address` over HTTP/1.1: the status and the body as text.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> (hyper::StatusCode, String) {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `url` answers 200 (asked with curl), at most `limit`.
pub fn wait_until_served(url: &str, limit: std::time::Duration) {
    require_tool("curl", "curl");
    let started = std::time::Instant::now();
    loop {
        let answer = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            .unwrap();
        if answer.stdout == b"200" {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "nothing at {url} after {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Starts `estuary packager` (with `extra` arguments) on a free port and waits until it
/// answers.
pub async fn start_packager(extra: &[&str]) -> (Running, std::net::SocketAddr) {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = estuary()
        .args(["packager", "--listen", &address.to_string()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the packager did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (running, address)
}

/// Runs `command` to its end; it must succeed (else both its outputs are shown). Its standard
/// output.
/// Runs `command` to its end, at most `limit`: past it the process is killed and the test fails
/// saying so, rather than hanging the suite.
pub fn status_within(
    command: &mut Command,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let mut child = Running(command.spawn().unwrap());
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "{command:?} did not finish within {limit:?}: killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Opens a viewer of `path` on `address` with a plain socket and reads the response head; a
/// receive buffer of `receive_buffer` bytes when given (set before connecting).
pub async fn open_viewer(
    address: std::net::SocketAddr,
    path: &str,
    receive_buffer: Option<u32>,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    let mut stream = socket.connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(std::time::Duration::from_secs(15), stream.read(&mut byte))
            .await
            .expect("a response head within 15 s")
            .unwrap();
        assert_eq!(read, 1, "{path}: closed inside the head");
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// `estuary ingest` of the test pattern as channel `demo` (360p and AAC) into the packager at
/// `packager`, with `extra` arguments; its standard output is dropped.
pub fn test_ingest(packager: std::net::SocketAddr, extra: &[&str]) -> Command {
    let mut command = estuary();
    command
        .args(["ingest", "--source", "test", "--channel", "demo"])
        .args(["--renditions", "360", "--to"])
        .arg(format!("http://{packager}/ingest"))
        .args(extra)
        .stdout(std::process::Stdio::null());
    command
}

/// Starts `estuary edge` on a free port in front of `upstream` (`http://` is added), with
/// `extra` arguments, and waits until it answers: the process and its address.
pub fn start_edge(
    upstream: std::net::SocketAddr,
    extra: &[&str],
) -> (Running, std::net::SocketAddr) {
    start_edge_in(upstream, extra, &[])
}

/// [`start_edge`] with more variables in the edge's environment.
pub fn start_edge_in(
    upstream: std::net::SocketAddr,
    extra: &[&str],
    environment: &[(&str, &str)],
) -> (Running, std::net::SocketAddr) {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = estuary()
        .args(["edge", "--listen", &address.to_string()])
        .arg("--upstream")
        .arg(format!("http://{upstream}"))
        .args(extra)
        .env("ESTUARY_LOG", "warn")
        .envs(environment.iter().copied())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    wait_until_served(
        &format!("http://{address}/healthz"),
        std::time::Duration::from_secs(10),
    );
    (running, address)
}

/// The segment [`slow_upstream`] sends: 2 MiB over about 3 s.
pub const SLOW_SEGMENT_BYTES: usize = 2 << 20;
const SLOW_SEGMENT_PIECES: usize = 30;

/// An upstream on 127.0.0.1 that answers any `.m4s` with [`SLOW_SEGMENT_BYTES`] bytes sent in pieces 100 ms apart,
/// and anything else with 404; `asked` is set when the first segment request arrives.
pub fn slow_upstream(asked: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let asked = asked.clone();
            std::thread::spawn(move || answer_slowly(stream, &asked));
        }
    });
    address
}

fn answer_slowly(mut stream: std::net::TcpStream, asked: &std::sync::atomic::AtomicBool) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("");
    if !path.split('?').next().unwrap_or("").ends_with(".m4s") {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        return;
    }
    asked.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncache-control: max-age=60\r\ncontent-length: {SLOW_SEGMENT_BYTES}\r\nconnection: close\r\n\r\n"
    );
    let piece = vec![0x5au8; SLOW_SEGMENT_BYTES / SLOW_SEGMENT_PIECES];
    let mut sent = 0;
    while sent < SLOW_SEGMENT_BYTES {
        let len = piece.len().min(SLOW_SEGMENT_BYTES - sent);
        if stream.write_all(&piece[..len]).is_err() {
            return;
        }
        sent += len;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A viewer (curl) taking segment 100 of the demo channel from the edge at `edge`, which fetches
/// it from [`slow_upstream`]: returns once the upstream was asked for it, with the viewer's
/// thread, which answers `STATUS BYTES` when the download ends.
pub fn slow_segment_viewer(
    edge: std::net::SocketAddr,
    asked: &std::sync::atomic::AtomicBool,
) -> std::thread::JoinHandle<String> {
    let viewer = std::thread::spawn(move || {
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
            ])
            .args(["--max-time", "30"])
            .arg(format!("http://{edge}/live/demo/v360/100.m4s"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    });
    let started = std::time::Instant::now();
    while !asked.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the edge never asked the upstream for the segment"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    viewer
}
