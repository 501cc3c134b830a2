//! End to end: `estuary control` in front of three edges (lon, fra, nyc), each its own process
//! reporting to it, before a packager fed by an ingest. Viewers are placed by a GeoIP city
//! database written by the test (the same addresses and places as MaxMind's test database),
//! redirected with keycards the edges accept, and followed by ffmpeg.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Running, estuary, free_port, http_get, require_tool};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The report key the edges sign with, and its id.
const REPORT_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const REPORT_KEY_ID: &str = "edges";
const ADMIN_TOKEN: &str = "let-me-in";
const SITES: [(&str, f64, f64, f64); 3] = [
    ("lon", 51.5, -0.13, 0.02),
    ("fra", 50.1, 8.7, 0.01),
    ("nyc", 40.7, -74.0, 0.03),
];
const LONDON: &str = "81.2.69.142";
const MILTON_WA: &str = "216.160.83.56";
const ZONE_CLIENT: &str = "198.51.100.7";

/// Writes control's configuration (with a coverage zone for 198.51.100.0/24 placed in New
/// York, and the packager as the origin that says which channels exist), its key files
/// (keycards, and reports in `report-keys.txt`) and GeoIP database into `dir`.
fn write_config(dir: &Path, origin: Option<SocketAddr>) -> std::path::PathBuf {
    std::fs::write(dir.join("keys.txt"), format!("{KEY}\n")).unwrap();
    std::fs::write(
        dir.join("report-keys.txt"),
        format!("{REPORT_KEY_ID} {REPORT_KEY}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("city.mmdb"),
        estuary_control::geo::test_database(&[
            ("81.2.69.142/31", "GB", "London", 51.5142, -0.0931),
            ("216.160.83.56/29", "US", "Milton", 47.2513, -122.3149),
        ]),
    )
    .unwrap();
    let mut text = String::from(
        "geoip = \"city.mmdb\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nadmin_token = \"let-me-in\"\n\n\
         [keycards]\nkey_file = \"keys.txt\"\nlifetime = \"5m\"\n\n\
         [reports]\nkey_file = \"report-keys.txt\"\n\n\
         [policy]\ndefault = \"closest\"\nchannels = { cheap = \"least_cost\" }\n",
    );
    if let Some(origin) = origin {
        text.insert_str(0, &format!("origins = [\"http://{origin}\"]\n"));
    }
    for (name, latitude, longitude, cost) in SITES {
        text.push_str(&format!(
            "\n[[sites]]\nname = \"{name}\"\nlatitude = {latitude}\nlongitude = {longitude}\n\
             cost_per_gb = {cost}\ncapacity_mbps = 1000\n"
        ));
    }
    text.push_str(
        "\n[[zones]]\nname = \"campus\"\nnetworks = [\"198.51.100.0/24\"]\n\
         latitude = 40.7\nlongitude = -74.0\n",
    );
    let path = dir.join("control.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_edge(
    site: &str,
    address: SocketAddr,
    packager: SocketAddr,
    control: SocketAddr,
    keys: &Path,
) -> Running {
    Running(
        estuary()
            .args(["edge", "--listen", &address.to_string()])
            .arg("--upstream")
            .arg(format!("http://{packager}"))
            .arg("--key-file")
            .arg(keys)
            .arg("--report-key")
            .arg(keys.with_file_name("report-keys.txt"))
            .arg("--control")
            .arg(format!("http://{control}"))
            .args(["--site", site, "--id", &format!("{site}-1")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `estuary control` with `config`, once it listens: its address and the process.
async fn start_control(config: &Path) -> (SocketAddr, Running) {
    let control = local(free_port());
    let process = Running(
        estuary()
            .args(["control", "--listen", &control.to_string()])
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while tokio::net::TcpStream::connect(control).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "control never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (control, process)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Asks control for `path` as `client` (X-Forwarded-For from the trusted 127.0.0.1): the
/// status and the Location.
fn redirect(control: SocketAddr, client: &str, path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .args(["-H", &format!("X-Forwarded-For: {client}")])
        .arg(format!("http://{control}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, location) = text.split_once(' ').unwrap_or((&text, ""));
    (status.parse().unwrap_or(0), location.to_owned())
}

async fn decision(control: SocketAddr, client: &str, path: &str) -> serde_json::Value {
    let (status, body) = http_get(control, &format!("/api/v1/route?ip={client}&path={path}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// GET `path` from control with the admin token: the status and the body.
fn admin_get(control: SocketAddr, path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .arg(format!("http://{control}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.parse().unwrap_or(0), body.to_owned())
}

/// POSTs `body` to control's reports as an edge would, signed with the report key when `signed`:
/// the body of the answer, a space, and the status.
fn post_report(control: SocketAddr, body: &str, signed: bool) -> String {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-w",
        " %{http_code}",
        "-X",
        "POST",
        "--data-binary",
        body,
    ]);
    if signed {
        let key = estuary_proto::KeycardKey::from_hex(Some(REPORT_KEY_ID), REPORT_KEY).unwrap();
        let now = support::unix_now() * 1000.0;
        let header = estuary_proto::report::sign(&key, body.as_bytes(), now as u64);
        command.args(["-H", &format!("X-Estuary-Signature: {header}")]);
    }
    let output = command
        .arg(format!("http://{control}/api/v1/reports"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn site_for(control: SocketAddr, client: &str, path: &str) -> Option<String> {
    decision(control, client, path).await["site"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_go_to_the_best_edge_and_players_follow() {
    require_tool("curl", "curl");
    require_tool("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let packager = local(free_port());
    let config = write_config(dir.path(), Some(packager));
    let keys = dir.path().join("keys.txt");

    let _packager = Running(
        estuary()
            .args(["packager", "--listen", &packager.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _ingest = Running(
        estuary()
            .args([
                "ingest",
                "--source",
                "test",
                "--channel",
                "demo",
                "--renditions",
                "360",
            ])
            .arg("--to")
            .arg(format!("http://{packager}/ingest"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (control, _control) = start_control(&config).await;
    let edges: Vec<SocketAddr> = SITES.iter().map(|_| local(free_port())).collect();
    let mut running: Vec<Running> = SITES
        .iter()
        .zip(&edges)
        .map(|((site, ..), address)| start_edge(site, *address, packager, control, &keys))
        .collect();

    // Every edge reports within a few seconds.
    let started = Instant::now();
    loop {
        let (_, body) = http_get(control, "/healthz").await;
        if body.contains("\"live_edges\":3") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the edges never reported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Control asks the packager which channels exist. Until it has heard an answer it sends
    // every channel on; once it has, a channel the packager does not have is answered 404 by
    // control itself, and the demo channel is redirected once the packager has it.
    let master = "/live/demo/master.m3u8";
    let started = Instant::now();
    while redirect(control, LONDON, "/live/nosuch/master.m3u8").0 != 404 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "control never heard which channels the packager has"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while redirect(control, LONDON, master).0 != 302 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "control never redirected to the demo channel"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // London goes to lon when closest counts, to fra when cost does; Milton (WA) to nyc; the
    // campus zone, placed in New York, beats GeoIP.
    assert_eq!(
        site_for(control, LONDON, master).await.as_deref(),
        Some("lon")
    );
    assert_eq!(
        site_for(control, LONDON, "/live/cheap/master.m3u8")
            .await
            .as_deref(),
        Some("fra")
    );
    assert_eq!(
        site_for(control, MILTON_WA, master).await.as_deref(),
        Some("nyc")
    );
    let zone = decision(control, ZONE_CLIENT, master).await;
    assert_eq!(zone["group"]["source"], "zone", "{zone}");
    assert_eq!(zone["site"], "nyc", "{zone}");

    // The redirect names the edge and carries a keycard for the channel, which the edge
    // accepts; without it the edge says 403. Of the query, only what the layout defines
    // stays, and a keycard the viewer brought is replaced.
    let (status, location) = redirect(control, LONDON, &format!("{master}?x=1&keycard=old"));
    assert_eq!(status, 302);
    let lon_edge = format!("http://{}{master}?keycard=", edges[0]);
    assert!(location.starts_with(&lon_edge), "{location}");
    assert!(location.contains("acl=/live/demo/*"), "{location}");
    assert!(!location.contains("old"), "{location}");
    let status_of = |url: &str| {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let started = Instant::now();
    while status_of(&location) != "200" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the edge never served {location}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status_of(&format!("http://{}{master}", edges[0])), "403");

    // ffmpeg asks control, follows the redirect, and plays 20 s from the edge.
    let played = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .arg("-i")
        .arg(format!("http://{control}{master}"))
        .args(["-t", "20", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        played.status.success() && played.stderr.is_empty(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&played.stderr)
    );

    // The operator changes the default policy to least_cost (with the admin token): London now
    // goes to fra; without the token, or with a wrong one, nothing changes.
    let put_policy = |token: Option<&str>, body: &str| {
        let mut command = Command::new("curl");
        command.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-d",
            body,
        ]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let output = command
            .arg(format!("http://{control}/api/v1/policy"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let cheapest = "{\"default\": \"least_cost\"}";
    assert_eq!(put_policy(None, cheapest), "401");
    assert_eq!(put_policy(Some("guess"), cheapest), "401");
    assert_eq!(
        site_for(control, LONDON, master).await.as_deref(),
        Some("lon")
    );
    assert_eq!(
        put_policy(Some("let-me-in"), "{\"default\": \"cheapest\"}"),
        "400"
    );
    assert_eq!(put_policy(Some("let-me-in"), cheapest), "200");
    assert_eq!(
        site_for(control, LONDON, master).await.as_deref(),
        Some("fra")
    );
    assert_eq!(
        put_policy(
            Some("let-me-in"),
            "{\"default\": \"closest\", \"channels\": {\"cheap\": \"least_cost\"}}"
        ),
        "200"
    );
    assert_eq!(
        site_for(control, LONDON, master).await.as_deref(),
        Some("lon")
    );

    // The admin API's views: the redirects so far are there, per group and per channel.
    let (_, sites) = http_get(control, "/api/v1/sites").await;
    let sites: serde_json::Value = serde_json::from_str(&sites).unwrap();
    assert_eq!(sites["sites"].as_array().unwrap().len(), 3, "{sites}");
    let (status, decisions) = admin_get(control, "/api/v1/decisions");
    assert_eq!(status, 200, "{decisions}");
    assert!(decisions.contains("\"GB\""), "{decisions}");
    assert!(decisions.contains("\"keycard_id\":\""), "{decisions}");
    let (status, channels) = admin_get(control, "/api/v1/channels");
    assert_eq!(status, 200, "{channels}");
    assert!(channels.contains("\"demo\""), "{channels}");
    // Without the token, the views of viewers are refused.
    for path in ["/api/v1/decisions", "/api/v1/channels", "/api/v1/events"] {
        let (status, body) = http_get(control, path).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, openapi) = http_get(control, "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let openapi: serde_json::Value = serde_json::from_str(&openapi).unwrap();
    assert!(openapi["paths"]["/api/v1/policy"]["put"]["security"].is_array());

    // Stop lon's edge: its drain is reported at once, and London is sent elsewhere (at the
    // latest once control has not heard from it for 3 s).
    running[0].terminate(Duration::from_secs(10));
    let stopped = Instant::now();
    while site_for(control, LONDON, master).await.as_deref() == Some("lon") {
        assert!(
            stopped.elapsed() < Duration::from_millis(4500),
            "decisions still name the stopped edge after {:?}",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved = stopped.elapsed();
    let elsewhere = decision(control, LONDON, master).await;
    assert_eq!(elsewhere["site"], "fra", "{elsewhere}");
    assert_eq!(
        elsewhere["candidates"][0]["skipped"], "no live edge",
        "{elsewhere}"
    );
    println!("the stopped edge got no more viewers after {moved:?}");
    // Its last report said it was draining; with no report since, it is lost within 3 s.
    loop {
        let (_, edges_now) = http_get(control, "/api/v1/edges").await;
        if edges_now.contains("\"mood\":\"lost\"") {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(8),
            "the stopped edge is not lost: {edges_now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Start it again: it gets viewers again.
    running[0] = start_edge("lon", edges[0], packager, control, &keys);
    let restarted = Instant::now();
    while site_for(control, LONDON, master).await.as_deref() != Some("lon") {
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "the edge never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "the restarted edge got viewers after {:?}",
        restarted.elapsed()
    );
}

/// Bad input: reports that do not parse, addresses that are not addresses, paths outside the
/// layout; at start, a corrupt GeoIP file and an unknown key in the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_reasons() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    let (control, _control) = start_control(&config).await;
    let post = |body: &str| post_report(control, body, true);
    let answer = post("{\"id\": 3");
    assert!(
        answer.ends_with(" 400") && answer.contains("not an edge report"),
        "{answer}"
    );
    let unknown_site = "{\"id\":\"x\",\"site\":\"mars\",\"url\":\"http://127.0.0.1:1\",\"clients\":0,\
        \"egress_bps\":0,\"cache_hit_ratio\":1,\"cpu\":0,\"mood\":\"happy\"}";
    let answer = post(unknown_site);
    assert!(
        answer.ends_with(" 400") && answer.contains("mars"),
        "{answer}"
    );
    let answer = post_report(control, &unknown_site.replace("mars", "lon"), false);
    assert!(
        answer.ends_with(" 401") && answer.contains("not signed"),
        "{answer}"
    );
    let (_, edges) = http_get(control, "/api/v1/edges").await;
    assert_eq!(edges, "{\"edges\":[]}", "nothing changed");

    let (status, body) = http_get(control, "/api/v1/route?ip=not-an-ip&path=/live/demo/x").await;
    assert_eq!(status, 400);
    assert!(body.contains("not an IP address"), "{body}");
    let (status, body) = http_get(control, "/api/v1/route?ip=192.0.2.1&path=/elsewhere").await;
    assert_eq!(status, 400, "{body}");
    // Only the canonical spelling of a media path is redirected; the rest is a problem that
    // names the path.
    for (path, expected) in [
        ("//live/demo/master.m3u8", 400),
        ("/live/%64emo/master.m3u8", 400),
        ("/live/demo/./master.m3u8", 400),
        ("/live/demo/v720/media.m3u8?_HLS_msn=x", 400),
        ("/live/demo/nothing.txt", 404),
        ("/index.html", 404),
        ("/play/demo", 404),
    ] {
        let (status, body) = http_get(control, path).await;
        assert_eq!(status, expected, "{path}: {body}");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], expected, "{path}: {problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{path}");
    }
    // No edge has reported: a viewer is told to come back, with the reason.
    let (status, body) = http_get(control, "/live/demo/master.m3u8").await;
    assert_eq!(status, 503);
    assert!(body.contains("no site can take viewers"), "{body}");
    // Redirects and the admin API on one kept-alive connection, in either order.
    let output = Command::new("curl")
        .args(["-s", "-w", "%{http_code} %{num_connects}\\n"])
        .args([
            "-o",
            "/dev/null",
            &format!("http://{control}/live/demo/master.m3u8"),
        ])
        .args(["-o", "/dev/null", &format!("http://{control}/api/v1/edges")])
        .args([
            "-o",
            "/dev/null",
            &format!("http://{control}/live/demo/master.m3u8"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "503 1\n200 0\n503 0\n",
        "one connection"
    );

    // At start: a corrupt GeoIP file is named, and so is an unknown key, with its line.
    let refusal = || {
        let output = estuary()
            .arg("control")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    std::fs::write(dir.path().join("city.mmdb"), b"not a database").unwrap();
    let error = refusal();
    assert!(error.contains("city.mmdb"), "{error}");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("capacity_mbps = 1000\n", "capacity_mbps = 1000\nsped = 3\n");
    std::fs::write(&config, text).unwrap();
    let error = refusal();
    assert!(
        error.contains("line 22") && error.contains("unknown field `sped`"),
        "{error}"
    );
}

/// The dashboard loads in headless Chromium with no console error and shows a change in a
/// site's egress within 2 s of the report that made it, without reloading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_reports_live() {
    let web = support::require_browser();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    let (control, _control) = start_control(&config).await;
    let output = Command::new("node")
        .arg(web.join("tests/dashboard.mjs"))
        .arg(format!("http://{control}"))
        .args(["fra", ADMIN_TOKEN, REPORT_KEY_ID, REPORT_KEY])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the dashboard run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(output.stdout.trim_ascii()).unwrap();
    println!("dashboard: {report}");
    assert_eq!(report["consoleErrors"], serde_json::json!([]), "{report}");
    assert_eq!(report["pageErrors"], serde_json::json!([]), "{report}");
    assert_eq!(report["reloads"], 0, "{report}");
    assert_eq!(report["tokenInUrl"], false, "{report}");
    let shown = report["shownAfterMs"].as_f64();
    assert!(
        shown.is_some_and(|ms| ms <= 2000.0),
        "the change was not shown within 2 s: {report}"
    );
}
