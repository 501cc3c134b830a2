//! The same bytes over HTTP/2, HTTPS and HTTP/3, and the edge run from its configuration file.

use super::*;

/// HTTP/2 (prior knowledge) gets the same bytes as HTTP/1.1 for a playlist and a segment, from
/// two clients: curl and nghttp. Then h2load fetches them 2,000 times over 20 connections with
/// 10 streams each, and every answer is a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_gets_the_same_bytes_as_http1() {
    require_tool("curl", "curl");
    require_tool("nghttp", "nghttp2-client");
    require_tool("h2load", "nghttp2-client");
    // The edge keeps playlists for a minute, so that all clients see the same one.
    let stack = stack(None, None, &["--playlist-ttl", "60s"]).await;
    let segment = newest_segment(stack.edge).await;
    let paths = [
        "/live/demo/v360/media.m3u8".to_owned(),
        "/live/demo/v360/init.mp4".to_owned(),
        format!("/live/demo/v360/{segment}"),
    ];
    for path in &paths {
        let url = format!("http://{}{path}", stack.edge);
        let fetch = |version: &str| {
            let output = Command::new("curl")
                .args([
                    "-s",
                    "-f",
                    version,
                    "-w",
                    "%{http_version}",
                    "-o",
                    "-",
                    &url,
                ])
                .output()
                .unwrap();
            assert!(output.status.success(), "curl {version} {url}");
            output.stdout
        };
        let one = fetch("--http1.1");
        let two = fetch("--http2-prior-knowledge");
        // curl writes the body, then the protocol version it used.
        assert!(one.ends_with(b"1.1") && two.ends_with(b"2"), "{url}");
        let one = &one[..one.len() - 3];
        assert_eq!(one, &two[..two.len() - 1], "{url}");
        // nghttp speaks HTTP/2 with prior knowledge to http:// URLs and writes the body.
        let nghttp = Command::new("nghttp").arg(&url).output().unwrap();
        assert!(nghttp.status.success(), "nghttp {url}");
        assert_eq!(one, &nghttp.stdout[..], "nghttp {url}");
    }
    let urls: Vec<String> = paths
        .iter()
        .map(|path| format!("http://{}{path}", stack.edge))
        .collect();
    let load = Command::new("h2load")
        .args(["-n", "2000", "-c", "20", "-m", "10"])
        .args(&urls)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&load.stdout);
    println!("{report}");
    assert!(load.status.success(), "h2load: {report}");
    assert!(
        report.contains("2000 succeeded, 0 failed, 0 errored")
            && report.contains("status codes: 2000 2xx"),
        "h2load: {report}"
    );
    assert!(report.contains("Application protocol: h2c"), "{report}");
}

/// HTTPS: with a certificate from files (made by openssl for 127.0.0.1, trusted by curl) and
/// with one made up at start, HTTP/1.1 and HTTP/2 (by ALPN) over TLS get the same bytes as the
/// packager serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_bytes() {
    require_tool("openssl", "openssl");
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = (dir.path().join("edge.pem"), dir.path().join("edge.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&certificate)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let files = [
        "--tls-cert",
        certificate.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    for (extra, trust) in [
        (
            &files[..],
            vec![
                "--cacert".to_owned(),
                certificate.to_str().unwrap().to_owned(),
            ],
        ),
        (&["--tls-self-signed"][..], vec!["--insecure".to_owned()]),
    ] {
        let stack = stack(None, None, extra).await;
        let segment = newest_segment(stack.packager_address).await;
        for path in [
            "/live/demo/v360/init.mp4".to_owned(),
            format!("/live/demo/v360/{segment}"),
        ] {
            let (_, _, direct) = get(stack.packager_address, &path).await;
            for (version, said) in [("--http1.1", "1.1"), ("--http2", "2")] {
                let output = Command::new("curl")
                    .args(["-s", "-f", version, "-w", "%{http_version}", "-o", "-"])
                    .args(&trust)
                    .arg(format!("https://{}{path}", stack.edge))
                    .output()
                    .unwrap();
                assert!(output.status.success(), "curl {version} {extra:?} {path}");
                let body = &output.stdout[..output.stdout.len() - said.len()];
                assert!(
                    output.stdout.ends_with(said.as_bytes()),
                    "{version} {extra:?}"
                );
                assert_eq!(body, &direct[..], "{version} {extra:?} {path}");
            }
        }
        // Plain HTTP to a TLS port is refused, not served.
        let plain = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://{}/healthz", stack.edge))
            .output()
            .unwrap();
        assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    }
}

/// HTTP/3: headless Chromium, told to speak QUIC to the edge from its first request and to
/// trust the edge's self-signed certificate by the hash of its public key, fetches a
/// playlist, an init segment and a media segment; each arrives over h3 with the bytes the edge
/// serves over HTTP/1.1, and the edge advertises its HTTP/3 endpoint in Alt-Svc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_in_chromium_gets_the_same_bytes_as_http1() {
    let web = support::require_browser();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let edge_options = ["--tls-self-signed", "--playlist-ttl", "60s"];
    let stack = stack(None, Some(&log), &edge_options).await;
    // The hash of the public key of the certificate the edge presents, worked out by openssl.
    require_tool("openssl", "openssl");
    let pipeline = format!(
        "openssl s_client -connect {} </dev/null 2>/dev/null | openssl x509 -pubkey -noout \
         | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        stack.edge
    );
    let spki = Command::new("sh").args(["-c", &pipeline]).output().unwrap();
    let spki = String::from_utf8(spki.stdout).unwrap().trim().to_owned();
    assert_eq!(spki.len(), 44, "a base64 SHA-256: {spki}");

    let segment = newest_segment(stack.packager_address).await;
    let paths = [
        "/live/demo/master.m3u8".to_owned(),
        "/live/demo/v360/init.mp4".to_owned(),
        format!("/live/demo/v360/{segment}"),
    ];
    // Over HTTP/1.1 from the same edge first. The master playlist's BANDWIDTH is measured and
    // changes as the stream goes on, so this edge keeps playlists for a minute.
    let mut direct = Vec::new();
    for path in &paths {
        let output = Command::new("curl")
            .args(["-s", "-f", "-k", "--http1.1", "-o", "-"])
            .arg(format!("https://{}{path}", stack.edge))
            .output()
            .unwrap();
        assert!(output.status.success(), "curl --http1.1 {path}");
        direct.push(output.stdout);
    }
    let output = Command::new("node")
        .arg(web.join("tests/fetch.mjs"))
        .arg(format!("https://{}", stack.edge))
        .args(&paths)
        .env("QUIC", "1")
        .env("SPKI", &spki)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the browser could not fetch over HTTP/3:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(output.stdout.trim_ascii()).unwrap();
    println!("Chromium over QUIC: {report}");
    assert_eq!(report["navigation"], "h3", "{report}");
    let answers = report["answers"].as_array().unwrap();
    assert_eq!(answers.len(), paths.len());
    for ((path, answer), direct) in paths.iter().zip(answers).zip(&direct) {
        let sha256: String = ring::digest::digest(&ring::digest::SHA256, direct)
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(answer["status"], 200, "{path}: {answer}");
        assert_eq!(answer["protocol"], "h3", "{path}: {answer}");
        assert_eq!(answer["length"], direct.len(), "{path}: {answer}");
        assert_eq!(answer["sha256"], sha256, "{path}: {answer}");
        assert_eq!(
            answer["altSvc"],
            format!("h3=\":{}\"; ma=86400", stack.edge.port()),
            "{path}"
        );
    }
    // The edge's access log names the protocol.
    let logged = std::fs::read_to_string(&log).unwrap();
    for path in &paths {
        assert!(
            logged.contains(&format!("\"GET {path} HTTP/3.0\" 200")),
            "{path} is not logged as HTTP/3:\n{logged}"
        );
    }
}

/// `estuary edge --config FILE`: the documented example runs, flags given win over its keys,
/// and a file with an unknown key or a key file that is not there stops the edge at start with
/// the file and the line or key named.
#[tokio::test(flavor = "multi_thread")]
async fn the_edge_runs_from_its_configuration_file() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/edge.toml");
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--config"])
            .arg(&example)
            .args(["--listen", &edge.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    let (status, _, body) = get(edge, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert!(text(&body).contains("\"role\":\"edge\""));

    let dir = tempfile::tempdir().unwrap();
    for (name, content, says) in [
        (
            "unknown.toml",
            "upstreams = [\"http://127.0.0.1:9\"]\n\n[streams]\nslow = \"drop\"\n",
            "line 4",
        ),
        (
            "missing.toml",
            "upstreams = [\"http://127.0.0.1:9\"]\n[bouncers]\nkey_file = \"/nonexistent/keys\"\n",
            "bouncers.key_file",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let output = estuary()
            .args(["edge", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} started");
        assert!(
            errors.contains(name) || errors.contains(&path.display().to_string()),
            "{name}: {errors}"
        );
        assert!(errors.contains(says), "{name}: {errors}");
    }
}
