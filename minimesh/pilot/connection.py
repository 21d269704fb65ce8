"""One connected proxy: its ADS bookkeeping, its push queue and what it was sent."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from minimesh.pilot.ads import WatchedResource
from minimesh.pilot.cache import Resource
from minimesh.pilot.context import PushContext
from minimesh.pilot.model import Proxy
from minimesh.pilot.push import PushRequest


@dataclass
class Convergence:
    """A push on its way to a proxy: when the change was seen, which responses still await an ACK."""

    start: float
    nonces: set[str] = field(default_factory=set)
    writing: bool = True  # responses of this push are still being written: not complete yet
    sent: int = 0  # responses written for this push


class Connection:
    """Responses and pushes to a proxy are written by one task per connection, so a slow proxy only
    ever delays itself, and a burst of pushes to a busy proxy merges into one."""

    def __init__(self, conn_id: str, proxy: Proxy, peer: str) -> None:
        self.id = conn_id
        self.proxy = proxy
        self.peer = peer
        self.connected_at = time.time()
        self.watched: dict[str, WatchedResource] = {}
        self.subscribed_with: dict[str, tuple[str, str]] = {}  # type -> (version, nonce) the proxy said it held
        self.responses: deque[str] = deque()  # types the proxy asked for and is waiting for
        self.pending_push: PushRequest | None = None
        self.wake = asyncio.Event()
        self.closed = False
        # type -> (the last complete response's resources, name -> resource of incremental updates since)
        self.sent: dict[str, tuple[tuple[Resource, ...], dict[str, Resource]]] = {}
        self.last_ctx: PushContext | None = None  # the snapshot of the latest push to this proxy
        self.convergence: Convergence | None = None
        self.pushes = 0

    def respond(self, type_url: str) -> None:
        if type_url not in self.responses:
            self.responses.append(type_url)
        self.wake.set()

    def enqueue_push(self, request: PushRequest) -> None:
        self.pending_push = request if self.pending_push is None else self.pending_push.merge(request)
        self.wake.set()

    def holds(self, type_url: str) -> list[Resource]:
        """What the proxy should hold of `type_url` after everything sent so far (for config_dump)."""
        full, updates = self.sent.get(type_url, ((), {}))
        merged = {r.name: r for r in full}
        merged.update(updates)
        return list(merged.values())

    def close(self) -> None:
        self.closed = True
        self.wake.set()
