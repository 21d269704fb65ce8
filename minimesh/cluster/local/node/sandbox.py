"""Pod sandboxes: a network namespace per pod, wired to the node like a ptp CNI plugin.

    node netns                                   pod netns
    lo: 10.244.0.1/32 (gateway, source of probes)
    veth<8 hex> (proxy_arp) <------------------> eth0 10.244.0.N/32
    route 10.244.0.N/32 dev veth… src 10.244.0.1   default via 10.244.0.1 dev eth0 onlink

Node-side commands use `ip -n <node netns>`, so the same code works from the node process and from
tests running in the host namespace. hostNetwork pods get no sandbox of their own: they use the node's.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minimesh.cluster.local import hostnet, runtime_state
from minimesh.cluster.local.layout import NODE_POD_CIDR, POD_CIDR, POD_GATEWAY, SERVICE_CIDR, ClusterLayout
from minimesh.cluster.local.node.ipam import Ipam
from minimesh.cluster.local.node.nsutil import write_sysctl

# containerd 2 defaults for pod network namespaces: non-root may bind low ports and ping
POD_SYSCTLS = {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}


class SandboxError(RuntimeError):
    pass


@dataclass
class Sandbox:
    netns: str
    pod_ip: str
    veth: str = ""  # node side; "" for hostNetwork


def veth_name(pod_uid: str) -> str:
    return "veth" + hashlib.sha256(pod_uid.encode()).hexdigest()[:8]


def ip_batch(netns: str | None, commands: list[str]) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    proc = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"ip {'-n ' + netns if netns else ''} failed: {proc.stderr.strip() or proc.stdout.strip()}")


SERVICE_LINK = "mm-svc"  # a veth with its peer down: ClusterIPs route here, nothing ever leaves


def setup_node_network(layout: ClusterLayout) -> None:
    """Once per node start: the pod gateway address, and routes that keep cluster ranges inside the node.

    ClusterIPs need a route before the nat OUTPUT chain can DNAT locally made packets; it points at a
    link that goes nowhere, so a ClusterIP without a service is dropped in the node instead of being
    sent towards the host, and kube-proxy's REJECT still answers for services without endpoints.
    """
    have = subprocess.run(["ip", "-n", layout.node_netns, "link", "show", SERVICE_LINK], capture_output=True)
    cmds = [] if have.returncode == 0 else [f"link add {SERVICE_LINK} type veth peer name {SERVICE_LINK}-peer"]
    ip_batch(layout.node_netns, [
        *cmds,
        f"link set {SERVICE_LINK} up",
        f"addr replace {POD_GATEWAY}/32 dev lo",
        # pod IPs that do not exist are unreachable here rather than sent towards the host
        f"route replace unreachable {POD_CIDR}",
        f"route replace {SERVICE_CIDR} dev {SERVICE_LINK} src {POD_GATEWAY}",
    ])


class Sandboxes:
    def __init__(self, layout: ClusterLayout):
        self.layout = layout
        self.ipam = Ipam(layout.state_dir, NODE_POD_CIDR)

    def create(self, pod: dict[str, Any]) -> Sandbox:
        """Idempotent: an existing sandbox of this pod is returned as it is."""
        meta = pod["metadata"]
        uid = meta["uid"]
        if pod.get("spec", {}).get("hostNetwork"):
            sb = Sandbox(self.layout.node_netns, self.layout.node_ip)
            self._record(pod, sb)
            return sb
        netns = self.layout.pod_netns(uid)
        veth = veth_name(uid)
        rec = runtime_state.read_pod_record(self.layout.pods_dir, uid)
        if rec and rec.pod_ip and hostnet.netns_exists(netns):
            return Sandbox(netns, rec.pod_ip, veth)
        ip = self.ipam.allocate(uid)
        try:
            if hostnet.netns_exists(netns):  # half-made by a crashed attempt: start over
                self._delete_links(netns, veth)
            subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, text=True)
            ip_batch(self.layout.node_netns, [f"link add {veth} type veth peer name eth0 netns {netns}"])
            ip_batch(netns, [
                "link set lo up",
                f"addr add {ip}/32 dev eth0",
                "link set eth0 up",
                f"route add default via {POD_GATEWAY} dev eth0 onlink",
            ])
            ip_batch(self.layout.node_netns, [
                f"link set {veth} up",
                f"route replace {ip}/32 dev {veth} src {POD_GATEWAY}",
            ])
            write_sysctl(self.layout.node_netns, f"net.ipv4.conf.{veth}.proxy_arp", "1")
            sysctls = {**POD_SYSCTLS, **{s["name"]: str(s.get("value", "")) for s in
                                         (pod["spec"].get("securityContext") or {}).get("sysctls") or []
                                         if s.get("name", "").startswith("net.")}}
            for key, value in sysctls.items():
                write_sysctl(netns, key, value)
        except (subprocess.CalledProcessError, SandboxError, OSError) as e:
            self._delete_links(netns, veth)
            self.ipam.release(uid)
            detail = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
            raise SandboxError(f"failed to set up the pod network for {meta.get('namespace')}/{meta.get('name')}: {detail}") from None
        sb = Sandbox(netns, ip, veth)
        self._record(pod, sb)
        return sb

    def _record(self, pod: dict[str, Any], sb: Sandbox) -> None:
        meta = pod["metadata"]
        runtime_state.write_json(
            runtime_state.pod_dir(self.layout.pods_dir, meta["uid"]) / "pod.json",
            runtime_state.PodRecord(meta["uid"], meta["namespace"], meta["name"], sb.netns, sb.pod_ip),
        )

    def _delete_links(self, netns: str, veth: str) -> None:
        hostnet.delete_netns(netns)  # kills what is left inside first
        subprocess.run(["ip", "-n", self.layout.node_netns, "link", "del", veth], capture_output=True)

    def destroy(self, pod_uid: str) -> None:
        """Kill every process left in the pod's netns, delete it and the veth, release the IP."""
        netns = self.layout.pod_netns(pod_uid)
        self._delete_links(netns, veth_name(pod_uid))
        if not hostnet.netns_exists(netns):
            self.ipam.release(pod_uid)

    def known_pods(self) -> set[str]:
        """Pod uids with any trace on this node: a pod dir, an IP, or a netns."""
        uids: set[str] = set(self.ipam.allocations().values())
        if self.layout.pods_dir.is_dir():
            uids |= {p.name for p in self.layout.pods_dir.iterdir() if p.is_dir()}
        return uids

    def orphan_netns(self, live_uids: set[str]) -> list[str]:
        """Pod netns of this cluster whose pod is unknown (a node crash between creating and recording)."""
        live = {self.layout.pod_netns(u) for u in live_uids}
        return [ns for ns in hostnet.list_netns(self.layout.pod_netns_prefix) if ns not in live]


def remove_pod_dir(pods_dir: Path, pod_uid: str) -> None:
    d = runtime_state.pod_dir(pods_dir, pod_uid)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(d)
