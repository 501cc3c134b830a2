//! Hostile requests to control, continued: the views of viewers without the token, slowloris
//! on every address, thousands of channel names, and an edge that falls silent.

use super::*;

pub(super) fn run(target: &Target, cases: &mut Cases) {
    cases.case("control_views_of_viewers_need_the_admin_token", || {
        for path in ["/api/v1/decisions", "/api/v1/events", "/api/v1/channels"] {
            for token in [None, Some("guess")] {
                let (status, body) = get(target.admin, path, token)?;
                if status != 401 {
                    return Err(format!("{path} with {token:?}: {status} {body}"));
                }
            }
            // The public address does not serve the admin API at all.
            let (status, body) = get(target.public, path, Some(ADMIN_TOKEN))?;
            if status != 404 {
                return Err(format!("{path} on the public address: {status} {body}"));
            }
        }
        let (status, body) = get(target.admin, "/api/v1/decisions", Some(ADMIN_TOKEN))?;
        if status != 200 || !body.contains(LONDON_VIEWER) {
            return Err(format!("decisions with the token: {status} {body}"));
        }
        Ok(())
    });

    cases.case("control_slowloris_is_cut_at_the_header_timeout", || {
        let slow_head = format!(
            "GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: control\r\nX-Slow: {}",
            "a".repeat(30)
        );
        let health = b"GET /healthz HTTP/1.1\r\nHost: control\r\n\r\n";
        let attacks: [(&str, SocketAddr, &[u8]); 3] = [
            ("the front door", target.public, b""),
            ("a connection axum serves", target.public, health),
            ("the admin address", target.admin, b""),
        ];
        let cut: Vec<(&str, Result<Duration, String>)> = std::thread::scope(|scope| {
            let running: Vec<_> = attacks
                .iter()
                .map(|(name, address, prelude)| {
                    let slow_head = slow_head.as_bytes();
                    (
                        *name,
                        scope.spawn(move || slowloris(*address, prelude, slow_head)),
                    )
                })
                .collect();
            running
                .into_iter()
                .map(|(name, thread)| (name, thread.join().unwrap()))
                .collect()
        });
        for (name, after) in cut {
            let after = after.map_err(|e| format!("{name}: {e}"))?;
            println!("  slowloris on {name}: cut after {after:.1?}");
            if after < HEADER_TIMEOUT - Duration::from_secs(1)
                || after > HEADER_TIMEOUT + Duration::from_millis(1500)
            {
                return Err(format!(
                    "{name}: cut after {after:?}, not at the header timeout ({HEADER_TIMEOUT:?})"
                ));
            }
        }
        target.unchanged()
    });

    cases.case("control_slow_report_body_is_cut", || {
        let mut stream = TcpStream::connect(target.public).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        stream
            .write_all(
                b"POST /api/v1/reports HTTP/1.1\r\nHost: control\r\nContent-Length: 200\r\n\r\n{",
            )
            .map_err(|e| e.to_string())?;
        let (status, reason) = read_answer(stream)?;
        let after = started.elapsed();
        if status != 408 || after > HEADER_TIMEOUT + Duration::from_secs(1) {
            return Err(format!("{status} after {after:?}: {reason}"));
        }
        Ok(())
    });

    cases.case(
        "control_channel_names_leave_the_activity_map_bounded",
        || {
            let names = random_channels(2_000);
            let mut requests = Vec::new();
            for (n, name) in names.iter().enumerate() {
                let close = if n + 1 == names.len() {
                    "Connection: close\r\n"
                } else {
                    ""
                };
                requests.extend_from_slice(
                    format!(
                        "GET /live/{name}/master.m3u8 HTTP/1.1\r\nHost: control\r\n{close}\r\n"
                    )
                    .as_bytes(),
                );
            }
            let mut stream = TcpStream::connect(target.public).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .map_err(|e| e.to_string())?;
            stream.write_all(&requests).map_err(|e| e.to_string())?;
            let mut answers = String::new();
            stream
                .read_to_string(&mut answers)
                .map_err(|e| e.to_string())?;
            let redirected = answers.matches("HTTP/1.1 302 Found").count();
            if redirected != names.len() {
                return Err(format!("{redirected} of {} redirected", names.len()));
            }
            let (status, body) = get(target.admin, "/api/v1/channels", Some(ADMIN_TOKEN))?;
            let channels: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
            let named = channels["channels"].as_object().map_or(0, |map| map.len());
            let other = channels["other"]["redirects"].as_u64().unwrap_or(0);
            println!("  channels counted by name: {named}; redirects counted together: {other}");
            if named > 1_000 || other < 1_000 || body.len() > 200_000 {
                return Err(format!(
                    "{named} names, {other} together, {} bytes",
                    body.len()
                ));
            }
            Ok(())
        },
    );

    cases.case("control_silent_edges_are_forgotten", || {
        // nyc-2 reported once (the replay case) and never again.
        let body = report_body("nyc-2", "nyc", "http://nyc-2.example:8090").to_string();
        let signature = target.sign(body.as_bytes(), now_ms());
        let (status, reason) = post_report(target.public, body.as_bytes(), Some(&signature))?;
        if status != 204 {
            return Err(format!("nyc-2's report: {status} {reason}"));
        }
        let silent = Instant::now();
        loop {
            let (_, edges) = get(target.admin, "/api/v1/edges", None)?;
            if !edges.contains("nyc-2") {
                break;
            }
            if silent.elapsed() > FORGET_AFTER + Duration::from_secs(3) {
                return Err(format!("nyc-2 still known after {:?}", silent.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let forgotten = silent.elapsed();
        println!("  a silent edge was forgotten after {forgotten:.1?}");
        if forgotten < FORGET_AFTER - Duration::from_millis(500) {
            return Err(format!("forgotten too early, after {forgotten:?}"));
        }
        target.unchanged()
    });
}
