//! The packager's admin endpoint with wrong credentials, and ingest left open off loopback.

use super::*;

/// A packager of its own on loopback, with an admin token and a keycard key: a title needs
/// one or the other, and a wrong one of either is refused.
pub(super) fn admin_with_wrong_credentials(packager: &Packager) -> Result<(), String> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _process = Running(
        estuary()
            .args(["packager", "--listen", &listen])
            .args(["--admin-token", "hostile-suite-admin-token"])
            .args(["--keycard-secret", "00112233445566778899aabbccddeeff"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    wait_for_port(&listen, Duration::from_secs(10))?;
    let own = Packager {
        origin: listen,
        demo: packager.demo,
    };
    let target = "/admin/metadata?mount=/live/demo/stream.mp3&mode=updinfo&song=Pwned";
    own.get(target, "")?
        .expect(401, "a credential is required")?;
    own.get(
        target,
        "Authorization: Bearer hostile-suite-admin-tokeN\r\n",
    )?
    .expect(403, "neither the admin token nor a good keycard")?;
    let other_key = estuary_proto::KeycardKey::from_hex(None, "ffeeddccbbaa99887766554433221100")
        .map_err(|e| e.to_string())?;
    let forged = estuary_proto::keycard::sign(
        &estuary_proto::KeycardRequest {
            expires: unix_now() + 60,
            acl: "/ingest/demo/*".into(),
            ..Default::default()
        },
        &other_key,
    );
    own.get(target, &format!("Authorization: Bearer {forged}\r\n"))?
        .expect(403, "signature")?;
    // The right token passes the check (the channel is not live there: 404, not 401/403).
    own.get(
        target,
        "Authorization: Bearer hostile-suite-admin-token\r\n",
    )?
    .expect(404, "not live on this packager")?;
    packager.demo_plays()
}

/// `--listen 0.0.0.0:PORT` without a keycard key: the packager refuses to start and says why;
/// with --open-ingest it starts. Nothing is sent to an address other than loopback: its
/// start is seen on 127.0.0.1.
pub(super) fn open_ingest_off_loopback(packager: &Packager) -> Result<(), String> {
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let output = estuary()
        .args(["packager", "--listen", &listen])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let errors = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || !errors.contains("--open-ingest") {
        return Err(format!(
            "started on {listen} without keys: {} {errors}",
            output.status
        ));
    }
    println!(
        "    without keys on {listen}: {}",
        errors.lines().last().unwrap_or("").trim()
    );
    let mut process = Running(
        estuary()
            .args(["packager", "--listen", &listen, "--open-ingest"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_secs(10))?;
    if !process.terminate(Duration::from_secs(10)).success() {
        return Err("the packager with --open-ingest did not stop cleanly".into());
    }
    packager.demo_plays()
}
