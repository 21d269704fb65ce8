"""The container runtime: starts container shims and watches them, with no polling.

Each run of a container is one shim process (see shim.py). The runtime learns that the container
process exists through a sync pipe the shim writes to, and that the run is over through a pidfd on
the shim (readable when it exits); both work for shims started by an earlier node process, which is
how a restarted node re-adopts running containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import minimesh
from minimesh.cluster.local.node.runspec import (
    ExitRecord,
    RunSpec,
    StartRecord,
    read_exit,
    read_start,
    rfc3339,
)

log = logging.getLogger(__name__)
CODE_ROOT = Path(minimesh.__file__).resolve().parent.parent
SHIM_MODULES = (
    "minimesh/__init__.py", "minimesh/cluster/__init__.py", "minimesh/cluster/local/__init__.py",
    "minimesh/cluster/local/runtime_state.py", "minimesh/cluster/local/node/__init__.py",
    "minimesh/cluster/local/node/nsutil.py", "minimesh/cluster/local/node/runspec.py",
    "minimesh/cluster/local/node/shim.py",
)


def snapshot_shim_code(dest: Path) -> Path:
    """Copy the few standard-library-only modules the shim runs into `dest` and return it.

    Shims start from this copy, so containers keep starting even when the tree the node was started
    from is replaced while the cluster runs (the test suite rebuilds its solved tree as code changes).
    """
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    for attempt in range(40):  # the source tree may be in the middle of being replaced: retry briefly
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for rel in SHIM_MODULES:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(CODE_ROOT / rel, tmp / rel)
            break
        except FileNotFoundError:
            if attempt == 39:
                raise
            time.sleep(0.05)
    shutil.rmtree(dest, ignore_errors=True)  # running shims have their modules loaded already
    tmp.rename(dest)
    return dest


@dataclass
class Run:
    """One run of a container."""

    container_id: str
    container_dir: Path
    run: int
    shim_pid: int = 0
    start: StartRecord | None = None
    exit: ExitRecord | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _pidfd: int = -1

    @property
    def running(self) -> bool:
        return self.start is not None and self.exit is None

    def signal(self, sig: int) -> None:
        """Signal the container's main process (its init, as containerd does)."""
        if self.start and self.exit is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.start.pid, sig)


def _is_child_of(pid: int, ppid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]) == ppid and fields[0] != "Z"
    except (OSError, IndexError, ValueError):
        return False


class Runtime:
    def __init__(self, code_dir: Path) -> None:
        self.python = sys.executable
        self.code_root = str(snapshot_shim_code(code_dir))

    async def start(self, spec: RunSpec) -> Run:
        """Start one run; returns once the container process exists (or the run failed to start)."""
        path = spec.save()
        cdir = Path(spec.container_dir)
        for stale in (cdir / f"{spec.run}.start.json", cdir / f"{spec.run}.exit.json", cdir / f"{spec.run}.log"):
            stale.unlink(missing_ok=True)
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": self.code_root, "PYTHONDONTWRITEBYTECODE": "1"}
        shim_log = cdir / "shim.log"
        try:
            pid = os.posix_spawn(
                self.python,
                [self.python, "-S", "-m", "minimesh.cluster.local.node.shim", str(path), "3"],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(shim_log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                    (os.POSIX_SPAWN_DUP2, sync_w, 3),
                ],
                setsid=True,
            )
        finally:
            os.close(sync_w)
        run = Run(spec.container_id, cdir, spec.run, shim_pid=pid)
        self._watch(run, child=True)
        loop = asyncio.get_running_loop()
        synced = loop.create_future()

        def on_sync() -> None:
            with contextlib.suppress(OSError):
                os.read(sync_r, 16)
            loop.remove_reader(sync_r)
            os.close(sync_r)
            if not synced.done():
                synced.set_result(None)

        loop.add_reader(sync_r, on_sync)
        await synced  # EOF or a byte: started, or gone
        run.start = read_start(cdir, spec.run)
        if run.start is None:
            await run.done.wait()
        return run

    def adopt(self, container_dir: Path, run_no: int) -> Run | None:
        """A run started by an earlier node process: still alive → watched again; finished → its record."""
        start = read_start(container_dir, run_no)
        exit_ = read_exit(container_dir, run_no)
        if start is None:
            return None
        run = Run(start.container_id, container_dir, run_no, shim_pid=start.shim_pid, start=start, exit=exit_)
        if exit_ is not None:
            run.done.set()
            return run
        if _is_child_of(start.pid, start.shim_pid):
            self._watch(run, child=False)
        else:  # shim and container died with the node (e.g. the host rebooted): nothing to adopt
            run.exit = ExitRecord(start.container_id, 137, "Error", start.started_at, start.started_at,
                                  message="the container's shim was gone when the node restarted")
            run.done.set()
        return run

    def _watch(self, run: Run, *, child: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            run._pidfd = os.pidfd_open(run.shim_pid)
        except ProcessLookupError:
            self._finished(run, child)
            return

        def on_exit() -> None:
            loop.remove_reader(run._pidfd)
            os.close(run._pidfd)
            run._pidfd = -1
            self._finished(run, child)

        loop.add_reader(run._pidfd, on_exit)

    def _finished(self, run: Run, child: bool) -> None:
        if child:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(run.shim_pid, os.WNOHANG)
        run.exit = read_exit(run.container_dir, run.run)
        if run.start is None:
            run.start = read_start(run.container_dir, run.run)
        if run.exit is None:
            tail = ""
            with contextlib.suppress(OSError):
                tail = (run.container_dir / "shim.log").read_text(errors="replace")[-500:]
            run.exit = ExitRecord(run.container_id, 137 if run.start else 128, "Error" if run.start else "StartError",
                                  rfc3339(), run.start.started_at if run.start else "",
                                  message=f"container shim exited without a record {tail}".strip())
        run.done.set()

    async def stop(self, run: Run, grace: float, stop_signal: int = signal.SIGTERM) -> None:
        """stop_signal, wait up to `grace` seconds, then SIGKILL (the shim kills what is left)."""
        if run.exit is not None or run.start is None:
            return
        run.signal(stop_signal)
        try:
            await asyncio.wait_for(run.done.wait(), timeout=max(grace, 0))
        except TimeoutError:
            run.signal(signal.SIGKILL)
            await run.done.wait()
