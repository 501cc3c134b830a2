"""Checks what deploy/ promises, for scripts/check-deploy: the systemd units' settings, the
sd_notify conversation of a real edge under a stand-in service manager, and the invariants of
the rendered Kubernetes manifests (probes, drain, grace, resources, autoscaler, policies).
Each check prints one line, "ok" or "FAIL" with what is wrong; any failure fails the run."""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib

failures = []
passes = 0


def check(condition, what):
    global passes
    if condition:
        passes += 1
        print(f"ok    {what}")
    else:
        failures.append(what)
        print(f"FAIL  {what}")


def seconds(text):
    """A duration as the edge (30s, 500ms, 5m) or systemd (40s, 1min 30s) writes it."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h)?", text):
        total += float(number) * {"ms": 0.001, "s": 1, "": 1, "m": 60, "min": 60, "h": 3600}[unit]
    return total


def edge_drain_grace(path):
    with open(path, "rb") as file:
        return seconds(tomllib.load(file).get("drain_grace", "30s"))


def unit_settings(path):
    """Every Key=value of a unit file, as {key: [values]} (keys may repeat)."""
    settings = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def check_units(units, binary, drain_grace):
    for name in sorted(os.listdir(units)):
        unit = unit_settings(os.path.join(units, name))
        role = re.match(r"estuary-(\w+)", name).group(1)
        first = lambda key: (unit.get(key) or [""])[0]
        exec_start = first("ExecStart").split()
        check(exec_start[:2] == ["/usr/bin/estuary", role], f"{name}: runs `estuary {role}`")
        # Every flag the unit passes must be one the role takes.
        help_text = subprocess.run(
            [binary, role, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for flag in [word for word in exec_start if word.startswith("--")]:
            check(flag in help_text, f"{name}: `estuary {role}` takes {flag}")
        # Every role says READY=1 and STOPPING=1 (tests/operable.rs checks each).
        check(first("Type") == "notify", f"{name}: Type=notify")
        # The edge, the packager and control turn SIGHUP into a reload: for the ingest it would
        # be a kill.
        reloads = role in ("edge", "packager", "control")
        reload = first("ExecReload")
        check(
            (reload == "/bin/kill -HUP $MAINPID") if reloads else reload == "",
            f"{name}: {'ExecReload sends SIGHUP' if reloads else 'no ExecReload'}",
        )
        check(first("KillSignal") == "SIGTERM", f"{name}: KillSignal=SIGTERM")
        if role == "edge":
            check(
                seconds(first("TimeoutStopSec")) > drain_grace,
                f"{name}: TimeoutStopSec ({first('TimeoutStopSec')}) exceeds the drain "
                f"grace ({drain_grace:g}s)",
            )
        check(int(first("LimitNOFILE") or 0) >= 4096, f"{name}: LimitNOFILE at least 4096")
        for key, value in [
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("User", "estuary"),
        ]:
            check(first(key) == value, f"{name}: {key}={value}")
        capabilities = first("CapabilityBoundingSet")
        check(
            capabilities in ("CAP_NET_BIND_SERVICE", ""),
            f"{name}: no capability beyond CAP_NET_BIND_SERVICE",
        )
        filters = " ".join(unit.get("SystemCallFilter", []))
        check("@system-service" in filters, f"{name}: SystemCallFilter=@system-service")
        if role in ("edge", "packager", "control"):
            check(
                all(call in filters for call in ("io_uring_setup", "io_uring_enter")),
                f"{name}: io_uring allowed",
            )
        if role == "ingest":
            allowed = " ".join(unit.get("DeviceAllow", []))
            check(
                "char-video4linux" in allowed and "char-alsa" in allowed,
                f"{name}: V4L2 and ALSA devices allowed",
            )
            groups = first("SupplementaryGroups").split()
            check({"video", "audio"} <= set(groups), f"{name}: in the video and audio groups")


def check_notify(binary):
    """A real edge under a stand-in service manager: READY=1 once it listens, RELOADING=1 and
    READY=1 on SIGHUP, STOPPING=1 on SIGTERM, then it exits."""
    folder = tempfile.mkdtemp(prefix="estuary-notify-")
    path = os.path.join(folder, "notify")
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(path)
    manager.settimeout(30)
    config = os.path.join(folder, "edge.toml")
    with open(config, "w") as file:
        file.write('listen = "127.0.0.1:0"\nupstreams = ["http://127.0.0.1:9"]\ndrain_grace = "2s"\n')
    environment = dict(os.environ, NOTIFY_SOCKET=path)
    edge = subprocess.Popen(
        [binary, "edge", "--config", config], env=environment, stderr=subprocess.DEVNULL
    )

    def next_state():
        try:
            return manager.recv(4096).decode().splitlines()[0]
        except socket.timeout:
            return "(nothing within 30 s)"

    try:
        check(next_state() == "READY=1", "edge under Type=notify: READY=1 once it listens")
        edge.send_signal(signal.SIGHUP)
        reloading, ready = next_state(), next_state()
        check(
            (reloading, ready) == ("RELOADING=1", "READY=1"),
            f"edge under Type=notify: SIGHUP gives RELOADING=1 then READY=1 (got {reloading}, {ready})",
        )
        edge.send_signal(signal.SIGTERM)
        check(next_state() == "STOPPING=1", "edge under Type=notify: SIGTERM gives STOPPING=1")
        try:
            code = edge.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        check(code == 0, f"edge under Type=notify: exits 0 after draining (exit {code})")
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.wait()
        manager.close()
        os.unlink(path)
        os.unlink(config)
        os.rmdir(folder)


def check_manifests(rendered, drain_grace):
    import yaml

    objects = [o for o in yaml.safe_load_all(open(rendered)) if o]
    kinds = lambda kind: [o for o in objects if o["kind"] == kind]
    workloads = kinds("Deployment") + kinds("StatefulSet")
    check(len(workloads) >= 4, f"{len(workloads)} Deployments and StatefulSets rendered")
    for workload in workloads:
        name = f"{workload['kind']} {workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        role = workload["metadata"]["labels"].get("app.kubernetes.io/name", "")
        longest_stop = 0
        for container in pod["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                path = container.get(probe, {}).get("httpGet", {}).get("path")
                check(path == "/healthz", f"{name}: {probe} on /healthz")
            pre_stop = container.get("lifecycle", {}).get("preStop", {})
            check(bool(pre_stop), f"{name}: a preStop hook")
            longest_stop = max(longest_stop, pre_stop.get("sleep", {}).get("seconds", 0))
            requests = container.get("resources", {}).get("requests", {})
            check("cpu" in requests and "memory" in requests, f"{name}: CPU and memory requests")
            check(
                container.get("securityContext", {}).get("allowPrivilegeEscalation") is False,
                f"{name}: no privilege escalation",
            )
        check(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: runs as non-root")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        # The edge drains on SIGTERM, which comes after the preStop hook.
        needed = longest_stop + (drain_grace if role == "estuary-edge" else 0)
        check(grace > needed, f"{name}: terminationGracePeriodSeconds {grace} > {needed:g}")
    names = {w["metadata"]["name"]: w for w in workloads}
    packager = names.get("estuary-packager", {})
    check(
        packager.get("kind") == "StatefulSet" and packager["spec"].get("replicas") == 2,
        "the packager is a StatefulSet of 2",
    )
    check(names.get("estuary-control", {}).get("spec", {}).get("replicas") == 2, "control has 2 replicas")
    autoscalers = kinds("HorizontalPodAutoscaler")
    targets = {a["spec"]["scaleTargetRef"]["name"]: a for a in autoscalers}
    edge_scaler = targets.get("estuary-edge", {"spec": {"metrics": []}})
    metric_kinds = {m["type"] for m in edge_scaler["spec"]["metrics"]}
    check({"Resource", "Pods"} <= metric_kinds, "the edges scale on CPU and on viewers")
    services = {s["metadata"]["name"]: s for s in kinds("Service")}
    edge_ports = {(p["port"], p.get("protocol", "TCP")) for p in services.get("estuary-edge", {"spec": {"ports": []}})["spec"]["ports"]}
    check({(443, "TCP"), (443, "UDP")} <= edge_ports, "the edge Service has 443 over TCP and UDP")
    disrupted = {
        tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in kinds("PodDisruptionBudget")
    }
    for role in ("estuary-edge", "estuary-packager", "estuary-control", "estuary-ingest"):
        check(
            (("app.kubernetes.io/name", role),) in disrupted,
            f"a PodDisruptionBudget for {role}",
        )
    policies = kinds("NetworkPolicy")
    check(
        any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies),
        "a default-deny ingress policy",
    )

    def allowed_sources(role):
        sources = set()
        for policy in policies:
            selected = policy["spec"]["podSelector"].get("matchLabels", {})
            if selected.get("app.kubernetes.io/name") != role:
                continue
            for rule in policy["spec"].get("ingress", []):
                for source in rule.get("from", [{"podSelector": {"matchLabels": {"*": "*"}}}]):
                    labels = source.get("podSelector", {}).get("matchLabels", {"*": "*"})
                    sources.add(labels.get("app.kubernetes.io/name", "*"))
        return sources

    check(
        allowed_sources("estuary-packager") == {"estuary-edge", "estuary-ingest", "estuary-control"},
        f"packagers take only edges, ingests and control ({sorted(allowed_sources('estuary-packager'))})",
    )
    report_port_sources = set()
    for policy in policies:
        if policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") != "estuary-control":
            continue
        for rule in policy["spec"].get("ingress", []):
            if any(p.get("port") == 8071 for p in rule.get("ports", [])):
                for source in rule.get("from", [{}]):
                    labels = source.get("podSelector", {}).get("matchLabels", {})
                    report_port_sources.add(labels.get("app.kubernetes.io/name", "*"))
    check(report_port_sources == {"estuary-edge"}, "only edges reach control's report port")


def main():
    command = sys.argv[1]
    if command == "units":
        check_units(sys.argv[2], sys.argv[3], edge_drain_grace(sys.argv[4]))
    elif command == "notify":
        check_notify(sys.argv[2])
    elif command == "manifests":
        check_manifests(sys.argv[2], edge_drain_grace(sys.argv[3]))
    print(f"check-deploy {command}: {passes} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
