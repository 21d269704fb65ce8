"""Per-container cgroups (v1 memory, cpu, pids): /sys/fs/cgroup/<controller>/minimesh-<cluster>/pod<uid>/<id>.

They give the kubelet three things: memory and CPU limits from `resources`, OOMKilled detection
(memory.oom_control), and the full set of a container's processes, to kill what its main process
leaves behind. A controller is used only when the node process sits at the root of that hierarchy;
a cgroup managed by someone else (a login session, a sandbox) is left alone, and so is a pure
cgroup v2 host. Then containers simply run without that controller's limits (the shim still kills
leftovers through its process group and as child subreaper).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from minimesh.cluster.local.node import quantity

log = logging.getLogger(__name__)
CONTROLLERS = ("memory", "cpu", "pids")
CFS_PERIOD = 100_000


def own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """controller -> our path, from /proc/self/cgroup (v1 lines only)."""
    out: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[1]:
            continue
        for ctrl in parts[1].split(","):
            out[ctrl] = parts[2]
    return out


def limits_for(resources: dict[str, Any] | None) -> dict[str, str]:
    """cgroup v1 settings for a container's resources (pure)."""
    resources = resources or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    out: dict[str, str] = {}
    if "memory" in limits:
        out["memory.limit_in_bytes"] = str(int(quantity.parse(limits["memory"])))
    cpu_req = requests.get("cpu", limits.get("cpu"))
    if cpu_req is not None:
        out["cpu.shares"] = str(max(2, int(quantity.parse(cpu_req) * 1024)))
    if "cpu" in limits:
        quota = int(quantity.parse(limits["cpu"]) * Decimal(CFS_PERIOD))
        out["cpu.cfs_period_us"] = str(CFS_PERIOD)
        out["cpu.cfs_quota_us"] = str(max(1000, quota))
    return out


class CgroupManager:
    def __init__(self, cluster: str, base: Path = Path("/sys/fs/cgroup")):
        self.roots: dict[str, Path] = {}
        try:
            mine = own_cgroups(Path("/proc/self/cgroup").read_text())
        except OSError:
            mine = {}
        for ctrl in CONTROLLERS:
            mount = base / ctrl
            # Only hierarchies where we sit at the root: a cgroup someone else manages (a session
            # scope, a sandbox) is theirs to create and remove, so we stay out of it.
            if mine.get(ctrl) == "/" and (mount / "cgroup.procs").exists():
                root = mount / f"minimesh-{cluster}"
                try:
                    root.mkdir(parents=True, exist_ok=True)
                    self.roots[ctrl] = root
                except OSError as e:
                    log.info("cgroup %s not usable (%s); containers run without it", ctrl, e)

    @property
    def enabled(self) -> bool:
        return bool(self.roots)

    def _dir(self, ctrl: str, pod_uid: str, container_id: str | None = None) -> Path:
        d = self.roots[ctrl] / f"pod{pod_uid}"
        return d / container_id if container_id else d

    def create(self, pod_uid: str, container_id: str, resources: dict[str, Any] | None) -> list[str]:
        settings = limits_for(resources)
        dirs = []
        for ctrl in self.roots:
            d = self._dir(ctrl, pod_uid, container_id)
            try:
                d.mkdir(parents=True, exist_ok=True)
                for key, value in settings.items():
                    if key.startswith(ctrl + "."):
                        (d / key).write_text(value)
                dirs.append(str(d))
            except OSError as e:
                log.warning("cgroup %s for %s: %s", ctrl, container_id, e)
        return dirs

    def pids(self, pod_uid: str, container_id: str) -> set[int]:
        out: set[int] = set()
        for ctrl in self.roots:
            with contextlib.suppress(OSError):
                out.update(int(p) for p in (self._dir(ctrl, pod_uid, container_id) / "cgroup.procs").read_text().split())
        return out

    def remove(self, pod_uid: str, container_id: str) -> None:
        for ctrl in self.roots:
            with contextlib.suppress(OSError):
                self._dir(ctrl, pod_uid, container_id).rmdir()

    def remove_pod(self, pod_uid: str) -> None:
        for ctrl in self.roots:
            d = self._dir(ctrl, pod_uid)
            if d.is_dir():
                for child in d.iterdir():
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()
                with contextlib.suppress(OSError):
                    d.rmdir()

    def pods(self) -> set[str]:
        out: set[str] = set()
        for root in self.roots.values():
            with contextlib.suppress(OSError):
                out.update(p.name[3:] for p in root.iterdir() if p.is_dir() and p.name.startswith("pod"))
        return out

    def sweep_stale(self, live_clusters: set[str]) -> None:
        """Remove the (empty) cgroups of clusters that no longer exist: `cluster down` of a cluster whose
        containers were killed after its node stopped leaves them behind."""
        for root in self.roots.values():
            for d in root.parent.glob("minimesh-*"):
                with contextlib.suppress(OSError):
                    if d.name[len("minimesh-"):] in live_clusters or time.time() - d.stat().st_mtime < 60:
                        continue  # live, or just made by a cluster (or test) with another state dir
                for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    d.rmdir()

    def remove_all(self) -> None:
        for uid in self.pods():
            self.remove_pod(uid)
        for root in self.roots.values():
            with contextlib.suppress(OSError):
                os.rmdir(root)
