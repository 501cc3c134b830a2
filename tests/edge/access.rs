//! Who is let in (countries, proxies, passwords), and the reports an edge sends control.

use super::*;

/// GeoIP: the client address comes from X-Forwarded-For only when the peer (127.0.0.1) is a
/// trusted proxy; countries are let in or turned away as configured, in both database schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countries_are_let_in_or_turned_away() {
    let dir = tempfile::tempdir().unwrap();
    // Let in: the request reaches for the upstream, which does not exist: 502. Turned away: 403.
    for (maxmind_schema, extra, cases) in [
        (
            true,
            vec![
                "--allow-countries",
                "GB",
                "--unknown-country",
                "deny",
                "--trusted-proxies",
                "127.0.0.1",
            ],
            vec![
                ("81.2.69.142", 502),
                ("89.160.20.112", 403),
                ("192.0.2.1", 403),
            ],
        ),
        (
            true,
            vec!["--deny-countries", "SE", "--trusted-proxies", "127.0.0.0/8"],
            vec![
                ("81.2.69.142", 502),
                ("89.160.20.112", 403),
                ("192.0.2.1", 502),
            ],
        ),
        (
            false,
            vec![
                "--allow-countries",
                "US",
                "--unknown-country",
                "deny",
                "--trusted-proxies",
                "127.0.0.1",
            ],
            vec![("8.8.8.8", 502), ("81.2.69.142", 403)],
        ),
        // No trusted proxy: X-Forwarded-For is not believed; the client is 127.0.0.1, which no
        // database places.
        (
            true,
            vec!["--allow-countries", "GB", "--unknown-country", "deny"],
            vec![("81.2.69.142", 403)],
        ),
    ] {
        let database = dir.path().join(format!("{maxmind_schema}.mmdb"));
        std::fs::write(
            &database,
            estuary_edge::geo::testing::database(maxmind_schema),
        )
        .unwrap();
        let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let _edge = Running(
            estuary()
                .args(["edge", "--listen", &edge.to_string()])
                .args(["--upstream", "http://127.0.0.1:9", "--geoip"])
                .arg(&database)
                .args(&extra)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for_listener(edge).await;
        for (client, expected) in cases {
            let stream = tokio::net::TcpStream::connect(edge).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let request = Request::get("/live/demo/master.m3u8")
                .header("host", "localhost")
                .header("x-forwarded-for", client)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(status, expected, "{client} with {extra:?}: {}", text(&body));
        }
    }
}

/// The PROXY protocol from a trusted proxy names the client (versions 1 and 2); a garbage
/// PROXY header gets 400 and a closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_name_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string()])
            .args([
                "--upstream",
                "http://127.0.0.1:9",
                "--deny-networks",
                "89.160.20.0/24",
            ])
            .args(["--trusted-proxies", "127.0.0.1", "--proxy-protocol"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    let request = b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut v2_denied = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2_denied.extend_from_slice(&[
        0x21, 0x11, 0, 12, 89, 160, 20, 112, 127, 0, 0, 1, 0, 80, 0, 80,
    ]);
    for (name, header, expected) in [
        (
            "v1, let in",
            b"PROXY TCP4 81.2.69.142 127.0.0.1 5000 80\r\n".to_vec(),
            "502",
        ),
        (
            "v1, denied range",
            b"PROXY TCP4 89.160.20.112 127.0.0.1 5000 80\r\n".to_vec(),
            "403",
        ),
        ("v2, denied range", v2_denied, "403"),
        ("no header", Vec::new(), "502"),
        ("garbage", b"PROXY TCP4 not an address\r\n".to_vec(), "400"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        stream
            .write_all(&[header, request.to_vec()].concat())
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the edge answers and closes")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{name}: {answer}"
        );
    }
}

/// HTTP Basic against an htpasswd file whose hash openssl wrote (SHA-256 crypt); the password
/// bouncer combined with the network bouncer by a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_an_htpasswd_file() {
    require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let hash = Command::new("openssl")
        .args(["passwd", "-5", "s3cret"])
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap();
    let file = dir.path().join("viewers.htpasswd");
    std::fs::write(&file, format!("ann:{}\n", hash.trim())).unwrap();
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string()])
            .args(["--upstream", "http://127.0.0.1:9", "--htpasswd"])
            .arg(&file)
            .args([
                "--allow-networks",
                "10.0.0.0/8",
                "--bouncers",
                "any(password, network)",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    // ann:s3cret, ann:wrong, nobody.
    for (authorization, expected) in [
        (Some("Basic YW5uOnMzY3JldA=="), 502),
        (Some("Basic YW5uOndyb25n"), 401),
        (None, 401),
    ] {
        let stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::get("/live/demo/master.m3u8").header("host", "localhost");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{authorization:?}");
        if expected == 401 {
            assert!(response.headers().get("www-authenticate").is_some());
        }
    }
}

/// With --control, the edge reports every second: who and where it is, its clients, egress,
/// hit ratio, CPU and mood (sad, with the reason, while its upstream fails), each signed with
/// the --report-key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reports_to_control_every_second() {
    use estuary_proto::report::EdgeReport;
    let dir = tempfile::tempdir().unwrap();
    let report_keys = dir.path().join("report-keys.txt");
    let key_hex = "0123456789abcdef".repeat(4);
    std::fs::write(&report_keys, format!("edges {key_hex}\n")).unwrap();
    let key = estuary_proto::KeycardKey::from_hex(Some("edges"), &key_hex).unwrap();
    // A stand-in for control's registry: it keeps every report body, with its signature.
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_address = control.local_addr().unwrap();
    let (reports, mut received) =
        tokio::sync::mpsc::unbounded_channel::<(String, Option<Vec<u8>>, Bytes)>();
    tokio::spawn(async move {
        loop {
            let (stream, _) = control.accept().await.unwrap();
            let reports = reports.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let reports = reports.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let signature = request
                                .headers()
                                .get("x-estuary-signature")
                                .map(|value| value.as_bytes().to_vec());
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let _ = reports.send((path, signature, body));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string()])
            .args(["--upstream", "http://127.0.0.1:9"])
            .arg("--control")
            .arg(format!("http://{control_address}"))
            .arg("--report-key")
            .arg(&report_keys)
            .args([
                "--id",
                "lon-1",
                "--site",
                "lon",
                "--public-url",
                "http://lon-1.example",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    type Received = (String, Option<Vec<u8>>, Bytes);
    let next = async |received: &mut tokio::sync::mpsc::UnboundedReceiver<Received>| {
        let (path, signature, body) = tokio::time::timeout(Duration::from_secs(3), received.recv())
            .await
            .expect("a report within 3 s")
            .unwrap();
        assert_eq!(path, "/api/v1/reports");
        let now = (support::unix_now() * 1000.0) as u64;
        let signed = estuary_proto::report::verify(
            signature.as_deref(),
            &body,
            std::slice::from_ref(&key),
            now,
            Duration::from_secs(5),
        )
        .expect("a report signed with the report key");
        assert_eq!(signed.key_id.as_deref(), Some("edges"));
        serde_json::from_slice::<EdgeReport>(&body).expect("a report in the documented shape")
    };
    let first = next(&mut received).await;
    let started = Instant::now();
    assert_eq!((first.id.as_str(), first.site.as_str()), ("lon-1", "lon"));
    assert_eq!(first.url, "http://lon-1.example");
    assert_eq!(first.mood, estuary_proto::Mood::Waking);
    let second = next(&mut received).await;
    let gap = started.elapsed();
    assert!(
        gap > Duration::from_millis(700) && gap < Duration::from_millis(1500),
        "{gap:?}"
    );
    assert!(second.cpu >= 0.0 && second.cache_hit_ratio <= 1.0);

    // The upstream fails: the next reports say sad, and why.
    let (status, _, _) = get(edge, "/live/demo/master.m3u8").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let sad = loop {
        let report = next(&mut received).await;
        if report.mood != estuary_proto::Mood::Waking {
            break report;
        }
    };
    assert_eq!(sad.mood, estuary_proto::Mood::Sad);
    assert!(sad.reason.unwrap().contains("127.0.0.1:9"));
    println!(
        "reports every {:.2} s; egress {} bit/s",
        gap.as_secs_f64(),
        second.egress_bps
    );
}
