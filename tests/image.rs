//! The container image (`scripts/image`, `deploy/container/Containerfile`), built from scratch
//! out of Debian's packages with the test binary: it runs as a non-root user with `estuary` as
//! its entry point, and `demo` in it serves the demo channel, which ffprobe on the host reads
//! as H.264 and AAC. Where podman's runtime cannot start containers (a sandbox that refuses
//! crun's `setrlimit`, or its cgroups), the image's own root file system is run instead:
//! mounted, chrooted into, as the image's user.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Running, free_port, require_tool, run_ok};

const TAG: &str = "localhost/estuary:image-test";

/// Removes the test's containers and image however the test ends.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in ["estuary-image-test", "estuary-image-root"] {
            let _ = Command::new("podman").args(["umount", name]).output();
            let _ = Command::new("podman").args(["rm", "-f", name]).output();
        }
        let _ = Command::new("podman").args(["rmi", "-f", TAG]).output();
    }
}

fn inspect(format: &str) -> String {
    run_ok(Command::new("podman").args(["image", "inspect", TAG, "--format", format]))
        .trim()
        .to_owned()
}

#[test]
fn the_image_is_built_from_debian_packages_and_serves_the_demo() {
    require_tool("podman", "podman");
    require_tool("mmdebstrap", "mmdebstrap");
    require_tool("ffprobe", "ffmpeg");
    let _cleanup = Cleanup;
    let built = run_ok(
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/image")).args([
            "--binary",
            env!("CARGO_BIN_EXE_estuary"),
            "--tag",
            TAG,
        ]),
    );
    println!("{}", built.trim());
    assert_eq!(inspect("{{.Config.User}}"), "estuary:estuary");
    assert_eq!(
        inspect("{{json .Config.Entrypoint}}"),
        "[\"/usr/bin/estuary\"]"
    );

    let port = free_port();
    let run = Command::new("podman")
        .args(["run", "-d", "--name", "estuary-image-test"])
        .args(["-p", &format!("127.0.0.1:{port}:8080"), TAG, "demo"])
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&run.stderr).into_owned();
    // The chrooted demo, when podman cannot run it: killed when the test ends.
    let mut _chrooted = None;
    if run.status.success() {
        println!("podman run serves the demo on port {port}");
    } else {
        // Only the runtime's refusal to start any container is a reason to go on without it.
        assert!(refused.contains("OCI"), "podman run failed: {refused}");
        println!(
            "podman cannot start containers here ({}); the image's root file system runs instead",
            refused.lines().next().unwrap_or("").trim()
        );
        run_ok(Command::new("podman").args(["create", "--name", "estuary-image-root", TAG]));
        let root = run_ok(Command::new("podman").args(["mount", "estuary-image-root"]));
        let root = root.trim();
        let user = inspect("{{.Config.User}}");
        let uid = run_ok(Command::new("chroot").args([root, "id", "-u", "estuary"]));
        assert_ne!(uid.trim(), "0", "the image's user is not root");
        let script = format!(
            "mount -t proc proc {root}/proc && mount --bind /dev {root}/dev && \
             exec chroot --userspec={user} {root} /usr/bin/env HOME=/var/lib/estuary \
             ESTUARY_WEB=/usr/share/estuary/web ESTUARY_DEMO_LISTEN=127.0.0.1:{port} \
             /usr/bin/estuary demo --duration 120s"
        );
        _chrooted = Some(Running(
            Command::new("unshare")
                .args(["--mount", "--fork", "sh", "-c", &script])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    support::wait_until_served(
        &format!("http://127.0.0.1:{port}/live/demo/master.m3u8"),
        Duration::from_secs(60),
    );
    let codecs = run_ok(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(format!("http://127.0.0.1:{port}/live/demo/master.m3u8")),
    );
    assert!(codecs.contains("h264"), "{codecs}");
    assert!(codecs.contains("aac"), "{codecs}");
    let owner = run_ok(Command::new("ps").args(["-o", "user=,args=", "-C", "estuary"]));
    assert!(
        owner
            .lines()
            .filter(|line| line.contains("demo"))
            .all(|line| !line.trim_start().starts_with("root ")),
        "the demo runs as root: {owner}"
    );
}
