"""Pod IP allocation for the node's pod CIDR, like CNI's host-local plugin.

State is one JSON file guarded by a file lock, so a restarted node (or a cleanup run) sees the same
allocations. Addresses are handed out round-robin after the last one allocated, so a just-released
address is not reused at once; an address stays allocated until its pod's netns is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

from minimesh.cluster.local.layout import NODE_POD_CIDR


class IpamError(RuntimeError):
    pass


class Ipam:
    def __init__(self, state_dir: Path, cidr: str = NODE_POD_CIDR):
        self.path = state_dir / "ipam.json"
        self.lock_path = state_dir / "ipam.lock"
        net = ipaddress.IPv4Network(cidr)
        hosts = list(net.hosts())
        self.pool = [str(ip) for ip in hosts[1:]]  # .1 is the gateway (on the node)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                state = {"last": "", "allocations": {}}
            yield state
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            tmp.replace(self.path)

    def allocate(self, owner: str) -> str:
        """The owner's address (the same one again if it already has one)."""
        with self._locked() as state:
            allocs: dict[str, str] = state["allocations"]
            for ip, who in allocs.items():
                if who == owner:
                    return ip
            start = self.pool.index(state["last"]) + 1 if state["last"] in self.pool else 0
            for i in range(len(self.pool)):
                ip = self.pool[(start + i) % len(self.pool)]
                if ip not in allocs:
                    allocs[ip] = owner
                    state["last"] = ip
                    return ip
        raise IpamError(f"no free pod IP left in {NODE_POD_CIDR} ({len(self.pool)} in use)")

    def release(self, owner: str) -> None:
        with self._locked() as state:
            state["allocations"] = {ip: who for ip, who in state["allocations"].items() if who != owner}

    def allocations(self) -> dict[str, str]:
        with self._locked() as state:
            return dict(state["allocations"])
