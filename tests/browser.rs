//! End to end in a browser: `estuary demo` played by the player page in headless Chromium,
//! driven by playwright-core (web/tests/play.mjs): LL-HLS with hls.js, then DASH with dash.js.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Running, estuary, free_port, require_tool, wait_until_served};

#[test]
fn the_player_page_plays_ll_hls_and_dash_in_chromium() {
    require_tool("node", "nodejs");
    require_tool("chromium", "chromium");
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir()
            && web.join("node_modules/hls.js").is_dir()
            && web.join("node_modules/dashjs").is_dir(),
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

    let hls = play(&web, &format!("http://{address}/play/demo"));
    println!("Chromium + hls.js: {hls}");
    let latency = hls["latencySettledMedian"]
        .as_f64()
        .expect("hls.js measured a latency");
    assert!(latency <= 2.0, "LL-HLS live latency {latency:.2} s");

    let dash = play(&web, &format!("http://{address}/play/demo?format=dash"));
    println!("Chromium + dash.js: {dash}");
    assert!(demo.terminate(Duration::from_secs(15)).success());
}

/// Plays the page for 20 s; checks it played at least 18 s with no fatal error, and returns
/// what the page measured.
fn play(web: &Path, url: &str) -> serde_json::Value {
    let output = Command::new("node")
        .arg(web.join("tests/play.mjs"))
        .args([url, "20"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the browser run of {url} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(output.stdout.trim_ascii()).expect("the driver prints JSON");
    assert!(
        report["fatal"].is_null(),
        "{url}: fatal error: {}",
        report["fatal"]
    );
    let played = report["played"].as_f64().unwrap();
    assert!(
        played >= 18.0,
        "{url}: the video played {played:.1} s in 20 s"
    );
    report
}
