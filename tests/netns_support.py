"""Throwaway network namespaces for tests (loaded by path from the conftest files that need it).

`netns_pair("init")` gives two namespaces joined by a veth: `a` ("the pod", 10.250.0.2/24) and `b`
("the peer", 10.250.0.1/24). Addresses exist only inside the two namespaces, names are random, and
everything (processes, namespaces, with their rules and links) is removed on exit, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

PY = sys.executable
A_IP, B_IP, PREFIX = "10.250.0.2", "10.250.0.1", 24
# Run children from "/" so `python -m` never puts the checkout (the starter tree) first on sys.path.
CWD = "/"


def _sh(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


def as_user(uid: int | None, gid: int | None = None) -> list[str]:
    if uid is None and gid is None:
        return []
    argv = ["setpriv"]
    if uid is not None:
        argv.append(f"--reuid={uid}")
    argv.append(f"--regid={gid if gid is not None else uid}")
    return [*argv, "--clear-groups"]


@dataclass
class Netns:
    name: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def argv(self, argv: Sequence[str], uid: int | None = None, gid: int | None = None) -> list[str]:
        return ["ip", "netns", "exec", self.name, *as_user(uid, gid), *argv]

    def run(
        self, argv: Sequence[str], uid: int | None = None, gid: int | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(argv, uid, gid), capture_output=True, text=True, timeout=timeout, cwd=CWD, check=False
        )

    def start(
        self, argv: Sequence[str], uid: int | None = None, gid: int | None = None, ready: str | None = None
    ) -> subprocess.Popen[str]:
        """Start a long-running process; with `ready`, wait until a stdout line contains it."""
        proc = subprocess.Popen(
            self.argv(argv, uid, gid), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=CWD
        )
        self.procs.append(proc)
        if ready:
            wait_for_line(proc, proc.stdout, ready)
        return proc

    def diag(self, ports: Sequence[int], name: str, uid: int | None = None) -> subprocess.Popen[str]:
        argv = [PY, "-m", "minimesh.init.diag", "--ports", ",".join(map(str, ports)), "--name", name]
        return self.start(argv, uid=uid, ready='"listening"')

    def probe(
        self,
        target: str,
        uid: int | None = None,
        gid: int | None = None,
        bind: str | None = None,
        http: bool = False,
    ) -> dict:
        argv = [PY, "-m", "minimesh.init.diag", "probe", target, "--timeout", "5"]
        if bind:
            argv += ["--bind", bind]
        if http:
            argv.append("--http")
        done = self.run(argv, uid, gid)
        assert done.stdout.strip(), f"probe {target} printed nothing; stderr: {done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.procs.clear()


def wait_for_line(proc: subprocess.Popen[str], stream, needle: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        if proc.poll() is not None and not select.select([stream], [], [], 0)[0]:
            break
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            line = stream.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line
    err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
    raise AssertionError(f"process {proc.args} never printed {needle!r}; output: {''.join(seen)!r} {err!r}")


def unique_name(prefix: str) -> str:
    return f"mmtest-{prefix}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def netns(prefix: str) -> Iterator[Netns]:
    ns = Netns(unique_name(prefix))
    _sh(["ip", "netns", "add", ns.name])
    try:
        _sh(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        yield ns
    finally:
        ns.stop_all()
        _sh(["ip", "netns", "del", ns.name], check=False)


@contextlib.contextmanager
def netns_pair(prefix: str) -> Iterator[tuple[Netns, Netns]]:
    with netns(prefix + "-a") as a, netns(prefix + "-b") as b:
        # Created inside `a` and moved to `b`: no interface name ever exists in the host namespace.
        _sh(
            [
                "ip",
                "-n",
                a.name,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                b.name,
            ]
        )
        for ns, ip in ((a, A_IP), (b, B_IP)):
            _sh(["ip", "-n", ns.name, "addr", "add", f"{ip}/{PREFIX}", "dev", "eth0"])
            _sh(["ip", "-n", ns.name, "link", "set", "eth0", "up"])
        yield a, b


def need_root() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "setpriv", "iptables-nft-restore"):
        if _sh(["sh", "-c", f"command -v {tool}"], check=False).returncode != 0:
            return f"needs {tool}"
    return None
