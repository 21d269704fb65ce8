"""Run tcpdump inside a network namespace and hand back the pcap (a context manager).

    with tcpdump("/tmp/x.pcap", netns="mm-demo_p1", bpf_filter="tcp port 9080") as cap:
        ...make traffic...
    report = analyse_pcap(cap.path)

`ip netns exec NS tcpdump -i any -U --immediate-mode -w FILE <filter>`: `-U` writes every packet to the
file as it arrives, `--immediate-mode` hands packets over without buffering; `-Z root` keeps tcpdump from
switching to its own user, which could not write into a private directory. `start` returns only after
tcpdump printed "listening on" (before that, packets are missed). `stop` first waits until the file
stops growing (packets still in the kernel ring would be counted as "dropped by kernel" by an early
SIGINT), then sends SIGINT so tcpdump flushes and exits cleanly.

On kind/minikube the capture runs in a host-network capture pod instead (see clusters/).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class CaptureError(RuntimeError):
    """tcpdump could not start or did not stop; the message carries its stderr."""


def tcpdump_argv(
    path: str | Path,
    netns: str | None = None,
    interface: str = "any",
    bpf_filter: str | Sequence[str] = "",
    snaplen: int = 0,
) -> list[str]:
    """The command line (pure)."""
    flt = bpf_filter if isinstance(bpf_filter, str) else " ".join(bpf_filter)
    argv = [
        "tcpdump",
        "-Z",
        "root",
        "-i",
        interface,
        "-U",
        "--immediate-mode",
        "-n",
        "-s",
        str(snaplen),
        "-w",
        str(path),
    ]
    if flt.strip():
        argv.append(flt)
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


_STATS = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)")


@dataclass
class Capture:
    path: Path
    argv: list[str]
    proc: subprocess.Popen[str]
    stderr_lines: list[str] = field(default_factory=list)
    listening: bool = False
    _listening: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def _read_stderr(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self.listening = True
                self._listening.set()
        self._listening.set()  # EOF: unblock start(), which then sees that tcpdump never listened

    @property
    def stats(self) -> dict[str, int]:
        """tcpdump's closing counters (after stop): captured, received by filter, dropped by kernel."""
        out = {}
        for line in self.stderr_lines:
            m = _STATS.match(line)
            if m:
                out[m.group(2).replace(" ", "_")] = int(m.group(1))
        return out

    def stop(self, settle: float = 0.3, max_wait: float = 5.0, timeout: float = 10.0) -> Path:
        """Let in-flight packets land in the file, stop tcpdump with SIGINT, return the pcap's path."""
        if self.proc.poll() is None:
            deadline, last, stable_since = time.monotonic() + max_wait, -1, time.monotonic()
            while time.monotonic() < deadline:
                size = self.path.stat().st_size if self.path.exists() else 0
                now = time.monotonic()
                if size != last:
                    last, stable_since = size, now
                elif now - stable_since >= settle:
                    break
                time.sleep(0.05)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise CaptureError(f"tcpdump did not stop within {timeout}s after SIGINT") from None
        if self._reader:
            self._reader.join(5)
        if self.proc.returncode not in (0, -signal.SIGINT):
            raise CaptureError(f"tcpdump exited with {self.proc.returncode}: {' | '.join(self.stderr_lines)}")
        return self.path


def start(
    path: str | Path,
    netns: str | None = None,
    interface: str = "any",
    bpf_filter: str | Sequence[str] = "",
    snaplen: int = 0,
    ready_timeout: float = 10.0,
) -> Capture:
    """Start capturing; returns once tcpdump listens (raises CaptureError if it cannot)."""
    if shutil.which("tcpdump") is None:
        raise CaptureError("tcpdump is not installed (apt-get install tcpdump)")
    path = Path(path)
    argv = tcpdump_argv(path, netns, interface, bpf_filter, snaplen)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    cap = Capture(path, argv, proc)
    cap._reader = threading.Thread(target=cap._read_stderr, name="tcpdump-stderr", daemon=True)
    cap._reader.start()
    cap._listening.wait(ready_timeout)
    if not cap.listening or proc.poll() is not None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        cap._reader.join(5)
        why = " | ".join(cap.stderr_lines) or "no output"
        raise CaptureError(f"tcpdump did not start listening ({' '.join(argv)}): {why}")
    return cap


@contextlib.contextmanager
def tcpdump(
    path: str | Path,
    netns: str | None = None,
    interface: str = "any",
    bpf_filter: str | Sequence[str] = "",
    snaplen: int = 0,
    ready_timeout: float = 10.0,
) -> Iterator[Capture]:
    """Capture while the block runs; tcpdump is stopped (and reaped) even if the block raises."""
    cap = start(path, netns, interface, bpf_filter, snaplen, ready_timeout)
    try:
        yield cap
    finally:
        try:
            cap.stop()
        finally:
            if cap.proc.poll() is None:  # stop() failed half-way: never leave tcpdump behind
                os.kill(cap.proc.pid, signal.SIGKILL)
                cap.proc.wait(5)
