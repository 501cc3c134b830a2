//! End to end in a browser: `estuary demo` played by the player page (hls.js, low-latency mode)
//! in headless Chromium, driven by playwright-core (web/tests/play.mjs).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Running, estuary, free_port, require_tool, wait_until_served};

#[test]
fn the_player_page_plays_ll_hls_in_chromium() {
    require_tool("node", "nodejs");
    require_tool("chromium", "chromium");
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir()
            && web.join("node_modules/hls.js").is_dir(),
        "the player page's npm packages are missing: run `npm ci` in web/ (scripts/setup does)"
    );
    let address = format!("127.0.0.1:{}", free_port());
    let mut demo = Running(
        estuary()
            .args(["demo", "--listen", &address, "--web"])
            .arg(&web)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let master = format!("http://{address}/live/demo/master.m3u8");
    wait_until_served(&master, Duration::from_secs(20));

    let output = Command::new("node")
        .arg(web.join("tests/play.mjs"))
        .args([&format!("http://{address}/play/demo"), "20"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the browser run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(output.stdout.trim_ascii()).expect("the driver prints JSON");
    println!("Chromium + hls.js: {report}");
    assert!(
        report["fatal"].is_null(),
        "fatal error: {}",
        report["fatal"]
    );
    let played = report["played"].as_f64().unwrap();
    assert!(played >= 18.0, "the video played {played:.1} s in 20 s");
    let latency = report["latencySettledMedian"]
        .as_f64()
        .expect("hls.js measured a latency");
    assert!(latency <= 2.0, "live latency {latency:.2} s");
    assert!(demo.terminate(Duration::from_secs(15)).success());
}
