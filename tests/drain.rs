//! End to end: an edge drained behind control. Control in front of two edges (London and
//! Frankfurt), each its own process reporting to it, before an upstream that sends segments
//! slowly. SIGTERM to the London edge while it sends a segment: control sends London's viewers
//! to Frankfurt within 1.5 s, the segment in flight reaches its viewer whole, and the edge
//! then exits on its own.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use support::{Running, estuary, free_port, require_tool};

const REPORT_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const LONDON: &str = "81.2.69.142";
/// The size of the segment the slow upstream sends.
const SEGMENT_BYTES: usize = support::SLOW_SEGMENT_BYTES;

fn write_control_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("report-keys.txt"), format!("edges {REPORT_KEY}\n")).unwrap();
    std::fs::write(
        dir.join("city.mmdb"),
        estuary_control::geo::test_database(&[(
            "81.2.69.142/31",
            "GB",
            "London",
            51.5142,
            -0.0931,
        )]),
    )
    .unwrap();
    let path = dir.join("control.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ngeoip = \"city.mmdb\"\n\n\
             [reports]\nkey_file = \"report-keys.txt\"\n\n\
             [[sites]]\nname = \"lon\"\nlatitude = 51.5\nlongitude = -0.13\ncost_per_gb = 0.02\ncapacity_mbps = 1000\n\n\
             [[sites]]\nname = \"fra\"\nlatitude = 50.1\nlongitude = 8.7\ncost_per_gb = 0.01\ncapacity_mbps = 1000\n"
        ),
    )
    .unwrap();
    path
}

fn start_edge(
    site: &str,
    port: u16,
    upstream: SocketAddr,
    control: u16,
    dir: &std::path::Path,
) -> Running {
    Running(
        estuary()
            .args(["edge", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--upstream")
            .arg(format!("http://{upstream}"))
            .arg("--report-key")
            .arg(dir.join("report-keys.txt"))
            .arg("--control")
            .arg(format!("http://127.0.0.1:{control}"))
            .args(["--site", site, "--id", &format!("{site}-1")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Which site control would send a London viewer of the demo channel to (none: no edge).
fn site_for_london(control: u16) -> Option<String> {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "2"])
        .arg(format!(
            "http://127.0.0.1:{control}/api/v1/route?ip={LONDON}&path=/live/demo/master.m3u8"
        ))
        .output()
        .unwrap();
    let decision: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    decision["site"].as_str().map(str::to_owned)
}

#[test]
fn a_draining_edge_gets_no_one_new_and_finishes_the_segment_it_sends() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let asked = Arc::new(AtomicBool::new(false));
    let upstream = support::slow_upstream(asked.clone());
    let control_port = free_port();
    let config = write_control_config(dir.path(), control_port);
    let _control = Running(
        estuary()
            .args(["control", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (london, frankfurt) = (free_port(), free_port());
    let mut draining = start_edge("lon", london, upstream, control_port, dir.path());
    let _other = start_edge("fra", frankfurt, upstream, control_port, dir.path());

    // Both edges report; a London viewer goes to London.
    let started = Instant::now();
    while site_for_london(control_port).as_deref() != Some("lon") {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "control never sent London's viewer to the London edge"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A viewer takes a segment from London, which the upstream sends over about 3 s.
    let viewer = support::slow_segment_viewer(SocketAddr::from(([127, 0, 0, 1], london)), &asked);
    std::thread::sleep(Duration::from_millis(300));

    // SIGTERM: within 1.5 s control sends London's viewers elsewhere.
    let signalled = Instant::now();
    let pid = draining.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    loop {
        let site = site_for_london(control_port);
        if site.as_deref() == Some("fra") {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(1500),
            "control still sends London's viewers to {site:?} 1.5 s after the drain began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let moved_after = signalled.elapsed();

    // The segment in flight reaches its viewer whole, and then the edge stops on its own.
    let answer = viewer.join().unwrap();
    assert_eq!(
        answer,
        format!("200 {SEGMENT_BYTES}"),
        "the segment in flight"
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = draining.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the drained edge did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the drained edge exited with {status}");
    println!(
        "control sent London's viewers to Frankfurt {} ms after SIGTERM; the segment in flight \
         ({SEGMENT_BYTES} bytes) was delivered whole",
        moved_after.as_millis()
    );
}
