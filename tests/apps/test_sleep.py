"""The sleep client's main process stays up, then exits at once on SIGTERM (PID 1 in its pod)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_sleep_waits_then_stops_promptly(sig: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "minimesh.apps.sleep"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout and "waiting for SIGTERM" in proc.stdout.readline()
        time.sleep(0.3)
        assert proc.poll() is None  # it does not exit on its own
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
