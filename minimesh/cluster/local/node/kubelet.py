"""The kubelet: watches the pods bound to this node and runs one PodWorker per pod.

On start it compares the API with what the node left on disk: pods that still exist are re-adopted
(their containers kept running under their shims), anything else (pod dirs, IPs, network namespaces,
cgroups of pods the API no longer has) is torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from minimesh.cluster.local import hostnet, runtime_state
from minimesh.cluster.local.images import ImageStore
from minimesh.cluster.local.layout import ClusterLayout, existing_clusters
from minimesh.cluster.local.node.cgroups import CgroupManager
from minimesh.cluster.local.node.events import EventRecorder
from minimesh.cluster.local.node.podlogic import BACKOFF_CAP, Backoff
from minimesh.cluster.local.node.podworker import PodWorker
from minimesh.cluster.local.node.runspec import read_exit, read_start
from minimesh.cluster.local.node.runtime import Runtime
from minimesh.cluster.local.node.sandbox import Sandboxes
from minimesh.cluster.local.node.security import Passwd
from minimesh.cluster.local.node.tokens import TokenManager
from minimesh.cluster.local.node.volumes import VolumeManager
from minimesh.k8s.aclient import ApiError, AsyncKube, Informer, resource_path
from minimesh.paths import state_root

log = logging.getLogger(__name__)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


class Kubelet:
    def __init__(
        self,
        layout: ClusterLayout,
        kube: AsyncKube,
        *,
        services: Informer,
        configmaps: Informer,
        secrets: Informer,
        recorder: EventRecorder,
        images: ImageStore,
        allocatable: dict[str, str],
        backoff_base: float = 10.0,
    ):
        self.layout = layout
        self.kube = kube
        self.services_informer = services
        self.configmaps = configmaps
        self.secrets = secrets
        self.recorder = recorder
        self.images = images
        self.allocatable = allocatable
        self.runtime = Runtime(layout.state_dir / "shim")
        self.sandboxes = Sandboxes(layout)
        self.cgroups = CgroupManager(layout.name)
        self.tokens = TokenManager(kube)
        self.backoff = Backoff(backoff_base, BACKOFF_CAP)
        self.image_backoff = Backoff(backoff_base, BACKOFF_CAP)
        self.passwd = Passwd.parse(_read("/etc/passwd"), _read("/etc/group"))
        self.node_hosts = _read("/etc/hosts")
        self.node_resolv = _read("/etc/resolv.conf")
        self.state_root = state_root()
        self.workers: dict[str, PodWorker] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.pods = Informer(kube, "/api/v1/pods", self.on_pod, fieldSelector=f"spec.nodeName={layout.node_name}")
        self.started = asyncio.Event()
        self.bg: set[asyncio.Task[Any]] = set()
        configmaps.add_handler(self._on_config_object)
        secrets.add_handler(self._on_config_object)
        services.add_handler(self._on_service)

    # ---- caches the workers read -------------------------------------------------------------------
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.configmaps.get(namespace, name)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(namespace, name)

    def services(self) -> list[dict[str, Any]]:
        return self.services_informer.items()

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.services_informer.get(namespace, name)

    # ---- events from the API -----------------------------------------------------------------------
    async def _on_config_object(self, typ: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        ns = obj["metadata"].get("namespace")
        for w in self.workers.values():
            if w.pod["metadata"].get("namespace") == ns:
                w.wake.set()  # volumes refresh (atomic swap) and waiting containers retry

    async def _on_service(self, typ: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        return None  # service env vars are read when a container starts, like the kubelet

    async def on_pod(self, typ: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        if not self.started.is_set():
            return  # the initial list is handled by run() after the orphan check
        self._dispatch(typ, pod)

    def _dispatch(self, typ: str, pod: dict[str, Any], *, adopt: bool = False) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if typ == "DELETED":
            if worker:
                worker.removed = True
                worker.update(pod)
            else:
                self._background(self.teardown_pod(uid))
            return
        if worker:
            worker.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        has_state = runtime_state.pod_dir(self.layout.pods_dir, uid).exists()
        if phase in ("Succeeded", "Failed") and not has_state and not pod["metadata"].get("deletionTimestamp"):
            return  # finished before this node saw it (or before a restart wiped its state)
        if phase in ("Succeeded", "Failed") and not has_state and pod["metadata"].get("deletionTimestamp"):
            self._background(self._delete_finished(pod))
            return
        worker = PodWorker(self, pod)
        if adopt or has_state:
            worker.adopt()
            if phase in ("Succeeded", "Failed"):
                worker.terminal = phase
        self.workers[uid] = worker
        task = asyncio.create_task(worker.run(), name=f"pod {uid}")
        self.tasks[uid] = task
        task.add_done_callback(lambda _t, uid=uid: self._worker_done(uid))

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.bg.add(task)
        task.add_done_callback(self.bg.discard)

    async def _delete_finished(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.kube.delete(resource_path("v1", "pods", meta["namespace"], meta["name"]),
                                   {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})

    def _worker_done(self, uid: str) -> None:
        self.workers.pop(uid, None)
        task = self.tasks.pop(uid, None)
        if task and not task.cancelled() and task.exception():
            log.error("pod worker %s failed", uid, exc_info=task.exception())

    # ---- start-up: adopt or clean ------------------------------------------------------------------
    async def run(self) -> None:
        pods_task = asyncio.create_task(self.pods.run(), name="pods informer")
        try:
            await self.pods.synced.wait()
            live = {p["metadata"]["uid"]: p for p in self.pods.items()}
            for uid in self.sandboxes.known_pods() | self.cgroups.pods():
                if uid not in live:
                    log.info("cleaning up pod %s left by an earlier node process", uid)
                    await self.teardown_pod(uid)
            for ns in self.sandboxes.orphan_netns(set(live)):
                await asyncio.to_thread(hostnet.delete_netns, ns)
            self.cgroups.sweep_stale(set(existing_clusters()))
            for pod in live.values():
                self._dispatch("ADDED", pod, adopt=True)
            self.started.set()
            await pods_task
        finally:
            pods_task.cancel()

    async def stop(self) -> None:
        """Stop the workers; containers keep running (a restarted node adopts them), as with a real kubelet."""
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    # ---- teardown ----------------------------------------------------------------------------------
    async def teardown_pod(self, uid: str) -> None:
        await asyncio.to_thread(self._teardown_sync, uid)
        self.tokens.forget(uid)
        self.backoff.forget_prefix(uid + "/")
        self.image_backoff.forget_prefix("image:" + uid + "/")

    def _teardown_sync(self, uid: str) -> None:
        kill_pod_containers(self.layout.pods_dir, uid)
        self.sandboxes.destroy(uid)
        pdir = runtime_state.pod_dir(self.layout.pods_dir, uid)
        VolumeManager(pdir, [], lambda *_: None, lambda *_: None, _no_token).teardown()
        self.cgroups.remove_pod(uid)
        errors: list[str] = []
        shutil.rmtree(pdir, onerror=lambda fn, path, exc: errors.append(f"{path}: {exc[1]}"))
        if pdir.exists():
            log.warning("pod dir %s not removed: %s", pdir, "; ".join(errors[:5]))
        log.info("pod %s torn down", uid)


async def _no_token(*_: Any) -> str:
    raise RuntimeError("no tokens during teardown")


def kill_pod_containers(pods_dir: Path, uid: str) -> None:
    """SIGKILL every container of a pod that a start record says is alive (hostNetwork ones too)."""
    shims = []
    cdirs = runtime_state.pod_dir(pods_dir, uid) / "containers"
    if not cdirs.is_dir():
        return
    for cdir in cdirs.iterdir():
        for start_file in cdir.glob("*.start.json"):
            n = start_file.name.split(".")[0]
            if not n.isdigit() or read_exit(cdir, int(n)):
                continue
            start = read_start(cdir, int(n))
            if start is None:
                continue
            if _parent_of(start.pid) == start.shim_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(start.pid, signal.SIGKILL)
                shims.append(start.shim_pid)
    deadline = time.monotonic() + 3
    while shims and time.monotonic() < deadline:
        shims = [p for p in shims if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.05)
    for p in shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
