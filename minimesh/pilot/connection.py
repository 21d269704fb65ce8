"""One connected proxy: its ADS bookkeeping, its push queue and what it was sent."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

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


class Connection:
    """Requests and pushes go through one queue per connection and are handled by one task, so a slow
    proxy only ever delays itself, and a burst of pushes to a busy proxy merges into one."""

    def __init__(self, conn_id: str, proxy: Proxy, peer: str) -> None:
        self.id = conn_id
        self.proxy = proxy
        self.peer = peer
        self.connected_at = time.time()
        self.watched: dict[str, WatchedResource] = {}
        self.subscribed_with: dict[str, tuple[str, str]] = {}  # type -> (version, nonce) the proxy said it held
        self.requests: deque[discovery_pb2.DiscoveryRequest] = deque()
        self.pending_push: PushRequest | None = None
        self.wake = asyncio.Event()
        self.closed = False
        self.sent: dict[str, dict[str, Resource]] = {}  # type -> name -> resource, as the proxy should hold it
        self.last_ctx: PushContext | None = None  # the snapshot of the latest push to this proxy
        self.convergence: Convergence | None = None
        self.pushes = 0

    def enqueue_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        self.requests.append(request)
        self.wake.set()

    def enqueue_push(self, request: PushRequest) -> None:
        self.pending_push = request if self.pending_push is None else self.pending_push.merge(request)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()
