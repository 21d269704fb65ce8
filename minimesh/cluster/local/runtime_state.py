"""On-disk runtime state of pods on a local cluster node: the contract between the kubelet (writer) and
the API server's pods/log, pods/exec and pods/portforward handlers (readers), and `cluster down`.

    <state>/pods/<pod-uid>/pod.json                      namespace, name, netns (written at sandbox creation)
    <state>/pods/<pod-uid>/containers/<name>/exec.json   how to enter the running container (ContainerExec)
    <state>/pods/<pod-uid>/containers/<name>/<N>.log     CRI-format log of the N-th run (N = restartCount)

Log lines use the CRI format the real kubelet stores, so `kubectl logs --timestamps` and `--previous`
work the same way:  `2024-05-01T10:00:00.123456789Z stdout F the line`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class PodRecord:
    uid: str
    namespace: str
    name: str
    netns: str
    pod_ip: str = ""


@dataclass
class ContainerExec:
    """Everything needed to start another process inside a running container (kubectl exec)."""

    pid: int  # a process of the container: its mount namespace and root are entered
    uid: int
    gid: int
    supplementary_groups: list[int] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)  # effective set, lower-case names ("net_admin")
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = "/"
    no_new_privs: bool = False
    privileged: bool = False  # capabilities == ["all"]: keep the full bounding set


def enter_argv(rec: ContainerExec, argv: list[str]) -> list[str]:
    """Command line that runs `argv` inside the container as its user with its capabilities.

    Run it with `env=rec.env` (nsenter and setpriv pass the environment through); the process enters the
    container's mount, network, UTS and IPC namespaces, its root and working directory.
    """
    cmd = ["nsenter", "-t", str(rec.pid), "-m", "-n", "-u", "-i", f"--wdns={rec.working_dir or '/'}", "-r",
           "/usr/bin/setpriv", f"--reuid={rec.uid}", f"--regid={rec.gid}"]
    groups = ",".join(str(g) for g in rec.supplementary_groups)
    cmd.append(f"--groups={groups}" if groups else "--clear-groups")
    if rec.no_new_privs:
        cmd.append("--no-new-privs")
    if not rec.privileged:
        cmd += ["--inh-caps=-all", "--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in rec.capabilities)])]
    return [*cmd, "--", *argv]


def pod_dir(pods_dir: Path, pod_uid: str) -> Path:
    return pods_dir / pod_uid


def container_dir(pods_dir: Path, pod_uid: str, container: str) -> Path:
    return pods_dir / pod_uid / "containers" / container


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj))  # type: ignore[arg-type]
    tmp.replace(path)


def read_pod_record(pods_dir: Path, pod_uid: str) -> PodRecord | None:
    try:
        return PodRecord(**json.loads((pod_dir(pods_dir, pod_uid) / "pod.json").read_text()))
    except FileNotFoundError:
        return None


def read_exec(pods_dir: Path, pod_uid: str, container: str) -> ContainerExec | None:
    try:
        return ContainerExec(**json.loads((container_dir(pods_dir, pod_uid, container) / "exec.json").read_text()))
    except FileNotFoundError:
        return None


def log_path(pods_dir: Path, pod_uid: str, container: str, restart_count: int) -> Path:
    return container_dir(pods_dir, pod_uid, container) / f"{restart_count}.log"


def log_runs(pods_dir: Path, pod_uid: str, container: str) -> list[int]:
    d = container_dir(pods_dir, pod_uid, container)
    if not d.is_dir():
        return []
    return sorted(int(p.stem) for p in d.glob("*.log") if p.stem.isdigit())


def cri_timestamp(t: datetime | None = None) -> str:
    t = t or datetime.now(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def cri_line(stream: str, text: str, *, partial: bool = False, t: datetime | None = None) -> str:
    """One CRI log line; `text` without its trailing newline."""
    return f"{cri_timestamp(t)} {stream} {'P' if partial else 'F'} {text}\n"


_CRI = re.compile(r"^(\S+) (stdout|stderr) ([PF]) ?(.*)$", re.S)


@dataclass(frozen=True)
class LogLine:
    timestamp: str
    stream: str
    partial: bool
    text: str

    def when(self) -> datetime:
        # Python parses microseconds only; drop the extra nanosecond digits.
        base = self.timestamp.rstrip("Z")
        if "." in base:
            head, frac = base.split(".", 1)
            base = f"{head}.{frac[:6]}"
        return datetime.fromisoformat(base).replace(tzinfo=UTC)


def parse_cri_line(line: str) -> LogLine | None:
    m = _CRI.match(line.rstrip("\n"))
    if not m:
        return None
    return LogLine(m.group(1), m.group(2), m.group(3) == "P", m.group(4))
