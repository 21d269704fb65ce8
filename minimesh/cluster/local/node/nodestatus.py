"""The Node object and its heartbeat Lease, as the kubelet registers and renews them.

The Lease in kube-node-lease is renewed every 10 s (one small PUT); the Node status is patched when
something changes, and at least every minute to move the Ready condition's lastHeartbeatTime.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minimesh.cluster.local.layout import KUBERNETES_VERSION, NODE_POD_CIDR, ClusterLayout
from minimesh.k8s.aclient import ApiError, AsyncKube, resource_path

log = logging.getLogger(__name__)
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_REPORT_EVERY = 60.0
RUNTIME_VERSION = "minimesh://0.1"
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def capacity(state_dir: str) -> dict[str, str]:
    mem_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    st = os.statvfs(state_dir)
    disk_kib = st.f_blocks * st.f_frsize // 1024
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{mem_kib}Ki",
        "pods": "110",
        "ephemeral-storage": f"{disk_kib}Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    }


def node_labels(node_name: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": ARCH,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": ARCH,
        "node-role.kubernetes.io/control-plane": "",
    }


def node_conditions(now: str, previous: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    prev = {c["type"]: c for c in previous or []}
    specs = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    out = []
    for type_, status, reason, message in specs:
        p = prev.get(type_)
        since = p["lastTransitionTime"] if p and p.get("status") == status else now
        out.append({"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": since})
    return out


def node_status(layout: ClusterLayout, cap: dict[str, str], previous: dict[str, Any] | None) -> dict[str, Any]:
    now = now_rfc3339()
    return {
        "capacity": cap,
        "allocatable": dict(cap),
        "conditions": node_conditions(now, (previous or {}).get("conditions")),
        "addresses": [{"type": "InternalIP", "address": layout.node_ip},
                      {"type": "Hostname", "address": layout.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": _machine_id(),
            "systemUUID": _machine_id(),
            "bootID": _read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": platform.release(),
            "osImage": os_image(),
            "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": KUBERNETES_VERSION,
            "kubeProxyVersion": KUBERNETES_VERSION,
            "operatingSystem": "linux",
            "architecture": ARCH,
        },
        "images": [],
    }


def node_object(layout: ClusterLayout, cap: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": layout.node_name, "labels": node_labels(layout.node_name),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"podCIDR": NODE_POD_CIDR, "podCIDRs": [NODE_POD_CIDR], "providerID": f"minimesh://{layout.name}"},
        "status": node_status(layout, cap, None),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _machine_id() -> str:
    return _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")


class NodeStatusReporter:
    def __init__(self, kube: AsyncKube, layout: ClusterLayout):
        self.kube = kube
        self.layout = layout
        self.capacity = capacity(str(layout.state_dir))
        self.node_uid = ""
        self.registered = asyncio.Event()

    async def register(self) -> None:
        node = node_object(self.layout, self.capacity)
        path = resource_path("v1", "nodes")
        try:
            created = await self.kube.create(path, node)
            self.node_uid = created["metadata"]["uid"]
        except ApiError as e:
            if e.code != 409:
                raise
            existing = await self.kube.get(resource_path("v1", "nodes", name=self.layout.node_name))
            self.node_uid = existing["metadata"]["uid"]
            await self.kube.patch(resource_path("v1", "nodes", name=self.layout.node_name),
                                  {"metadata": {"labels": node["metadata"]["labels"]}, "spec": node["spec"]})
        await self.report()
        self.registered.set()

    async def report(self) -> None:
        path = resource_path("v1", "nodes", name=self.layout.node_name)
        current = await self.kube.get_or_none(path)
        status = node_status(self.layout, self.capacity, (current or {}).get("status"))
        await self.kube.patch(path + "/status", {"status": status}, "merge")

    async def renew_lease(self) -> None:
        path = resource_path("coordination.k8s.io/v1", "leases", "kube-node-lease", self.layout.node_name)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.layout.node_name, "namespace": "kube-node-lease",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.layout.node_name,
                                              "uid": self.node_uid}] if self.node_uid else []},
            "spec": {"holderIdentity": self.layout.node_name, "leaseDurationSeconds": LEASE_SECONDS,
                     "renewTime": micro_time()},
        }
        try:
            await self.kube.patch(path, {"spec": lease["spec"]}, "merge")
        except ApiError as e:
            if e.code != 404:
                raise
            await self.kube.create(resource_path("coordination.k8s.io/v1", "leases", "kube-node-lease"), lease)

    async def run(self) -> None:
        backoff = 0.2
        while not self.registered.is_set():
            try:
                await self.register()
            except (TimeoutError, ApiError, OSError) as e:
                log.info("registering node: %s; retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)
            except Exception as e:  # aiohttp client errors while the API server starts
                log.info("registering node: %s; retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)
        last_report = time.monotonic()
        while True:
            try:
                await self.renew_lease()
                if time.monotonic() - last_report >= STATUS_REPORT_EVERY:
                    await self.report()
                    last_report = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("node heartbeat: %s", e)
            await asyncio.sleep(RENEW_EVERY)
