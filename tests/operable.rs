//! Operating a running edge: reloading its configuration (SIGHUP, `POST /admin/reload`), a
//! reload that cannot be used, and the admin endpoints' credential; end to end, with the
//! `estuary` binary, real sockets and real TLS handshakes (openssl).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Running, estuary, free_port, require_tool, run_ok};

const TOKEN: &str = "operator-token-0123456789";

/// A self-signed certificate and key for localhost, by openssl; gives the certificate's
/// SHA-256 fingerprint as openssl prints it.
fn certificate(dir: &Path, name: &str) -> String {
    require_tool("openssl", "openssl");
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            // A server certificate (a CA certificate may not serve as one).
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-days", "1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    fingerprint_of_file(&cert)
}

fn fingerprint_of_file(cert: &Path) -> String {
    let printed = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
    );
    printed.trim().rsplit('=').next().unwrap_or("").to_owned()
}

/// The fingerprint of the certificate a new TLS handshake with `port` is presented.
fn presented(port: u16) -> String {
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&shown.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Status and body of `method url` with `curl` (self-signed certificates taken).
fn curl(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "-k", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn sign(keys: &Path, key_id: &str) -> String {
    run_ok(
        estuary()
            .args(["keycard", "sign", "--key-file"])
            .arg(keys)
            .args(["--key-id", key_id, "--acl", "/live/demo/*", "--ttl", "1h"]),
    )
    .trim()
    .to_owned()
}

/// `estuary ROLE --config CONFIG`, once `BASE/healthz` answers 200 (within 10 s).
fn serving(role: &str, config: &Path, base: &str) -> Running {
    let process = Running(
        estuary()
            .args([role, "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || curl(
            "GET",
            &format!("{base}/healthz"),
            None
        )
        .0 == 200),
        "the {role} did not come up"
    );
    process
}

/// SIGHUP to `process`.
fn hang_up(process: &Running) {
    let pid = process.0.id().to_string();
    let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(sent.success());
}

fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ready()
}

#[test]
fn a_reload_changes_keys_and_certificate_and_a_broken_one_changes_nothing() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "k1 00112233445566778899aabbccddeeff\n").unwrap();
    let first = certificate(dir.path(), "first");
    let port = free_port();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstreams = [\"http://127.0.0.1:9\"]\nadmin_token = \"{TOKEN}\"\n\n[bouncers]\nkey_file = \"{}\"\n\n[tls]\ncertificate = \"{}\"\nkey = \"{}\"\nhttp3 = false\n",
            keys.display(),
            dir.path().join("first.pem").display(),
            dir.path().join("first.key").display(),
        ),
    )
    .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let mut edge = serving("edge", &config, &base);
    assert_eq!(presented(port), first);

    // A keycard signed with a key the edge does not have yet is refused.
    let rotated = "k2 ffeeddccbbaa99887766554433221100";
    let other = dir.path().join("other");
    std::fs::write(&other, format!("{rotated}\n")).unwrap();
    let keycard = sign(&other, "k2");
    let media = format!("{base}/live/demo/master.m3u8?keycard={keycard}");
    assert_eq!(curl("GET", &media, None).0, 403);

    // The key file gains the key, the certificate is replaced, and SIGHUP reloads: the
    // keycard is let in (the upstream is down: 502), new handshakes present the new certificate.
    std::fs::write(
        &keys,
        format!("{rotated}\nk1 00112233445566778899aabbccddeeff\n"),
    )
    .unwrap();
    let second = certificate(dir.path(), "second");
    std::fs::copy(dir.path().join("second.pem"), dir.path().join("first.pem")).unwrap();
    std::fs::copy(dir.path().join("second.key"), dir.path().join("first.key")).unwrap();
    hang_up(&edge);
    assert!(
        wait_until(Duration::from_secs(5), || curl("GET", &media, None).0
            == 502),
        "the rotated key was not taken"
    );
    assert_eq!(
        presented(port),
        second,
        "new handshakes present the new certificate"
    );

    // The admin endpoint: without the token 401, GET is no path; with it, a reload that
    // changes nothing needing a restart.
    assert_eq!(curl("POST", &format!("{base}/admin/reload"), None).0, 401);
    assert_eq!(
        curl("GET", &format!("{base}/admin/reload"), Some(TOKEN)).0,
        404
    );
    let (status, body) = curl("POST", &format!("{base}/admin/reload"), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"needs_restart\":[]"), "{body}");

    // A broken key file: the reload is refused, nothing changes, and the edge says why.
    std::fs::write(&keys, "k2 not-hex\n").unwrap();
    let (status, body) = curl("POST", &format!("{base}/admin/reload"), Some(TOKEN));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("bouncers.key_file"), "{body}");
    assert_eq!(
        curl("GET", &media, None).0,
        502,
        "the keys in force are kept"
    );
    let (_, health) = curl("GET", &format!("{base}/healthz"), None);
    assert!(
        health.contains("the last reload changed nothing"),
        "{health}"
    );
    let (_, metrics) = curl("GET", &format!("{base}/metrics"), None);
    assert!(
        metrics.contains("estuary_edge_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );

    // A listen address changed in the file is named as needing a restart.
    std::fs::write(&keys, format!("{rotated}\n")).unwrap();
    let moved = std::fs::read_to_string(&config).unwrap().replace(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{}", free_port()),
    );
    std::fs::write(&config, moved).unwrap();
    let (status, body) = curl("POST", &format!("{base}/admin/reload"), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"needs_restart\":[\"listen\"]"), "{body}");
    let (_, health) = curl("GET", &format!("{base}/healthz"), None);
    assert!(
        !health.contains("the last reload changed nothing"),
        "{health}"
    );

    // A drain asked over HTTP: the edge says so, and stops once nothing is in flight.
    let (status, _) = curl("POST", &format!("{base}/admin/drain"), Some(TOKEN));
    assert_eq!(status, 202);
    let stopped = wait_until(Duration::from_secs(10), || {
        edge.0.try_wait().unwrap().is_some()
    });
    assert!(stopped, "the drained edge did not stop");
    assert!(edge.0.wait().unwrap().success());
}

/// `estuary config check` on every file under `deploy/`: each is valid and names its role;
/// `config example ROLE` prints the same file; a broken file is refused with its line.
#[test]
fn config_check_reads_every_example_and_refuses_a_broken_file() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&deploy).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let role = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let output = estuary()
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            said.contains(&format!("a valid {role} configuration")),
            "{said}"
        );
        let example = estuary()
            .args(["config", "example", &role])
            .output()
            .unwrap();
        assert!(example.status.success());
        assert_eq!(example.stdout, std::fs::read(&path).unwrap(), "{role}");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} files under deploy/");

    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = estuary()
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name} was taken");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // A misspelt key: the file, the line, and the keys the role knows.
    let said = check("packager.toml", "segment = \"2s\"\nwindw = \"30s\"\n");
    assert!(
        said.contains("packager.toml") && said.contains("line 2"),
        "{said}"
    );
    assert!(said.contains("windw") && said.contains("window"), "{said}");
    // A file it names that is not there: the key and the path.
    let said = check(
        "lon-edge.toml",
        "upstreams = [\"http://127.0.0.1:1\"]\n[bouncers]\nkey_file = \"/nonexistent/keycard.keys\"\n",
    );
    assert!(said.contains("bouncers.key_file"), "{said}");
    assert!(said.contains("/nonexistent/keycard.keys"), "{said}");
    // Syntax that is no TOML, and a file of no role at all.
    let said = check("control.toml", "[[site]\nname = \"lon\"\n");
    assert!(said.contains("line 1"), "{said}");
    let said = check("odd.toml", "colour = \"blue\"\n");
    assert!(said.contains("no role's configuration"), "{said}");
}

/// Reads the service manager's datagrams until one says `wanted`, within `limit`.
fn wait_for_notice(
    socket: &std::os::unix::net::UnixDatagram,
    wanted: &str,
    limit: Duration,
    role: &str,
) {
    let deadline = Instant::now() + limit;
    let mut heard = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        let Ok(length) = socket.recv(&mut buffer) else {
            break;
        };
        let notice = String::from_utf8_lossy(&buffer[..length]).into_owned();
        if notice.lines().any(|line| line == wanted) {
            return;
        }
        heard.push(notice);
    }
    panic!("{role}: no {wanted} within {limit:?}; heard {heard:?}");
}

/// Under a `Type=notify` unit, the packager, control and the ingest each say `READY=1` once they
/// serve and `STOPPING=1` when SIGTERM comes, then exit cleanly.
#[test]
fn every_role_tells_systemd_it_is_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let control_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/control.toml");
    let packager_port = free_port().to_string();
    let control_port = free_port().to_string();
    let roles: Vec<(&str, Vec<String>)> = vec![
        (
            "packager",
            vec![
                "packager".into(),
                "--listen".into(),
                format!("127.0.0.1:{packager_port}"),
            ],
        ),
        (
            "control",
            vec![
                "control".into(),
                "--config".into(),
                control_file.display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{control_port}"),
            ],
        ),
        (
            "ingest",
            vec![
                "ingest".into(),
                "--source".into(),
                "test".into(),
                "--channel".into(),
                "demo".into(),
                "--renditions".into(),
                "180".into(),
                "--out".into(),
                dir.path().display().to_string(),
            ],
        ),
    ];
    for (role, args) in roles {
        let path = dir.path().join(format!("{role}.notify"));
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let mut running = Running(
            estuary()
                .args(&args)
                .env("NOTIFY_SOCKET", &path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for_notice(&socket, "READY=1", Duration::from_secs(20), role);
        let status = running.terminate(Duration::from_secs(20));
        // The datagram waits in the socket for us.
        wait_for_notice(&socket, "STOPPING=1", Duration::from_secs(1), role);
        assert!(status.success(), "{role} exited with {status}");
    }
}

/// Control reads its file again on SIGHUP and on `POST /api/v1/reload` (admin token): sites
/// come and go while it serves, a file that does not validate changes nothing and is reported
/// in the answer and in `/healthz`, and a changed listen address is named as needing a restart.
#[test]
fn control_reloads_its_sites_and_a_broken_file_changes_nothing() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("control.toml");
    let site = |name: &str| {
        format!(
            "[[sites]]\nname = \"{name}\"\nlatitude = 51.5\nlongitude = 0.0\ncost_per_gb = 0.02\ncapacity_mbps = 1000\n"
        )
    };
    let head =
        |listen: u16| format!("listen = \"127.0.0.1:{listen}\"\nadmin_token = \"{TOKEN}\"\n");
    std::fs::write(&config, head(port) + &site("lon")).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let control = serving("control", &config, &base);
    let get = |path: &str| curl("GET", &format!("{base}{path}"), None);
    let sites = || get("/api/v1/sites").1;
    assert!(sites().contains("\"lon\"") && !sites().contains("\"fra\""));

    // SIGHUP: a second site.
    std::fs::write(&config, head(port) + &site("lon") + &site("fra")).unwrap();
    hang_up(&control);
    assert!(
        wait_until(Duration::from_secs(5), || sites().contains("\"fra\"")),
        "SIGHUP did not add the site: {}",
        sites()
    );

    // A file with a key control does not know: refused, named, and nothing changes.
    std::fs::write(&config, head(port) + "[[site]]\nname = \"nyc\"\n").unwrap();
    let reload = || curl("POST", &format!("{base}/api/v1/reload"), Some(TOKEN));
    assert_eq!(curl("POST", &format!("{base}/api/v1/reload"), None).0, 401);
    let (status, answer) = reload();
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.contains("control.toml") && answer.contains("line"),
        "the refusal names the file and the line: {answer}"
    );
    let health = get("/healthz").1;
    assert!(
        health.contains("\"reload_refused\":\"") && health.contains("\"refused\":1"),
        "{health}"
    );
    assert!(
        sites().contains("\"fra\""),
        "a refused reload changed the sites"
    );

    // A new listen address takes a restart: named, while the rest applies.
    std::fs::write(&config, head(free_port()) + &site("lon")).unwrap();
    let (status, answer) = reload();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"listen\""), "{answer}");
    assert!(
        !sites().contains("\"fra\""),
        "the reload did not remove the site"
    );
    let health = get("/healthz").1;
    assert!(health.contains("\"reload_refused\":null"), "{health}");
}

#[test]
fn the_packager_reloads_its_keys_and_token_and_a_broken_file_changes_nothing() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("packager.toml");
    let write = |listen: u16, rest: &str| {
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:{listen}\"\nweb = \"\"\n{rest}"),
        )
        .unwrap()
    };
    write(port, &format!("admin_token = \"{TOKEN}\"\n"));
    let base = format!("http://127.0.0.1:{port}");
    let mut packager = serving("packager", &config, &base);
    let title = format!("{base}/admin/metadata?mount=/live/demo/stream.mp3&mode=updinfo&song=x");
    let ingest = format!("{base}/ingest/demo/v360");
    // The token is taken (the channel is not live: 404); ingest on loopback is open (an empty
    // body brings nothing, which is not an error).
    assert_eq!(curl("GET", &title, Some(TOKEN)).0, 404);
    assert_eq!(curl("POST", &ingest, None).0, 200);

    // SIGHUP: a new token and an ingest key.
    let rotated = "another-operator-token-42";
    let keyed = format!(
        "admin_token = \"{rotated}\"\nkeycard_secret = \"00112233445566778899aabbccddeeff\"\n"
    );
    write(port, &keyed);
    hang_up(&packager);
    assert!(
        wait_until(Duration::from_secs(5), || curl("GET", &title, Some(TOKEN))
            .0
            == 403),
        "the old token is still taken"
    );
    assert_eq!(curl("GET", &title, Some(rotated)).0, 404);
    assert_eq!(
        curl("POST", &ingest, None).0,
        401,
        "ingest needs a keycard now"
    );

    // Over HTTP: the admin token only, POST only.
    let reload = format!("{base}/admin/reload");
    assert_eq!(curl("POST", &reload, None).0, 401);
    assert_eq!(curl("POST", &reload, Some(TOKEN)).0, 403);
    assert_eq!(curl("GET", &reload, Some(rotated)).0, 405);
    let (status, body) = curl("POST", &reload, Some(rotated));
    assert_eq!(
        (status, body.trim()),
        (200, "{\"reloaded\":true,\"needs_restart\":[]}")
    );

    // A token too short to keep: refused, the token in force stays, /healthz says why.
    write(port, "admin_token = \"short\"\n");
    let (status, body) = curl("POST", &reload, Some(rotated));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("admin_token"), "{body}");
    assert_eq!(curl("GET", &title, Some(rotated)).0, 404);
    let (_, health) = curl("GET", &format!("{base}/healthz"), None);
    assert!(
        health.contains("\"reloads\":{\"applied\":2,\"refused\":1}"),
        "{health}"
    );
    assert!(
        health.contains("the last reload changed nothing"),
        "{health}"
    );

    // Keys gone on loopback are fine; a moved listen address is named, not applied.
    write(free_port(), &format!("admin_token = \"{rotated}\"\n"));
    let (status, body) = curl("POST", &reload, Some(rotated));
    assert_eq!(
        (status, body.trim()),
        (200, "{\"reloaded\":true,\"needs_restart\":[\"listen\"]}")
    );
    assert_eq!(curl("POST", &ingest, None).0, 200);
    let (_, health) = curl("GET", &format!("{base}/healthz"), None);
    assert!(!health.contains("reload_refused"), "{health}");

    assert!(packager.terminate(Duration::from_secs(10)).success());
}

/// Reads a `loadtest viewers --json` report: viewers started, their stalls, and the errors
/// that stopped any.
fn viewers_report(path: &Path) -> (u64, u64, serde_json::Value) {
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    (
        report["started"].as_u64().unwrap(),
        report["stalls"].as_u64().unwrap(),
        report["failures"].clone(),
    )
}

/// A reload under load: LL-HLS viewers and `stream.mp3` listeners play through an HTTPS edge
/// while SIGHUP brings a new key, a revoked keycard and a new certificate, and a second SIGHUP
/// a broken key file. Nobody unaffected stalls or is cut; the revoked keycard's listeners are
/// cut within a second; new handshakes present the new certificate. Full form:
/// `ESTUARY_RELOAD_VIEWERS=200,1000` (LL-HLS viewers, MP3 listeners).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_cuts_only_the_revoked() {
    require_tool("curl", "curl");
    let (llhls, mp3) = std::env::var("ESTUARY_RELOAD_VIEWERS")
        .ok()
        .and_then(|counts| {
            let (a, b) = counts.split_once(',')?;
            Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
        })
        .unwrap_or((20, 100));
    const REVOKED: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (_packager, origin) = support::start_packager(&[]).await;
    let _ingest = Running(
        support::test_ingest(origin, &["--duration", "300s", "--audio", "aac,mp3"])
            .spawn()
            .unwrap(),
    );
    std::fs::write(path("keys"), "k1 00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::write(path("revoked"), "").unwrap();
    certificate(dir.path(), "first");
    let second = certificate(dir.path(), "second");
    // The viewers trust both, as clients would trust one CA over both certificates.
    let bundle = [path("first.pem"), path("second.pem")]
        .iter()
        .map(|pem| std::fs::read_to_string(pem).unwrap())
        .collect::<String>();
    std::fs::write(path("trusted.pem"), bundle).unwrap();
    std::fs::copy(path("first.pem"), path("edge.pem")).unwrap();
    std::fs::copy(path("first.key"), path("edge.key")).unwrap();
    let port = free_port();
    std::fs::write(
        path("edge.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstreams = [\"http://{origin}\"]\nadmin_token = \"{TOKEN}\"\n\n[bouncers]\nkey_file = \"{}\"\nrevoked = \"{}\"\n\n[tls]\ncertificate = \"{}\"\nkey = \"{}\"\nhttp3 = false\n",
            path("keys").display(),
            path("revoked").display(),
            path("edge.pem").display(),
            path("edge.key").display(),
        ),
    )
    .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let edge = serving("edge", &path("edge.toml"), &base);
    support::wait_until_served(
        &format!("http://{origin}/live/demo/master.m3u8"),
        Duration::from_secs(60),
    );
    let keycard = sign(&path("keys"), "k1");
    let revoked_keycard = run_ok(
        estuary()
            .args(["keycard", "sign", "--key-file"])
            .arg(path("keys"))
            .args(["--acl", "/live/demo/*", "--ttl", "1h", "--id", "listener-7"]),
    )
    .trim()
    .to_owned();

    // The viewers, for 25 s; and the listeners whose keycard will be revoked.
    let viewers = |kind: &str, count: usize, target: &str, json: &str| {
        Running(
            estuary()
                .args(["loadtest", "viewers", "--kind", kind])
                .args(["--count", &count.to_string(), "--duration", "25s"])
                .arg("--url")
                .arg(format!("{base}{target}?keycard={keycard}"))
                .arg("--ca-file")
                .arg(path("trusted.pem"))
                .arg("--json")
                .arg(path(json))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut players = viewers("llhls", llhls, "/live/demo/master.m3u8", "llhls.json");
    let mut listeners = viewers("continuous", mp3, "/live/demo/stream.mp3", "mp3.json");
    let mut doomed: Vec<Running> = (0..REVOKED)
        .map(|_| {
            Running(
                Command::new("curl")
                    .args(["-s", "-k", "-N", "-o", "/dev/null", "--max-time", "60"])
                    .arg(format!(
                        "{base}/live/demo/stream.mp3?keycard={revoked_keycard}"
                    ))
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(8));
    for listener in &mut doomed {
        assert!(
            listener.0.try_wait().unwrap().is_none(),
            "a listener of the keycard to revoke stopped before the reload"
        );
    }

    // One reload: a key added, a keycard revoked, the certificate replaced.
    let rotated = "k2 ffeeddccbbaa99887766554433221100";
    std::fs::write(
        path("keys"),
        format!("k1 00112233445566778899aabbccddeeff\n{rotated}\n"),
    )
    .unwrap();
    std::fs::write(path("revoked"), "listener-7\n").unwrap();
    std::fs::copy(path("second.pem"), path("edge.pem")).unwrap();
    std::fs::copy(path("second.key"), path("edge.key")).unwrap();
    let reloaded = Instant::now();
    hang_up(&edge);
    let mut cut_after = Duration::ZERO;
    for listener in &mut doomed {
        while listener.0.try_wait().unwrap().is_none() {
            assert!(
                reloaded.elapsed() < Duration::from_secs(10),
                "a revoked keycard's listener played on"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        cut_after = reloaded.elapsed();
    }
    assert_eq!(presented(port), second, "new handshakes, new certificate");
    let other = path("other");
    std::fs::write(&other, format!("{rotated}\n")).unwrap();
    let new_keycard = sign(&other, "k2");
    let (status, _) = curl(
        "GET",
        &format!("{base}/live/demo/master.m3u8?keycard={new_keycard}"),
        None,
    );
    assert_eq!(status, 200, "a keycard of the new key");

    // A second reload, of a broken key file: nothing changes, and the edge says so.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(path("keys"), "k1 not-hex\n").unwrap();
    hang_up(&edge);
    assert!(
        wait_until(Duration::from_secs(5), || curl(
            "GET",
            &format!("{base}/healthz"),
            None
        )
        .1
        .contains("the last reload changed nothing")),
        "the broken reload was not reported"
    );
    let (_, metrics) = curl("GET", &format!("{base}/metrics"), None);
    assert!(
        metrics.contains("estuary_edge_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );

    // The viewers end on their own; none of them stalled or was cut.
    for (name, process, count) in [("llhls", &mut players, llhls), ("mp3", &mut listeners, mp3)] {
        let began = Instant::now();
        let status = loop {
            if let Some(status) = process.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "{name}: still running"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let (started, stalls, failures) = viewers_report(&path(&format!("{name}.json")));
        println!(
            "{name}: {count} viewers, {started} started, {stalls} stalls, failures {failures}"
        );
        assert!(status.success(), "{name}: loadtest viewers failed");
        assert_eq!(started as usize, count, "{name}: {failures}");
        assert_eq!(stalls, 0, "{name}");
        assert_eq!(failures, serde_json::json!({}), "{name}");
    }
    println!(
        "{REVOKED} listeners of the revoked keycard cut within {} ms of SIGHUP",
        cut_after.as_millis()
    );
    assert!(cut_after < Duration::from_secs(1), "{cut_after:?}");
}
