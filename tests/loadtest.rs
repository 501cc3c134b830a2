//! End to end: `estuary loadtest gen-log` writes a day of viewers whose addresses come from a
//! GeoIP city database written by the test (London, Frankfurt, New York, Milton), then
//! `estuary loadtest simulate` sends every request through control's routing with three sites
//! and two policies, and its outputs are read back.

mod support;

use std::path::Path;

use support::{estuary, run_ok};

const SITES: [(&str, f64, f64, f64); 3] = [
    ("lon", 51.5, -0.13, 0.02),
    ("fra", 50.1, 8.7, 0.01),
    ("nyc", 40.7, -74.0, 0.03),
];

/// Control's configuration and its GeoIP database, written into `dir`.
fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("city.mmdb"),
        estuary_control::geo::test_database(&[
            ("81.2.69.0/24", "GB", "London", 51.5142, -0.0931),
            ("85.214.0.0/16", "DE", "Frankfurt", 50.1155, 8.6842),
            ("24.0.0.0/16", "US", "New York", 40.7128, -74.006),
            ("216.160.83.0/24", "US", "Milton", 47.2513, -122.3149),
        ]),
    )
    .unwrap();
    let mut text = String::from("geoip = \"city.mmdb\"\n");
    for (name, latitude, longitude, cost) in SITES {
        text.push_str(&format!(
            "\n[[sites]]\nname = \"{name}\"\nlatitude = {latitude}\nlongitude = {longitude}\n\
             cost_per_gb = {cost}\ncapacity_mbps = 100000\n"
        ));
    }
    let path = dir.join("control.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn a_generated_day_is_simulated_through_controls_routing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let log = dir.path().join("day.log");
    let said = run_ok(
        estuary()
            .args(["loadtest", "gen-log", "--lines", "40000", "--channels", "8"])
            .arg("--out")
            .arg(&log)
            .arg("--geoip")
            .arg(dir.path().join("city.mmdb")),
    );
    // "40000 lines, N body bytes, written to …"
    let logged: u64 = said.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(logged > 0, "{said}");

    let out = dir.path().join("out");
    let summary = run_ok(
        estuary()
            .args(["loadtest", "simulate", "--policy", "closest,least_cost"])
            .arg("--log")
            .arg(&log)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out),
    );
    assert!(summary.contains("sites + refused = log"), "{summary}");

    let report = json(&out.join("summary.json"));
    assert_eq!(report["log"]["records"], 40_000);
    assert_eq!(report["log"]["bytes"], logged);
    let mut splits = Vec::new();
    for policy in report["policies"].as_array().unwrap() {
        let sites = policy["sites"].as_array().unwrap();
        let bytes: Vec<u64> = sites.iter().map(|s| s["bytes"].as_u64().unwrap()).collect();
        assert_eq!(bytes.iter().sum::<u64>(), logged, "{policy}");
        assert_eq!(policy["refused"]["bytes"], 0);
        assert!(sites.iter().all(|s| s["p95_mbps"].as_f64().unwrap() >= 0.0));
        splits.push((policy["policy"].as_str().unwrap().to_owned(), bytes));
    }
    // closest sends London to lon, Frankfurt to fra and the Americas to nyc; least_cost
    // sends everyone to fra, the cheapest.
    assert_eq!(splits[0].0, "closest");
    assert!(splits[0].1.iter().all(|&bytes| bytes > 0), "{splits:?}");
    assert_eq!(splits[1].1, [0, logged, 0], "{splits:?}");

    // The CSV adds up to the same bytes, per policy.
    let csv = std::fs::read_to_string(out.join("sites.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("policy,start,unix_seconds,site,requests,bytes,mbps")
    );
    let mut per_policy = std::collections::BTreeMap::<String, u64>::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 7, "{line}");
        *per_policy.entry(fields[0].to_owned()).or_default() += fields[5].parse::<u64>().unwrap();
    }
    assert_eq!(per_policy.len(), 2);
    assert!(
        per_policy.values().all(|&bytes| bytes == logged),
        "{per_policy:?}"
    );
    let groups = std::fs::read_to_string(out.join("groups.csv")).unwrap();
    for group in ["GB", "DE", "US"] {
        assert!(
            groups.contains(&format!(",{group},")),
            "{group} in groups.csv"
        );
    }
    let series = json(&out.join("series.json"));
    assert_eq!(series["bucket_seconds"], 60);
    assert!(
        series["starts"].as_array().unwrap().len() > 1000,
        "a day of minutes"
    );

    for name in ["sites", "groups"] {
        let png = std::fs::read(out.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}.png is a PNG");
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{name}.svg is an SVG");
    }
    let svg = std::fs::read_to_string(out.join("sites.svg")).unwrap();
    let texts: Vec<&str> = svg
        .split("<text")
        .skip(1)
        .filter_map(|element| element.split_once('>')?.1.split_once("</text>"))
        .map(|(text, _)| text.trim())
        .collect();
    for (site, ..) in SITES {
        assert!(texts.contains(&site), "{site} in the legend: {texts:?}");
    }
    assert!(texts.contains(&"bandwidth (Mbit/s)") && texts.contains(&"time (UTC)"));
}

#[test]
fn bad_input_is_answered_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let simulate = |log: &Path, config: &Path| {
        let output = estuary()
            .args(["loadtest", "simulate"])
            .arg("--log")
            .arg(log)
            .arg("--config")
            .arg(config)
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8(output.stderr).unwrap()
    };
    let missing = dir.path().join("missing.log");
    let error = simulate(&missing, &config);
    assert!(error.contains("missing.log"), "{error}");

    let log = dir.path().join("a.log");
    std::fs::write(
        &log,
        "81.2.69.1 - - [21/Nov/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\"\n",
    )
    .unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[sites]]\nname = \"lon\"\n").unwrap();
    let error = simulate(&log, &broken);
    assert!(
        error.contains("broken.toml") && error.contains("line"),
        "{error}"
    );
}
