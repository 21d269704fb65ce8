"""`minimesh cluster up|down|status` for the local provider.

up:   layout record → PKI + kubeconfig → node netns and host link → control plane process (API server,
      controllers, scheduler) → bootstrap objects → node process (kubelet, kube-proxy, DNS) → ready.
down: stop processes, delete every network namespace of the cluster, the host link and the state dir.
      Works from whatever is left after a crash (it goes by names, not by what the processes remember).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minimesh.cluster.local import hostnet, kubeconfig
from minimesh.cluster.local.layout import (
    DNS_PORT,
    DNS_SERVICE_IP,
    KUBERNETES_SERVICE_IP,
    ClusterLayout,
    LayoutError,
    existing_clusters,
    free_index,
    validate_name,
)
from minimesh.cluster.local.pki import Pki, create_pki, load_pki
from minimesh.paths import IMAGE_SOURCE_MOUNT, SOURCE_ROOT, state_root

COMPONENTS = ("controlplane", "node")
Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(layout: ClusterLayout, component: str) -> int | None:
    try:
        pid = int(layout.pidfile(component).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    # Guard against a recycled pid: the process must be ours, for this cluster.
    if f"minimesh.cluster.local.{component}" in cmdline and f"--name {layout.name}" in cmdline:
        return pid
    return None


def _spawn(layout: ClusterLayout, component: str, netns: str | None = None) -> subprocess.Popen[bytes]:
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", f"minimesh.cluster.local.{component}", "--name", layout.name]
    if netns:
        # nsenter (not `ip netns exec`) keeps the host mount namespace, so the netns and mounts the
        # kubelet creates are visible to `cluster down` and to the API server's exec/logs handlers.
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([layout.source_root, *filter(None, [env.get("PYTHONPATH")])])
    env["MINIMESH_STATE_DIR"] = str(state_root())
    env.pop("KUBECONFIG", None)
    with open(layout.logs_dir / f"{component}.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, cwd="/",
        )
    layout.pidfile(component).write_text(str(proc.pid))
    return proc


def _api_get(layout: ClusterLayout, pki: Pki, path: str, timeout: float = 2.0) -> dict:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    req = urllib.request.Request(layout.api_server_url + path, headers={"Authorization": f"Bearer {pki.admin_token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
        body = resp.read()
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return {"text": body.decode()}


def _api_send(layout: ClusterLayout, pki: Pki, method: str, path: str, obj: dict) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    req = urllib.request.Request(
        layout.api_server_url + path, data=json.dumps(obj).encode(), method=method,
        headers={"Authorization": f"Bearer {pki.admin_token}", "Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(req, context=ctx, timeout=5).read()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already exists: a restart of an existing cluster
            raise ClusterError(f"bootstrap {method} {path}: {e.code} {e.read().decode()[:300]}") from None


def _wait(
    what: str, check: Callable[[], bool], timeout: float, layout: ClusterLayout, component: str,
    child: subprocess.Popen[bytes] | None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        # A child we just started is judged by its exit status: until it has exec'd, its command line
        # is still ours, so the pidfile check would wrongly call it dead.
        dead = child.poll() is not None if child is not None else _pid_alive(layout, component) is None
        if dead:
            tail = _log_tail(layout, component)
            raise ClusterError(f"the {component} process exited while waiting for {what}:\n{tail}")
        time.sleep(0.05)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; see {layout.logs_dir}/{component}.log:\n{_log_tail(layout, component)}")


def _log_tail(layout: ClusterLayout, component: str, lines: int = 25) -> str:
    try:
        return "\n".join((layout.logs_dir / f"{component}.log").read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def bootstrap_objects(layout: ClusterLayout) -> list[tuple[str, dict]]:
    """What the real control plane creates for itself: namespaces, kubernetes and kube-dns services."""

    def ns(name: str) -> tuple[str, dict]:
        return "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

    def manual_service(
        namespace: str, name: str, ip: str, ports: list[dict], addr: str, labels: dict[str, str]
    ) -> list[tuple[str, dict]]:
        svc = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"clusterIP": ip, "ports": [{k: v for k, v in p.items() if k != "target"} for p in ports]},
        }
        eps = {
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "subsets": [{"addresses": [{"ip": addr}],
                         "ports": [{"name": p["name"], "port": p["target"], "protocol": p["protocol"]} for p in ports]}],
        }
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {**labels, "kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "minimesh-lifecycle"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [addr], "conditions": {"ready": True, "serving": True, "terminating": False}}],
            "ports": [{"name": p["name"], "port": p["target"], "protocol": p["protocol"]} for p in ports],
        }
        return [
            (f"/api/v1/namespaces/{namespace}/services", svc),
            (f"/api/v1/namespaces/{namespace}/endpoints", eps),
            (f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices", slice_),
        ]

    objs = [ns("default"), ns("kube-system"), ns("kube-public"), ns("kube-node-lease")]
    objs += manual_service(
        "default", "kubernetes", KUBERNETES_SERVICE_IP,
        [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": layout.api_port, "target": layout.api_port}],
        layout.host_ip, {"component": "apiserver", "provider": "kubernetes"},
    )
    objs += manual_service(
        "kube-system", "kube-dns", DNS_SERVICE_IP,
        [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": DNS_PORT, "target": DNS_PORT},
         {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": DNS_PORT, "target": DNS_PORT}],
        layout.node_ip, {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
    )
    return objs


@dataclass
class UpResult:
    layout: ClusterLayout
    created: bool
    seconds: float


def up(name: str, *, timeout: float = 60.0, merge_kubeconfig: bool = True, progress: Progress | None = None) -> UpResult:
    """Create the cluster, or restart the components of an existing one that stopped (state is kept)."""
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    validate_name(name)
    created = False
    try:
        layout = ClusterLayout.load(name)
        pki = load_pki(layout)
    except LayoutError:
        if os.geteuid() != 0:
            raise ClusterError("the local cluster needs root (network namespaces, iptables): run as root, or use --provider kind") from None
        say("allocating addresses")
        lock = state_root() / "clusters" / ".alloc.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        import fcntl

        with open(lock, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            layout = ClusterLayout(
                name=name, index=free_index(), api_port=_free_port(), source_root=str(SOURCE_ROOT),
                extra_mounts=[{"hostPath": str(SOURCE_ROOT), "containerPath": IMAGE_SOURCE_MOUNT}],
            )
            layout.save()
        say("creating certificates")
        pki = create_pki(layout)
        kubeconfig.write(layout, pki)
        created = True

    if created or not hostnet.netns_exists(layout.node_netns):
        say("creating the node network namespace")
        try:
            hostnet.create_node_network(layout)
        except hostnet.NetError as e:
            raise ClusterError(str(e)) from None

    controlplane = node = None
    if _pid_alive(layout, "controlplane") is None:
        say("starting the control plane (API server, controllers, scheduler)")
        controlplane = _spawn(layout, "controlplane")
    _wait("the API server", lambda: _api_get(layout, pki, "/readyz").get("text", "") == "ok",
          timeout, layout, "controlplane", controlplane)

    say("creating bootstrap objects")
    for path, obj in bootstrap_objects(layout):
        _api_send(layout, pki, "POST", path, obj)

    if _pid_alive(layout, "node") is None:
        say("starting the node (kubelet, kube-proxy, DNS)")
        node = _spawn(layout, "node", netns=layout.node_netns)

    def node_ready() -> bool:
        node = _api_get(layout, pki, f"/api/v1/nodes/{layout.node_name}")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))

    _wait("the node to be Ready", node_ready, timeout, layout, "node", node)
    if merge_kubeconfig:
        kubeconfig.merge_into_user(layout, pki, set_current=True)
    return UpResult(layout, created, time.monotonic() - t0)


def _stop_component(layout: ClusterLayout, component: str, grace: float = 3.0) -> None:
    pid = _pid_alive(layout, component)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(layout, component):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def down(name: str) -> list[str]:
    """Remove everything the cluster made. Returns what was removed (for the CLI to show)."""
    validate_name(name)
    removed: list[str] = []
    try:
        layout: ClusterLayout | None = ClusterLayout.load(name)
    except (LayoutError, TypeError, ValueError):
        layout = None
    if layout is not None:
        for component in ("node", "controlplane"):
            if _pid_alive(layout, component):
                _stop_component(layout, component)
                removed.append(f"process {component}")
        with contextlib.suppress(Exception):
            kubeconfig.remove_from_user(layout)
    from minimesh.cluster.local.node.teardown import cleanup_cluster

    removed += cleanup_cluster(name)
    prefix = f"mm-{name}_"
    for ns in hostnet.list_netns(prefix):
        hostnet.delete_netns(ns)
        removed.append(f"netns {ns}")
    if layout is not None and hostnet.link_exists(layout.host_veth):
        hostnet.run("ip", "link", "del", layout.host_veth, check=False)
        removed.append(f"link {layout.host_veth}")
    state = state_root() / "clusters" / name
    if state.exists():
        _unmount_below(state)
        shutil.rmtree(state, ignore_errors=True)
        removed.append(f"state {state}")
    return removed


def _unmount_below(path: Path) -> None:
    """Unmount anything left mounted under the state dir in the host mount namespace (defensive)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except FileNotFoundError:
        return
    prefix = str(path.resolve()) + "/"
    targets = [m.split()[1] for m in mounts if m.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def all_names() -> list[str]:
    """Clusters with state, plus any whose namespaces outlived their state (a crash during down)."""
    names = set(existing_clusters())
    for ns in hostnet.list_netns("mm-"):
        if "_" in ns:
            names.add(ns[3:].split("_", 1)[0])
    return sorted(names)


def status(name: str) -> dict[str, object]:
    layout = ClusterLayout.load(name)
    pki = load_pki(layout)
    out: dict[str, object] = {
        "name": name,
        "provider": "local",
        "kubeconfig": str(layout.kubeconfig_path),
        "api_server": layout.api_server_url,
        "node_ip": layout.node_ip,
        "source_root": layout.source_root,
        "processes": {c: _pid_alive(layout, c) for c in COMPONENTS},
    }
    try:
        node = _api_get(layout, pki, f"/api/v1/nodes/{layout.node_name}")
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        out["node_ready"] = conds.get("Ready") == "True"
        pods = _api_get(layout, pki, "/api/v1/pods")
        out["pods"] = len(pods.get("items", []))
        out["api_ready"] = True
    except Exception as e:
        out["api_ready"] = False
        out["error"] = str(e)
    return out
