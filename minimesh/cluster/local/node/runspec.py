"""The contract between the kubelet and the container shim: what to run and where the shim reports.

The kubelet writes one `RunSpec` per container run (`<container dir>/<N>.spec.json`) and starts
`python -m minimesh.cluster.local.node.shim <that file>`. The shim writes, in the same directory:

    <N>.start.json   StartRecord, once the container process exists
    <N>.log          the CRI-format log of this run (runtime_state.log_path)
    <N>.exit.json    ExitRecord, when the run is over (the container process and everything it left)
    exec.json        runtime_state.ContainerExec while the run is alive (removed at exit)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Exit code containerd reports when the process could not be started at all (reason StartError).
START_ERROR_EXIT_CODE = 128


def rfc3339(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class MountSpec:
    target: str  # path inside the container
    source: str = ""  # host path for binds
    kind: str = "bind"  # "bind" | "tmpfs"
    readonly: bool = False
    options: str = ""  # tmpfs mount data (size=..., mode=...)


@dataclass
class RunSpec:
    container_id: str
    run: int  # restart count of this run
    container_dir: str  # host directory for records, logs and exec.json
    rootfs_dir: str  # host directory for this run's overlay upper/work/merged dirs
    netns: str  # network namespace to join (the pod's, or the node's for hostNetwork pods)
    hostname: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = "/"
    layers: list[str] = field(default_factory=list)  # image layer dirs, top first; the host "/" lies below
    mounts: list[MountSpec] = field(default_factory=list)
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)  # lower-case names, without "cap_"
    privileged: bool = False
    no_new_privs: bool = False
    readonly_rootfs: bool = False
    hide: list[str] = field(default_factory=list)  # host paths covered with an empty tmpfs (cluster state)
    cgroups: list[str] = field(default_factory=list)  # cgroup directories the container joins
    termination_message_path: str = "/dev/termination-log"
    termination_message_policy: str = "File"  # or FallbackToLogsOnError

    @property
    def spec_path(self) -> Path:
        return Path(self.container_dir) / f"{self.run}.spec.json"

    def save(self) -> Path:
        path = self.spec_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RunSpec:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        data["mounts"] = [MountSpec(**m) for m in data.get("mounts", [])]
        return cls(**data)


@dataclass
class StartRecord:
    container_id: str
    pid: int  # the container's main process (host pid namespace)
    shim_pid: int
    started_at: str  # RFC 3339


@dataclass
class ExitRecord:
    container_id: str
    exit_code: int
    reason: str  # Completed | Error | OOMKilled | StartError
    finished_at: str
    started_at: str = ""
    signal: int = 0
    message: str = ""


def start_path(container_dir: Path, run: int) -> Path:
    return container_dir / f"{run}.start.json"


def exit_path(container_dir: Path, run: int) -> Path:
    return container_dir / f"{run}.exit.json"


def read_start(container_dir: Path, run: int) -> StartRecord | None:
    try:
        return StartRecord(**json.loads(start_path(container_dir, run).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_exit(container_dir: Path, run: int) -> ExitRecord | None:
    try:
        return ExitRecord(**json.loads(exit_path(container_dir, run).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
