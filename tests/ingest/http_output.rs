//! The HTTP output: chunks POSTed as they are made to a real receiver, signed, and carried on
//! across the receiver going away and coming back.

use super::*;

/// What the receiver saw of one POST: its path, its keycard, and each piece of body with the
/// UTC time it arrived.
#[derive(Debug, Default, Clone)]
struct Post {
    path: String,
    authorization: Option<String>,
    transfer_encoding: Option<String>,
    pieces: Vec<(f64, Bytes)>,
    ended: bool,
}

impl Post {
    fn body(&self) -> Vec<u8> {
        self.pieces
            .iter()
            .flat_map(|(_, piece)| piece.iter().copied())
            .collect()
    }
}

type Posts = Arc<Mutex<Vec<Post>>>;

/// A DASH-IF ingest receiver: records every POST as it streams in; stopping it closes every
/// connection, as a crashed packager would.
struct Receiver {
    tasks: JoinSet<()>,
}

impl Receiver {
    async fn start(address: SocketAddr, posts: Posts) -> Receiver {
        let listener = TcpListener::bind(address).await.unwrap();
        let mut tasks = JoinSet::new();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            let _held = held;
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let posts = posts.clone();
                connections.lock().unwrap().spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let posts = posts.clone();
                        async move {
                            let index = {
                                let mut posts = posts.lock().unwrap();
                                posts.push(Post {
                                    path: request.uri().path().to_owned(),
                                    authorization: header(&request, "authorization"),
                                    transfer_encoding: header(&request, "transfer-encoding"),
                                    ..Default::default()
                                });
                                posts.len() - 1
                            };
                            let mut body = request.into_body();
                            while let Some(Ok(frame)) = body.frame().await {
                                if let Ok(data) = frame.into_data() {
                                    posts.lock().unwrap()[index].pieces.push((unix_now(), data));
                                }
                            }
                            posts.lock().unwrap()[index].ended = true;
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { tasks }
    }

    async fn stop(mut self) {
        // Aborting the accept loop drops the listener and, with it, every connection task.
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn header(request: &Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit_once(' '))
        .map(|(_, value)| value.parse().unwrap())
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_output_streams_chunks_and_survives_the_receiver_going_away() {
    const KEY: &str = "00112233445566778899aabbccddeeff";
    let receiver_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let posts: Posts = Arc::default();
    let receiver = Receiver::start(receiver_address, posts.clone()).await;
    let mut ingest = Running(
        estuary()
            .args(["ingest", "--source", "test", "--renditions", "360"])
            .arg(format!("--to=http://{receiver_address}/ingest"))
            .arg(format!("--admin={admin_address}"))
            .args(["--keycard-secret", KEY, "--keycard-key-id", "k1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // One POST per track, each with at least 4 s of media.
    let enough = |posts: &Posts| {
        let posts = posts.lock().unwrap();
        ["/ingest/demo/v360", "/ingest/demo/a128"]
            .iter()
            .all(|path| {
                posts.iter().filter(|p| p.path == *path).any(|p| {
                    let track = Track::parse(&p.body());
                    track.chunks.len() >= 12
                })
            })
    };
    wait_for(
        "4 s of media on both tracks",
        Duration::from_secs(25),
        || enough(&posts),
    )
    .await;
    let first: Vec<Post> = posts.lock().unwrap().clone();
    assert_eq!(
        first.len(),
        2,
        "one POST per track: {:?}",
        first.iter().map(|p| &p.path).collect::<Vec<_>>()
    );
    let keys = [KeycardKey::from_hex(Some("k1"), KEY).unwrap()];
    for post in &first {
        let body = post.body();
        assert_eq!(
            &body[4..8],
            b"ftyp",
            "{} does not start with the CMAF header",
            post.path
        );
        let keycard = post
            .authorization
            .as_deref()
            .and_then(|v| v.strip_prefix("Bearer "))
            .expect("a keycard");
        let card = Keycard::parse(keycard).unwrap();
        card.verify(&keys, &post.path, None, unix_now() as u64)
            .unwrap();

        // Latency from capture to delivery: a chunk's last sample was captured at its media end
        // time; it was delivered when the piece completing its bytes arrived.
        let track = Track::parse(&body);
        let mut offsets = Vec::new();
        let mut total = 0;
        for (arrived, piece) in &post.pieces {
            total += piece.len();
            offsets.push((total, *arrived));
        }
        let delivered: Vec<f64> = track
            .chunks
            .iter()
            .map(|chunk| {
                offsets
                    .iter()
                    .find(|(end, _)| *end >= chunk.end_offset)
                    .unwrap()
                    .1
            })
            .collect();
        let mut latencies: Vec<f64> = track
            .chunks
            .iter()
            .zip(&delivered)
            .map(|(chunk, arrived)| arrived - track.seconds(chunk.start + chunk.duration))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let median = latencies[latencies.len() / 2];
        let worst = latencies[latencies.len() - 1];
        // Chunks keep coming, one per part (1/3 s).
        let span = delivered.last().unwrap() - delivered.first().unwrap();
        let per_second = (delivered.len() - 1) as f64 / span.max(0.001);
        let longest_gap = delivered
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .fold(0.0, f64::max);
        println!(
            "{}: {} chunks, {per_second:.2} chunks/s, longest gap {:.0} ms, \
             capture-to-delivery latency median {:.0} ms, worst {:.0} ms",
            post.path,
            track.chunks.len(),
            longest_gap * 1000.0,
            median * 1000.0,
            worst * 1000.0
        );
        assert_eq!(
            post.transfer_encoding.as_deref(),
            Some("chunked"),
            "{}",
            post.path
        );
        assert!(
            longest_gap < 1.0,
            "{}: no data for {longest_gap:.3} s",
            post.path
        );
        assert!(
            per_second >= 2.7,
            "{}: {per_second:.2} chunks/s is fewer than one per part",
            post.path
        );
        assert!(
            worst < 2.0,
            "{}: a chunk arrived {worst:.3} s after its capture",
            post.path
        );
    }

    receiver.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        ingest.0.try_wait().unwrap().is_none(),
        "the ingest exited when its receiver went away"
    );
    let health = http_get(admin_address, "/healthz").await.1;
    assert!(
        health.contains("\"sad\""),
        "a lost receiver should make the channel sad: {health}"
    );

    let count_before = posts.lock().unwrap().len();
    let _receiver = Receiver::start(receiver_address, posts.clone()).await;
    let reconnected = wait_for("both tracks to reconnect", Duration::from_secs(10), || {
        let posts = posts.lock().unwrap();
        posts.len() >= count_before + 2
            && posts[count_before..].iter().all(|p| !p.pieces.is_empty())
    })
    .await;
    println!(
        "both tracks reconnected {:.0} ms after the receiver came back",
        reconnected.as_secs_f64() * 1000.0
    );
    assert!(
        reconnected < Duration::from_secs(2),
        "reconnecting took {reconnected:?}"
    );
    for post in &posts.lock().unwrap()[count_before..] {
        assert_eq!(
            &post.body()[4..8],
            b"ftyp",
            "{} resumed without the CMAF header",
            post.path
        );
    }

    let metrics = http_get(admin_address, "/metrics").await.1;
    assert!(
        metric(
            &metrics,
            "estuary_ingest_reconnects_total{channel=\"demo\",track=\"v360\",output=\"http\"}"
        ) >= 1
    );
    assert!(
        metric(
            &metrics,
            "estuary_ingest_frames_encoded_total{channel=\"demo\",track=\"v360\"}"
        ) > 100
    );
    assert!(
        metric(
            &metrics,
            "estuary_ingest_bytes_sent_total{channel=\"demo\",track=\"a128\",output=\"http\"}"
        ) > 10_000
    );

    // SIGTERM: the worker finishes its POSTs and exits cleanly.
    let status = ingest.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(
        posts.lock().unwrap()[count_before..]
            .iter()
            .all(|p| p.ended),
        "the POSTs were not ended"
    );
}
