"""Helpers for the agent tests: a throwaway network namespace is "the pod". The agent (and its proxy),
the real push server fed from stdin (pilot_driver.py) and apps run inside it, so the fixed ports
(15000/15001/15006/15010/15020/15021) never collide with anything else. Everything started is stopped and
the namespace removed, even on failure (see the `pod` fixture in conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PY = sys.executable
HERE = Path(__file__).resolve().parent
POD_IP = "10.250.7.2"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


class Proc:
    def __init__(self, popen: subprocess.Popen[str], log: Path) -> None:
        self.popen, self.log = popen, log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, needle: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.popen.args[:6]} never printed {needle!r}:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        if self.popen.stdin:
            self.popen.stdin.close()


class Pilot:
    """pilot_driver.py: the real DiscoveryServer on 127.0.0.1:15010 (ADS) and :15014 (debug) in the pod."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.count = 0

    def send(self, *msgs: dict[str, Any]) -> None:
        assert self.proc.popen.stdin is not None
        for m in msgs:
            self.proc.popen.stdin.write(json.dumps(m) + "\n")
            self.count += 1
        self.proc.popen.stdin.flush()
        self.proc.wait_for(f"ok {self.count}\n")

    def apply(self, kind: str, obj: dict[str, Any], event: str = "ADDED") -> None:
        self.send({"op": "apply", "kind": kind, "event": event, "obj": obj}, {"op": "push"})


class Pod:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name, self.tmp = name, tmp
        self.procs: list[Proc] = []

    def start(self, argv: list[str], *, env: dict[str, str] | None = None, uid: int | None = None,
              stdin: bool = False, name: str = "proc") -> Proc:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        prefix = ["ip", "netns", "exec", self.name]
        if uid is not None:
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        with open(log, "w") as out:
            popen = subprocess.Popen([*prefix, *argv], stdout=out, stderr=subprocess.STDOUT, cwd="/", text=True,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})
        proc = Proc(popen, log)
        self.procs.append(proc)
        return proc

    def pilot(self) -> Pilot:
        proc = self.start([PY, str(HERE / "pilot_driver.py"), "--grpc-port", "15010", "--http-port", "15014"],
                          stdin=True, name="pilot")
        proc.wait_for("ready ")
        return Pilot(proc)

    def agent(self, *extra: str, env: dict[str, str] | None = None, uid: int | None = 1337) -> Proc:
        config = self.tmp / f"proxy-{len(self.procs)}"
        config.mkdir()
        os.chown(config, 1337, 1337)
        podinfo = self.tmp / "podinfo"
        podinfo.mkdir(exist_ok=True)
        (podinfo / "labels").write_text('app="sleep"\npod-template-hash="5d8b"\n')
        base = {"POD_NAME": "sleep-5d8b-x1", "POD_NAMESPACE": "default", "INSTANCE_IP": POD_IP,
                "SERVICE_ACCOUNT": "sleep", "MESH_APP_CONTAINERS": "sleep"}
        return self.start([PY, "-m", "minimesh.agent", "proxy", "sidecar", "--discovery-address", "127.0.0.1:15010",
                           "--config-path", str(config), "--podinfo-path", str(podinfo), *extra],
                          env={**base, **(env or {})}, uid=uid, name="agent")

    def curl(self, url: str, *args: str) -> tuple[int, str]:
        r = sh("ip", "netns", "exec", self.name, "curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", *args, url,
               check=False)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def eventually(check: Any, timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except AssertionError as e:
            last = e
        else:
            if result is not False:
                return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last}")
