//! Riding out failures upstream, and requests that are refused in bounded time.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_rides_out_a_packager_outage() {
    let mut stack = stack(None, None, &[]).await;
    let edge = stack.edge;
    let (status, _, playlist) = get(edge, "/live/demo/v360/media.m3u8").await;
    assert_eq!(status, StatusCode::OK);
    let playlist = text(&playlist);
    let segment = playlist
        .lines()
        .rfind(|line| line.ends_with(".m4s") && !line.starts_with('#'))
        .unwrap()
        .to_owned();
    let (status, _, cached) = get(edge, &format!("/live/demo/v360/{segment}")).await;
    assert_eq!(status, StatusCode::OK);
    let (before, _) = newest_part(&playlist);

    // The packager goes away for 20 s (after the playlist's 100 ms of freshness, the edge asks
    // upstream again, fails, and serves its stale copy).
    assert!(stack.packager.terminate(Duration::from_secs(10)).success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(20) {
        let (status, headers, body) = get(edge, "/live/demo/v360/media.m3u8").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.get("x-cache").unwrap(), "STALE");
        assert!(headers.get("warning").is_some());
        assert!(text(&body).contains("#EXT-X-PART"), "{}", text(&body));
        let (status, _, body) = get(edge, &format!("/live/demo/v360/{segment}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, cached);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (_, _, health) = get(edge, "/healthz").await;
    assert!(
        text(&health).contains("\"mood\":\"sad\""),
        "{}",
        text(&health)
    );

    // It comes back on the same address; the ingest reconnects and the stream goes on.
    stack.packager = start_packager(stack.packager_address);
    let back = Instant::now();
    loop {
        let (status, headers, body) = get(edge, "/live/demo/v360/media.m3u8").await;
        if status == StatusCode::OK && headers.get("x-cache").is_some_and(|v| v != "STALE") {
            let (after, _) = newest_part(&text(&body));
            if after > before + 5 {
                println!(
                    "the stream went on {:.1} s after the packager came back (segment {before} -> {after})",
                    back.elapsed().as_secs_f64()
                );
                break;
            }
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the stream did not come back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, _, health) = get(edge, "/healthz").await;
    assert!(
        text(&health).contains("\"mood\":\"happy\""),
        "{}",
        text(&health)
    );

    // The edge said in its log that it served stale playlists.
    stack.edge_process.terminate(Duration::from_secs(10));
    let mut log = String::new();
    let stderr = stack.edge_process.0.stderr.as_mut().unwrap();
    std::io::Read::read_to_string(stderr, &mut log).unwrap();
    assert!(log.contains("serving a stale playlist"), "{log}");
}

/// When the ingest stops, a blocking playlist request for the next part gets the packager's
/// 503 ("did not arrive in time") through the edge, within the packager's blocking limit, and
/// the edge stays happy: its upstream answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_request_the_packager_gives_up_on_gets_its_503() {
    let mut stack = stack(None, None, &[]).await;
    stack.ingest.terminate(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, _, playlist) = get(stack.packager_address, "/live/demo/v360/media.m3u8").await;
    let (msn, part) = newest_part(&text(&playlist));
    let asked = Instant::now();
    let (status, _, body) = get(
        stack.edge,
        &format!("/live/demo/v360/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    )
    .await;
    println!("{status} after {:?}: {}", asked.elapsed(), text(&body));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", text(&body));
    assert!(
        text(&body).contains("did not arrive in time"),
        "{}",
        text(&body)
    );
    assert!(asked.elapsed() < Duration::from_secs(10));
    let (_, _, health) = get(stack.edge, "/healthz").await;
    assert!(
        text(&health).contains("\"mood\":\"happy\""),
        "{}",
        text(&health)
    );
    // Continuous streams over HTTP/2 too: the fan-out engine relays the stream into the
    // response's body (curl gives up after 3 s of it).
    let h2 = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "3",
            "--http2-prior-knowledge",
        ])
        .args([
            "-w",
            "%{http_version} %{http_code} %{content_type} %{size_download}",
        ])
        .arg(format!("http://{}/live/demo/stream.ts", stack.edge))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&h2.stdout);
    let fields: Vec<&str> = answer.split(' ').collect();
    assert_eq!(fields[..3], ["2", "200", "video/mp2t"], "{answer}");
    assert!(fields[3].parse::<u64>().unwrap() > 10_000, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_in_bounded_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &edge.to_string()])
            .args(["--upstream", "http://127.0.0.1:9"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(edge).await;
    async fn exchange(edge: SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(
        exchange(edge, huge.as_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    for path in [
        "/live/../etc/passwd",
        "/live/%2e%2e/etc/passwd",
        "/live/%2E%2E%2Fetc",
    ] {
        let answer = exchange(
            edge,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert!(
        exchange(edge, b"\x16\x03\x01\x00\xa5garbage")
            .await
            .starts_with("HTTP/1.1 400")
    );
    // One byte a second: the porter gives up after its 10 s head timeout.
    let slow = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
    let mut answer = Vec::new();
    for byte in b"GET /live/demo/master.m3u8 HTTP/1.1\r\n" {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if slow.elapsed() > Duration::from_secs(12) {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(slow.elapsed() < Duration::from_secs(13));
    // With no upstream, a request gets 502 with the reason.
    let (status, _, reason) = get(edge, "/live/demo/master.m3u8").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", text(&reason));
    println!(
        "refused: oversized head 431, traversal 400, garbage 400, slow head 408 after {:.1} s",
        slow.elapsed().as_secs_f64()
    );
}
