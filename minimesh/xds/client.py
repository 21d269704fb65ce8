"""The ADS client the proxy runs: one stream to the push server, reconnecting forever.

    client = AdsClient("istiod.mesh-system.svc:15010", node, on_update)
    task = client.start()      # or: await client.run()

`on_update(type_url, version, resources)` gets the complete set of resources of that type as
Envoy-shaped dicts (what the proxy's config parser reads); it may be a coroutine function. Returning
means applied (→ ACK); raising (e.g. the proxy's ConfigError) means rejected (→ NACK with the error
text, and the proxy keeps its last good config). While the server is down nothing is delivered, so the
proxy keeps serving with what it has; after a reconnect the client re-subscribes with the versions it
last ACKed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from minimesh.xds import resources as xr
from minimesh.xds.backoff import Backoff
from minimesh.xds.framing import GrpcError
from minimesh.xds.state import AdsState, DiscoveryRequest, DiscoveryResponse, ResponseError, Update
from minimesh.xds.transport import GrpcStream

log = logging.getLogger(__name__)

ADS_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

OnUpdate = Callable[[str, str, list[Any]], "Awaitable[None] | None"]


def parse_address(server_addr: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port), with a clear error."""
    host, sep, port = server_addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"xDS server address {server_addr!r}: want host:port")
    return host.strip("[]"), int(port)


class AdsClient:
    """ADS over gRPC/h2. `decode`: "dict" (default), "message" (Envoy protobuf messages) or "none"
    (no conversion at all: `resources` is empty; for load generators that only ACK)."""

    def __init__(
        self,
        server_addr: str,
        node: dict[str, Any] | base_pb2.Node,
        on_update: OnUpdate,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        backoff: Backoff | None = None,
        decode: Literal["dict", "message", "none"] = "dict",
        connect_timeout: float = 5.0,
    ) -> None:
        self.host, self.port = parse_address(server_addr)
        if isinstance(node, dict):
            node = json_format.ParseDict(node, base_pb2.Node())
        if not node.id:
            raise ValueError("xDS node: 'id' must be set (the push server identifies the proxy by it)")
        self.state = AdsState(node)
        self._on_update = on_update
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._backoff = backoff or Backoff()
        self._decode = decode
        self._connect_timeout = connect_timeout
        self._stream: GrpcStream | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []  # wait_until() callers, woken on every change
        self.connected = False
        self.connects = 0  # successful stream opens
        self.last_error: str | None = None  # why the last stream ended

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"ads:{self.state.node.id}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._stream is not None:
            await self._stream.close()

    async def run(self) -> None:
        """Connect, exchange, and on any failure back off and reconnect; until cancelled."""
        while True:
            try:
                await self._session()
            except (TimeoutError, GrpcError, OSError, DecodeError) as e:
                self.last_error = str(e) or type(e).__name__
                log.info("xds: stream to %s:%d ended: %s", self.host, self.port, self.last_error)
            except Exception as e:  # a bug or a protocol surprise must not end the proxy's config updates
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("xds: stream to %s:%d failed", self.host, self.port)
            finally:
                self.connected = False
                if self._stream is not None:
                    await self._stream.close()
                    self._stream = None
                self._notify()
            await asyncio.sleep(self._backoff.next_delay())

    async def wait_until(self, predicate: Callable[[AdsClient], bool], timeout: float) -> None:
        """Block until `predicate(self)` holds (checked after every response and reconnect)."""
        async def waiter() -> None:
            while not predicate(self):
                fut = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                try:
                    await fut
                finally:
                    if fut in self._waiters:
                        self._waiters.remove(fut)

        await asyncio.wait_for(waiter(), timeout)

    # ---- one stream --------------------------------------------------------------------------

    async def _session(self) -> None:
        self._stream = stream = await GrpcStream.open(
            self.host, self.port, ADS_PATH, ssl=self._ssl, server_hostname=self._server_hostname,
            connect_timeout=self._connect_timeout,
        )
        self.connected = True
        self.connects += 1
        await stream.send_many([r.SerializeToString() for r in self.state.connected()])
        self._notify()
        while True:
            # Handle every response that has arrived, then send all the ACKs/NACKs in one write.
            replies: list[DiscoveryRequest] = []
            payload: bytes | None = await stream.recv()
            while payload is not None:
                replies += await self._handle(DiscoveryResponse.FromString(payload))
                payload = stream.recv_nowait()
            self._backoff.reset()
            await stream.send_many([r.SerializeToString() for r in replies])
            self._notify()

    async def _handle(self, response: DiscoveryResponse) -> list[DiscoveryRequest]:
        try:
            update = self.state.receive(response)
        except ResponseError as e:
            log.warning("xds: rejecting %s version %s: %s", xr.short_name(response.type_url), response.version_info, e)
            return self.state.reject(response.type_url, response.nonce, str(e))
        try:
            await self._deliver(update)
        except Exception as e:  # whatever the proxy could not apply is a NACK, never a crash
            log.warning("xds: config %s version %s rejected: %s", xr.short_name(update.type_url), update.version, e)
            return self.state.reject(update.type_url, update.nonce, str(e) or type(e).__name__)
        return self.state.accept(update)

    async def _deliver(self, update: Update) -> None:
        items: list[Any]
        if self._decode == "dict":
            items = [xr.to_dict(m) for m in update.resources]
        elif self._decode == "message":
            items = list(update.resources)
        else:
            items = []
        result = self._on_update(update.type_url, update.version, items)
        if inspect.isawaitable(result):
            await result

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
