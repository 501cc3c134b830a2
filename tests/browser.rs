//! End to end in a browser: `estuary demo --keycards` played through its edge by the player
//! page in headless Chromium, driven by playwright-core (web/tests/play.mjs): LL-HLS with
//! hls.js, then DASH with dash.js, the continuous MPEG-TS stream with mpegts.js and the
//! continuous MP4 stream with Media Source Extensions, then LL-HLS again asked of control,
//! which redirects to the edge; then a VP9 and Opus channel's continuous WebM stream in a
//! plain `<video>`, through an edge.

mod support;

use std::io::BufRead as _;
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
            && web.join("node_modules/dashjs").is_dir()
            && web.join("node_modules/mpegts.js").is_dir(),
        "the player page's npm packages are missing: run `npm ci` in web/ (scripts/setup does)"
    );
    let address = format!("127.0.0.1:{}", free_port());
    // Through the edge, with its token bouncer on: the page passes the keycard of its URL to
    // the stream, and the edge carries it into every playlist, part and segment.
    let mut demo = Running(
        estuary()
            .args(["demo", "--listen", &address, "--keycards", "--web"])
            .arg(&web)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut printed = std::io::BufReader::new(demo.0.stdout.take().unwrap());
    let (mut player, mut control) = (None, None);
    while player.is_none() || control.is_none() {
        let mut line = String::new();
        assert!(
            printed.read_line(&mut line).unwrap() > 0,
            "the demo printed no player or control URL"
        );
        if let Some(url) = line.trim().strip_prefix("player:") {
            player = Some(url.trim().to_owned());
        }
        if let Some(url) = line.trim().strip_prefix("control:") {
            let url = url.split_whitespace().next().unwrap_or("");
            control = url.split("/live/").next().map(str::to_owned);
        }
    }
    let (player, control) = (player.unwrap(), control.unwrap());
    let keycard = player
        .split_once("?keycard=")
        .expect("a signed player URL")
        .1;
    let master = format!("http://{address}/live/demo/master.m3u8");
    wait_until_served(
        &format!("{master}?keycard={keycard}"),
        Duration::from_secs(20),
    );
    assert_eq!(status_of(&master), 403, "without a keycard");

    let hls = play(&web, &player);
    println!("Chromium + hls.js: {hls}");
    let latency = hls["latencySettledMedian"]
        .as_f64()
        .expect("hls.js measured a latency");
    assert!(latency <= 2.0, "LL-HLS live latency {latency:.2} s");

    let dash = play(&web, &format!("{player}&format=dash"));
    println!("Chromium + dash.js: {dash}");

    // The continuous streams through the edge's fan-out engine: MPEG-TS with mpegts.js, MP4
    // with Media Source Extensions.
    let ts = play(&web, &format!("{player}&format=ts"));
    println!("Chromium + mpegts.js, stream.ts: {ts}");
    let mp4 = play(&web, &format!("{player}&format=mp4"));
    println!("Chromium + MSE, stream.mp4: {mp4}");

    // Asking control instead: hls.js follows its redirect to the edge, with the keycard
    // control signed.
    let page = player.split('?').next().unwrap();
    let redirected = play(&web, &format!("{page}?control={control}"));
    println!("Chromium + hls.js through control's redirect: {redirected}");
    assert!(demo.terminate(Duration::from_secs(15)).success());

    // WebM: a channel in VP9 and Opus, its stream.webm through an edge, in a <video> with no
    // player library.
    let packager = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut origin = Running(
        estuary()
            .args(["packager", "--listen", &packager.to_string(), "--web"])
            .arg(&web)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _ingest = Running(
        support::test_ingest(packager, &["--video-codec", "vp9", "--audio", "opus"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (_edge, edge) = support::start_edge(packager, &[]);
    wait_until_served(
        &format!("http://{edge}/live/demo/master.m3u8"),
        Duration::from_secs(30),
    );
    let webm = play(&web, &format!("http://{edge}/play/demo?format=webm"));
    println!("Chromium, <video> with stream.webm: {webm}");
    assert_eq!(webm["level"], "640x360", "{webm}");
    assert!(origin.terminate(Duration::from_secs(10)).success());
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
        "{url}: the video played {played:.1} s in 20 s: {report}"
    );
    // Every playlist, part and segment was answered: no error carries an HTTP status.
    let refused: Vec<_> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|error| error.as_str())
        .filter(|error| {
            error
                .split(' ')
                .any(|word| word.len() == 3 && (word.starts_with('4') || word.starts_with('5')))
        })
        .collect();
    assert!(refused.is_empty(), "{url}: requests refused: {refused:?}");
    report
}

fn status_of(url: &str) -> u16 {
    let answer = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&answer.stdout).parse().unwrap_or(0)
}
