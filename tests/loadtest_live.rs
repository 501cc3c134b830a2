//! End to end, the load-test commands that talk to live servers. `estuary loadtest replay`
//! sends a log's requests at their logged times, scaled, as an open model: against a server
//! that takes a second and a half over every answer, the requests still leave on the log's
//! schedule, each with its logged client in X-Forwarded-For; against a live channel (ingest,
//! packager, edge), `--map /=live:demo` turns every logged request into a playlist or segment
//! request that the edge answers with 200. `estuary loadtest viewers` plays the same channel
//! as HLS, LL-HLS and DASH viewers would.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Running, estuary, free_port, run_ok, wait_until_served};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A combined-format line for `client` asking for `path` at `second` past 10:00:00.
fn line(client: &str, second: u32, path: &str, bytes: u64) -> String {
    format!(
        "{client} - - [17/May/2015:10:{:02}:{:02} +0000] \"GET {path} HTTP/1.1\" 200 {bytes} \"-\" \"test\"\n",
        second / 60,
        second % 60
    )
}

/// A server that waits `delay` before each answer, noting when each request arrived and the
/// X-Forwarded-For it carried.
async fn slow_server(delay: Duration) -> (SocketAddr, Arc<Mutex<Vec<(Instant, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let noted = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let noted = noted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut piece = [0u8; 1024];
                loop {
                    let Ok(count) = stream.read(&mut piece).await else {
                        return;
                    };
                    if count == 0 {
                        return;
                    }
                    head.extend_from_slice(&piece[..count]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let text = String::from_utf8_lossy(&head[..end]).into_owned();
                        head.drain(..end + 4);
                        let forwarded = text
                            .lines()
                            .find_map(|l| l.strip_prefix("x-forwarded-for: "))
                            .unwrap_or("")
                            .to_owned();
                        noted.lock().unwrap().push((Instant::now(), forwarded));
                        tokio::time::sleep(delay).await;
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (address, arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_does_not_slow_the_arrivals() {
    let dir = tempfile::tempdir().unwrap();
    // 20 requests, one every logged second, from 20 clients; one line out of order.
    let mut log = String::new();
    for second in 0..20 {
        let at = if second == 5 { 7 } else { second };
        log.push_str(&line(&format!("192.0.2.{}", second + 1), at, "/a", 5));
    }
    log.push_str("this line is not a request\n");
    std::fs::write(dir.path().join("access.log"), log).unwrap();

    let (server, arrivals) = slow_server(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let mut command = estuary();
    command
        .args(["loadtest", "replay", "--speed", "10", "--log"])
        .arg(dir.path().join("access.log"))
        .arg("--target")
        .arg(format!("http://{server}"))
        .arg("--json")
        .arg(dir.path().join("report.json"));
    let report = tokio::task::spawn_blocking(move || run_ok(&mut command))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(report.contains("answers by status: 200: 20"), "{report}");
    assert!(report.contains("client-side failures: none"), "{report}");
    assert!(report.contains("1 bad lines"), "{report}");
    assert!(report.contains("latency ms: p50 1"), "{report}");
    // 19 logged seconds at 10x is 1.9 s; a closed model would have taken 20 × 1.5 s.
    assert!(took < Duration::from_secs(8), "took {took:?}");

    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 20);
    let spread = arrivals.last().unwrap().0 - arrivals[0].0;
    assert!(
        spread > Duration::from_millis(1500) && spread < Duration::from_millis(2600),
        "the requests arrived over {spread:?}, not the log's 1.9 s"
    );
    let mut clients: Vec<&str> = arrivals.iter().map(|(_, c)| c.as_str()).collect();
    // The sixth line (192.0.2.6) is stamped a second after the seventh (192.0.2.7).
    assert_eq!(
        clients[5], "192.0.2.7",
        "the out-of-order line is put back in time order"
    );
    clients.sort_unstable();
    clients.dedup();
    assert_eq!(clients.len(), 20, "every logged client: {clients:?}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["requests"], 20);
    assert_eq!(json["statuses"]["200"], 20);
    assert!(
        json["latency_ms"]["p99"].as_f64().unwrap() >= 1500.0,
        "{json}"
    );
}

/// A live channel `demo` (one 360p rendition) through an edge: the edge's address and the
/// processes, which stop when dropped.
async fn live_channel() -> (SocketAddr, Vec<Running>) {
    support::require_tool("gst-launch-1.0", "gstreamer1.0-tools");
    let packager = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let packager_process = Running(
        estuary()
            .args(["packager", "--listen", &packager.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ingest = Running(
        support::test_ingest(packager, &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let edge_process = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string(), "--upstream"])
            .arg(format!("http://{packager}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let master = format!("http://{edge}/live/demo/master.m3u8");
    tokio::task::spawn_blocking(move || wait_until_served(&master, Duration::from_secs(30)))
        .await
        .unwrap();
    (edge, vec![edge_process, ingest, packager_process])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_is_mapped_onto_a_live_channel_through_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, _running) = live_channel().await;

    // A web site's log: pages (small) and pictures (large), and a path the map sends on.
    let mut log = String::new();
    for second in 0..40 {
        let (path, bytes) = match second % 3 {
            0 => ("/blog/index.html", 9_000),
            1 => ("/images/big.png", 800_000),
            _ => ("/files/live/demo/master.m3u8", 500),
        };
        log.push_str(&line("198.51.100.7", second, path, bytes));
    }
    std::fs::write(dir.path().join("site.log"), log).unwrap();
    let mut command = estuary();
    command
        .args(["loadtest", "replay", "--speed", "20"])
        .args(["--map", "/files/=/", "--map", "/=live:demo", "--log"])
        .arg(dir.path().join("site.log"))
        .arg("--target")
        .arg(format!("http://{edge}"));
    let report = tokio::task::spawn_blocking(move || run_ok(&mut command))
        .await
        .unwrap();
    assert!(report.contains("answers by status: 200: 40"), "{report}");
    assert!(report.contains("client-side failures: none"), "{report}");
    // 13 pictures became segments: each at least a few kilobytes of video.
    let received: f64 = report
        .split("received ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|mb| mb.parse().ok())
        .unwrap();
    assert!(received > 0.05, "{report}");
}

/// The report's line `label: p50 N, …` as its p50.
fn p50(report: &str, label: &str) -> f64 {
    report
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.trim_start_matches(": p50 ").split(',').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {label} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_play_a_live_channel_as_hls_llhls_and_dash() {
    let (edge, _running) = live_channel().await;
    let mut latencies = Vec::new();
    for (kind, path) in [
        ("llhls", "master.m3u8"),
        ("hls", "master.m3u8"),
        ("dash", "manifest.mpd"),
    ] {
        let mut command = estuary();
        command
            .args(["loadtest", "viewers", "--count", "4", "--duration", "8s"])
            .args(["--kind", kind, "--url"])
            .arg(format!("http://{edge}/live/demo/{path}"));
        let report = tokio::task::spawn_blocking(move || run_ok(&mut command))
            .await
            .unwrap();
        assert!(report.contains(": 4 started playing"), "{kind}: {report}");
        assert!(report.contains("failures: none"), "{kind}: {report}");
        let startup = p50(&report, "start-up ms");
        assert!(startup > 0.0 && startup < 5000.0, "{kind}: {report}");
        latencies.push((kind, p50(&report, "live latency ms")));
    }
    // LL-HLS plays closest to real time: a few parts behind, where HLS plays segments behind.
    let (llhls, hls) = (latencies[0].1, latencies[1].1);
    assert!(llhls > 0.0 && llhls < 4000.0, "{latencies:?}");
    assert!(llhls < hls, "{latencies:?}");
}
