//! End to end: an edge upgraded in place. A new `estuary edge --takeover SOCKET` takes the
//! running edge's listening socket over a Unix socket while a client connects again and again
//! and a viewer takes a segment the upstream sends slowly: no connection is refused or cut,
//! the segment in flight reaches its viewer whole from the old process, which then exits on its
//! own; a second upgrade, by `scripts/upgrade-edge`, takes the socket from the first new
//! process the same way, and eight more show that no generation holds more descriptors than
//! the one before.

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
    let script = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/upgrade-edge"))
        .arg("--log")
        .arg(dir.path().join("third.log"))
        .arg(&socket)
        .arg(env!("CARGO_BIN_EXE_estuary"))
        .args(["edge", "--listen", &address.to_string()])
        .arg("--upstream")
        .arg(format!("http://{upstream}"))
        .arg("--takeover-socket")
        .arg(&socket)
        .env("ESTUARY_LOG", "warn")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&script.stdout).into_owned();
    let third = said
        .split_whitespace()
        .nth(2)
        .and_then(|pid| pid.parse::<u32>().ok())
        .map(Detached);
    assert!(
        script.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&script.stderr)
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
    let third = third.expect("the script named the new edge");
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
