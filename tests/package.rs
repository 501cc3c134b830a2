//! The Debian package (`scripts/deb`), on this machine: it installs, its control unit's
//! command runs as the `estuary` user it made and serves, and a purge leaves nothing behind.
//! Without systemd running (a container), the unit's `ExecStart` is run as its `User=` would
//! run it (setpriv); with systemd, `systemctl start` runs it.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{free_port, require_tool, run_ok};

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "estuary"]).output();
    }
}

fn dpkg_status() -> String {
    let output = Command::new("dpkg")
        .args(["-s", "estuary"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `key=` in the `[Service]` section of `unit`.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_owned()
}

#[test]
fn the_debian_package_installs_runs_control_and_purges_cleanly() {
    require_tool("dpkg-deb", "dpkg");
    require_tool("curl", "curl");
    assert!(
        !dpkg_status().contains("Status: install ok installed"),
        "a package named estuary is installed here already: this test installs and purges its own"
    );
    let dir = tempfile::tempdir().unwrap();
    let built = run_ok(
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/deb"))
            .args(["--binary", env!("CARGO_BIN_EXE_estuary"), "--fast", "--out"])
            .arg(dir.path()),
    );
    let package = built.trim();
    let contents = run_ok(Command::new("dpkg-deb").args(["--contents", package]));
    for file in [
        "./usr/bin/estuary",
        "./lib/systemd/system/estuary-control.service",
        "./lib/systemd/system/estuary-edge@.service",
        "./lib/systemd/system/estuary-packager@.service",
        "./lib/systemd/system/estuary-ingest@.service",
        "./etc/estuary/control.toml",
        "./etc/estuary/edge.toml",
    ] {
        assert!(contents.contains(file), "{file} is not in the package");
    }

    let installed = Installed;
    run_ok(Command::new("dpkg").args(["-i", package]));
    assert!(dpkg_status().contains("Status: install ok installed"));
    let user = run_ok(Command::new("getent").args(["passwd", "estuary"]));
    assert!(user.starts_with("estuary:"), "{user}");
    let mode = run_ok(Command::new("stat").args(["-c", "%a %G", "/etc/estuary/control.toml"]));
    assert_eq!(
        mode.trim(),
        "640 estuary",
        "the configuration is the services' alone"
    );

    // The control unit, as installed: its command, as its user, with a port of the test's.
    let unit = std::fs::read_to_string("/lib/systemd/system/estuary-control.service").unwrap();
    assert_eq!(unit_value(&unit, "User"), "estuary");
    let exec = unit_value(&unit, "ExecStart");
    let port = free_port();
    let systemd = Path::new("/run/systemd/system").is_dir();
    let mut control = None;
    if systemd {
        std::fs::write(
            "/etc/estuary/control.env",
            format!("ESTUARY_CONTROL_LISTEN=127.0.0.1:{port}\n"),
        )
        .unwrap();
        run_ok(Command::new("systemctl").args(["start", "estuary-control"]));
    } else {
        let mut words = exec.split_whitespace();
        let program = words.next().unwrap();
        assert_eq!(program, "/usr/bin/estuary");
        control = Some(support::Running(
            // setpriv execs the command itself (as systemd does), so that signals reach it.
            Command::new("setpriv")
                .args([
                    "--reuid=estuary",
                    "--regid=estuary",
                    "--init-groups",
                    program,
                ])
                .args(words)
                .env("ESTUARY_CONTROL_LISTEN", format!("127.0.0.1:{port}"))
                .spawn()
                .unwrap(),
        ));
    }
    support::wait_until_served(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(15),
    );
    let owner = run_ok(Command::new("ps").args(["-o", "user=", "-C", "estuary"]));
    assert!(
        owner.lines().any(|line| line.trim() == "estuary"),
        "control runs as: {owner}"
    );
    println!(
        "installed {package}; control served on 127.0.0.1:{port} as user estuary ({})",
        if systemd {
            "systemctl start estuary-control"
        } else {
            "no systemd here: the unit's ExecStart run with setpriv as its User="
        }
    );
    if systemd {
        run_ok(Command::new("systemctl").args(["stop", "estuary-control"]));
        std::fs::remove_file("/etc/estuary/control.env").unwrap();
    } else if let Some(mut control) = control {
        assert!(control.terminate(Duration::from_secs(15)).success());
    }

    // A purge leaves no file, configuration or user behind.
    run_ok(Command::new("dpkg").args(["--purge", "estuary"]));
    drop(installed);
    for path in [
        "/usr/bin/estuary",
        "/etc/estuary",
        "/lib/systemd/system/estuary-control.service",
        "/usr/share/doc/estuary",
    ] {
        assert!(!Path::new(path).exists(), "{path} is left after the purge");
    }
    let user = Command::new("getent")
        .args(["passwd", "estuary"])
        .output()
        .unwrap();
    assert!(!user.status.success(), "the estuary user is left");
    assert!(!dpkg_status().contains("Status: install ok installed"));
}
