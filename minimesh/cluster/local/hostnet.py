"""Host-side network plumbing of a local cluster: the node namespace and its /30 link to the host.

Only the node netns and the host end of its veth are touched; the host's routes, sysctls and firewall
are left alone, so clusters can run side by side and `down` can always put things back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from minimesh.cluster.local.layout import POD_CIDR, ClusterLayout

NETNS_DIR = Path("/run/netns")


class NetError(RuntimeError):
    pass


def run(*argv: str, netns: str | None = None, check: bool = True, input: str | None = None) -> str:
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise NetError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_netns(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def create_node_network(layout: ClusterLayout) -> None:
    ns = layout.node_netns
    if netns_exists(ns):
        raise NetError(f"network namespace {ns} already exists (a crashed cluster?): run 'minimesh cluster down --name {layout.name}'")
    if link_exists(layout.host_veth):
        run("ip", "link", "del", layout.host_veth, check=False)
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", layout.host_veth, "type", "veth", "peer", "name", layout.node_veth, "netns", ns)
        run("ip", "addr", "add", f"{layout.host_ip}/30", "dev", layout.host_veth)
        run("ip", "link", "set", layout.host_veth, "up")
        for argv in (
            ("ip", "link", "set", "lo", "up"),
            ("ip", "addr", "add", f"{layout.node_ip}/30", "dev", layout.node_veth),
            ("ip", "link", "set", layout.node_veth, "up"),
            ("sysctl", "-qw", "net.ipv4.ip_forward=1"),
            ("sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"),
            # Pods reach the API server on the host through the node: masquerade them to the node IP,
            # because the host knows no route back to the pod CIDR (that keeps clusters independent).
            ("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", POD_CIDR, "-o", layout.node_veth,
             "-m", "comment", "--comment", "minimesh: pods to host", "-j", "MASQUERADE"),
        ):
            run(*argv, netns=ns)
    except NetError:
        destroy_node_network(layout)
        raise


def netns_pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_netns_processes(ns: str, grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL, every process inside a network namespace."""
    pids = netns_pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
            time.sleep(0.05)
        if not pids:
            return


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def delete_netns(ns: str) -> None:
    if netns_exists(ns):
        kill_netns_processes(ns)
        run("ip", "netns", "del", ns, check=False)
        if netns_exists(ns):  # a stale mount point without a namespace behind it
            subprocess.run(["umount", "-l", str(NETNS_DIR / ns)], capture_output=True)
            (NETNS_DIR / ns).unlink(missing_ok=True)


def destroy_node_network(layout: ClusterLayout) -> None:
    for ns in list_netns(layout.pod_netns_prefix):
        delete_netns(ns)
    delete_netns(layout.node_netns)
    if link_exists(layout.host_veth):
        run("ip", "link", "del", layout.host_veth, check=False)
