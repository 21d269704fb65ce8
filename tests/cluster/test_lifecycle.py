"""The local cluster's lifecycle: side by side, restart without loss, and `down` leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from minimesh.cluster.local import hostnet, lifecycle
from minimesh.cluster.local.layout import ClusterLayout
from minimesh.paths import state_root

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("lifecycle")]


def _name(tag: str) -> str:
    return f"lc{tag}{uuid.uuid4().hex[:5]}"


def _kubectl(layout: ClusterLayout, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(layout.kubeconfig_path), *args],
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


POD = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "echo {marker} > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
"""


def _run_web(layout: ClusterLayout, marker: str) -> str:
    subprocess.run(
        ["kubectl", "--kubeconfig", str(layout.kubeconfig_path), "apply", "-f", "-"],
        input=POD.replace("{marker}", marker), text=True, check=True, capture_output=True,
    )
    _kubectl(layout, "wait", "--for=condition=Ready", "pod/web", "--timeout=60s", timeout=70)
    return _kubectl(layout, "get", "pod", "web", "-o", "jsonpath={.status.podIP}")


def _leftovers(name: str, layout: ClusterLayout) -> list[str]:
    found = [f"netns {ns}" for ns in hostnet.list_netns(f"mm-{name}_")]
    if hostnet.link_exists(layout.host_veth):
        found.append(f"link {layout.host_veth}")
    if (state_root() / "clusters" / name).exists():
        found.append("state dir")
    for root in Path("/sys/fs/cgroup").glob(f"*/minimesh-{name}"):
        found.append(f"cgroup {root}")
    procs = subprocess.run(["pgrep", "-f", f"--name {name}"], capture_output=True, text=True).stdout.split()
    found += [f"process {p}" for p in procs if int(p) != os.getpid()]
    return found


def test_two_clusters_side_by_side_then_down_leaves_nothing() -> None:
    a, b = _name("a"), _name("b")
    try:
        la = lifecycle.up(a, merge_kubeconfig=False).layout
        lb = lifecycle.up(b, merge_kubeconfig=False).layout
        assert la.host_ip != lb.host_ip and la.api_port != lb.api_port
        ip_a = _run_web(la, "from-a")
        ip_b = _run_web(lb, "from-b")
        # Same pod CIDR in both: the addresses may even be equal, yet each cluster reaches its own pod.
        assert ip_a.startswith("10.244.") and ip_b.startswith("10.244.")
        for layout, marker, ip in ((la, "from-a", ip_a), (lb, "from-b", ip_b)):
            # From the node of each cluster to its pod IP: traffic stays inside that cluster.
            out = hostnet.run("curl", "-s", "--max-time", "5", f"http://{ip}:8080/index.html", netns=layout.node_netns)
            assert marker in out
        # Taking a down leaves b untouched.
        lifecycle.down(a)
        assert _leftovers(a, la) == []
        assert "from-b" in _kubectl(lb, "exec", "web", "--", "wget", "-qO-", "http://127.0.0.1:8080/index.html")
    finally:
        for n in (a, b):
            lifecycle.down(n)
    assert _leftovers(b, lb) == []


def test_restart_keeps_every_object_and_down_cleans_up_after_a_crash() -> None:
    name = _name("r")
    try:
        layout = lifecycle.up(name, merge_kubeconfig=False).layout
        subprocess.run(
            ["kubectl", "--kubeconfig", str(layout.kubeconfig_path), "apply", "-f", "-"],
            input="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep-me}\ndata: {k: v}\n",
            text=True, check=True, capture_output=True,
        )
        rv_before = int(_kubectl(layout, "get", "configmap", "keep-me", "-o", "jsonpath={.metadata.resourceVersion}"))
        _run_web(layout, "before-crash")

        # Crash the control plane (SIGKILL: no clean shutdown), then bring it back with `up`.
        pid = int(layout.pidfile("controlplane").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        result = lifecycle.up(name, merge_kubeconfig=False)
        assert not result.created
        assert _kubectl(layout, "get", "configmap", "keep-me", "-o", "jsonpath={.data.k}") == "v"
        _kubectl(layout, "label", "configmap", "keep-me", "after=restart")
        rv_after = int(_kubectl(layout, "get", "configmap", "keep-me", "-o", "jsonpath={.metadata.resourceVersion}"))
        assert rv_after > rv_before, "resourceVersions must keep increasing across a restart"
        assert "before-crash" in _kubectl(layout, "exec", "web", "--", "wget", "-qO-", "http://127.0.0.1:8080/index.html")

        # Now crash everything at once and check that `down` still removes it all.
        for component in ("node", "controlplane"):
            os.killpg(int(layout.pidfile(component).read_text()), signal.SIGKILL)
    finally:
        lifecycle.down(name)
    assert _leftovers(name, layout) == []
