"""Run the sample apps as real processes on loopback (port 0: the kernel picks free ports)."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

LISTEN_RE = re.compile(r"listening on (\S+?):(\d+)")


@dataclass
class App:
    proc: subprocess.Popen[str]
    host: str
    port: int
    lines: list[str] = field(default_factory=list)  # stdout, collected by a reader thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_for_line(self, needle: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"want a stdout line with {needle!r}; got {self.lines[-10:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.proc.args} did not exit within {timeout}s of signal {sig}") from None


def spawn(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 15.0) -> App:
    """Start `python -m module args`, wait for its 'listening on host:port' line."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=full_env, cwd="/",
    )
    lines: list[str] = []
    first: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            first.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = first.get(timeout=0.1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        m = LISTEN_RE.search(line)
        if m:
            return App(proc, m[1], int(m[2]), lines)
    proc.kill()
    proc.wait()
    raise AssertionError(f"{module} {args} did not start: {lines[-10:]}")


def _starter() -> Iterator:  # type: ignore[type-arg]
    started: list[App] = []

    def _start(module: str, *args: str, env: dict[str, str] | None = None) -> App:
        app = spawn(module, *args, env=env)
        started.append(app)
        return app

    yield _start
    for app in started:  # stopped even when the test failed
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait()


@pytest.fixture
def start() -> Iterator:  # type: ignore[type-arg]
    """start(module, *args, env=...) -> App; every process is gone after the test."""
    yield from _starter()


@pytest.fixture(scope="module")
def start_shared() -> Iterator:  # type: ignore[type-arg]
    """Like `start`, for processes a whole test module shares."""
    yield from _starter()


class StubUpstream:
    """A loopback HTTP/1.1 server answering every request with one fixed response (or never)."""

    def __init__(self, status: int = 200, body: bytes = b"{}", *, silent: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.response = (
            f"HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode() + body
        self.silent = silent
        self.requests: list[bytes] = []
        self.conns: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            try:
                conn.settimeout(5)
                data = conn.recv(65536)
                self.requests.append(data)
                if not self.silent:
                    conn.sendall(self.response)
                    conn.close()
            except OSError:
                conn.close()

    def close(self) -> None:
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def stub() -> Iterator[type[StubUpstream]]:
    made: list[StubUpstream] = []

    class _Tracked(StubUpstream):
        def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*a, **kw)
            made.append(self)

    yield _Tracked
    for s in made:
        s.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()
