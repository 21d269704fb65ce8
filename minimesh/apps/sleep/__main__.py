"""python -m minimesh.apps.sleep: wait until SIGTERM/SIGINT, then exit 0 at once.

As PID 1 in a container a process gets no default SIGTERM action, so `sleep infinity` would make every
pod deletion wait out the grace period; handling the signal makes deletion prompt.
"""

from __future__ import annotations

import signal
import sys
import threading


def main() -> int:
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    print("sleep: waiting for SIGTERM", flush=True)
    while not stop.wait(3600):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
