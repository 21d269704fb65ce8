"""Fixtures for node tests. A throwaway node for runtime tests without an API server: a node netns, the sandbox manager, the image
store and the runtime, all under a temporary state dir. Everything is removed on exit, even on failure."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from minimesh.cluster.local import hostnet
from minimesh.cluster.local.images import ImageStore
from minimesh.cluster.local.layout import ClusterLayout
from minimesh.cluster.local.node import security
from minimesh.cluster.local.node.cgroups import CgroupManager
from minimesh.cluster.local.node.containerspec import PodPaths, build_runspec
from minimesh.cluster.local.node.envvars import PodContext, make_environment
from minimesh.cluster.local.node.podfiles import pod_files
from minimesh.cluster.local.node.runtime import Run, Runtime
from minimesh.cluster.local.node.sandbox import Sandboxes, setup_node_network
from minimesh.cluster.local.node.volumes import VolumeManager
from minimesh.paths import SOURCE_ROOT


def make_pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    name = f"p{secrets.token_hex(3)}"
    return {
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "labels": {"app": "t"}},
        "spec": {"containers": containers, "nodeName": "minimesh-control-plane", **spec},
    }


@dataclass
class RuntimeNode:
    layout: ClusterLayout
    sandboxes: Sandboxes
    images: ImageStore
    runtime: Runtime
    cgroups: CgroupManager
    pods: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    async def start(self, pod: dict[str, Any], container: dict[str, Any], run: int = 0) -> tuple[Run, str]:
        """Sandbox (idempotent), volumes, then one run of `container`. Returns (run, container dir)."""
        uid = pod["metadata"]["uid"]
        if uid not in self.pods:
            self.pods.append(uid)
        sb = await asyncio.to_thread(self.sandboxes.create, pod)
        pdir = self.layout.pods_dir / uid
        files = pod_files(pod, sb.pod_ip, node_name=self.layout.node_name)
        paths = {}
        for fname, text in (("etc-hosts", files.hosts), ("resolv.conf", files.resolv_conf), ("hostname", files.hostname)):
            (pdir / fname).write_text(text)
            paths[fname] = str(pdir / fname)
        ctx = PodContext(pod, sb.pod_ip, self.layout.node_ip, {"cpu": "2", "memory": "1Gi"})

        async def no_token(_pod: dict, _src: dict) -> str:
            raise AssertionError("no tokens in runtime tests")

        vm = VolumeManager(pdir, self.layout.extra_mounts, lambda ns, n: None, lambda ns, n: None, no_token)
        volumes = await vm.setup(ctx)
        env = make_environment(ctx, container, [], lambda ns, n: None, lambda ns, n: None).env
        image = self.images.resolve(container["image"])
        cid = secrets.token_hex(16)
        cdir = pdir / "containers" / container["name"]
        cdir.mkdir(parents=True, exist_ok=True)
        pw = security.Passwd.parse(Path("/etc/passwd").read_text(), Path("/etc/group").read_text())
        spec = build_runspec(
            pod=pod, container=container, image=image, env=env, volumes=volumes,
            pod_paths=PodPaths(paths["etc-hosts"], paths["resolv.conf"], paths["hostname"]), passwd=pw,
            container_id=cid, run=run, container_dir=str(cdir), netns=sb.netns, hostname=files.hostname.strip(),
            hide=[str(self.layout.state_dir.parent.parent)],
            cgroups=self.cgroups.create(uid, cid, container.get("resources")),
        )
        r = await self.runtime.start(spec)
        self.runs.append(r)
        return r, str(cdir)

    async def stop_all(self) -> None:
        for r in self.runs:
            await self.runtime.stop(r, grace=1)


@pytest.fixture
def make_pod_fn():
    return make_pod


@pytest.fixture
def rt_node(tmp_path: Path, need_root: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[RuntimeNode]:
    """A node netns + sandboxes + runtime under tmp_path, no API server."""
    monkeypatch.setenv("MINIMESH_STATE_DIR", str(tmp_path / "state"))
    name = f"t{secrets.token_hex(4)}"
    layout = ClusterLayout(name=name, index=0, api_port=0, source_root=str(SOURCE_ROOT),
                           extra_mounts=[{"hostPath": str(SOURCE_ROOT), "containerPath": "/opt/minimesh"}])
    layout.state_dir.mkdir(parents=True)
    node = RuntimeNode(layout, Sandboxes(layout), ImageStore(SOURCE_ROOT, sys.prefix, tmp_path / "images"),
                       Runtime(tmp_path / "shim"), CgroupManager(name))
    subprocess.run(["ip", "netns", "add", layout.node_netns], check=True)
    try:
        subprocess.run(["ip", "-n", layout.node_netns, "link", "set", "lo", "up"], check=True)
        setup_node_network(layout)
        yield node
    finally:
        for uid in node.pods:
            node.sandboxes.destroy(uid)
            node.cgroups.remove_pod(uid)
        node.cgroups.remove_all()
        hostnet.delete_netns(layout.node_netns)
