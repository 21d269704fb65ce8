"""Shared pieces for the proxy tests: tiny upstream servers, bootstrap builders, a running proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from minimesh.proxy.config import parse_bootstrap
from minimesh.proxy.server import Proxy

LOOPBACK = "127.0.0.1"


def addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def static_cluster(name: str, ports: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": addr(LOOPBACK, p)}} for p in ports]}]}, **extra}


def hcm(route_config: dict[str, Any] | None = None, *, rds: str | None = None, stat_prefix: str = "ingress",
        http_filters: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"stat_prefix": stat_prefix, **extra}
    if rds:
        cfg["rds"] = {"route_config_name": rds}
    else:
        cfg["route_config"] = route_config
    cfg["http_filters"] = [*(http_filters or []), {"name": "envoy.filters.http.router"}]
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg}


def route_config(routes: list[dict[str, Any]], domains: tuple[str, ...] = ("*",), name: str = "local",
                 **vh: Any) -> dict[str, Any]:
    return {"name": name, "virtual_hosts": [{"name": "vh", "domains": list(domains), "routes": routes, **vh}]}


def http_listener(name: str, network_filter: dict[str, Any], port: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": addr(LOOPBACK, port), "filter_chains": [{"filters": [network_filter]}], **extra}


def bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"node": {"id": "test", "cluster": "test"}, "admin": {"address": addr(LOOPBACK, 0)},
            "static_resources": {"listeners": listeners, "clusters": clusters},
            "minimesh": {"access_log_path": "", "drain_time": "1s", **extra.pop("minimesh", {})}, **extra}


@contextlib.asynccontextmanager
async def running_proxy(boot: dict[str, Any]) -> AsyncIterator[Proxy]:
    proxy = Proxy(parse_bootstrap(boot))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


# upstreams -------------------------------------------------------------------------------------------
class Upstream:
    """An aiohttp server: GET/POST anything echoes JSON; ?status=, ?delay=, ?size= shape the answer."""

    def __init__(self, name: str = "up") -> None:
        self.name = name
        self.requests = 0
        self.peers: set[tuple[str, int]] = set()
        self.seen_headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.status_sequence: list[int] = []  # statuses to answer first, in order

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add((peer[0], peer[1]))
        self.seen_headers.append({k.lower(): v for k, v in request.headers.items()})
        body = await request.read()
        q = request.query
        if "delay" in q:
            await asyncio.sleep(float(q["delay"]))
        status = self.status_sequence.pop(0) if self.status_sequence else int(q.get("status", "200"))
        if "size" in q:
            if q.get("stream"):
                resp = web.StreamResponse(status=status)
                resp.enable_chunked_encoding()
                await resp.prepare(request)
                n = int(q["size"])
                while n > 0:
                    part = min(n, 4096)
                    await resp.write(b"x" * part)
                    n -= part
                await resp.write_eof()
                return resp
            return web.Response(status=status, body=b"x" * int(q["size"]))
        payload = {"upstream": self.name, "method": request.method, "path": request.path_qs,
                   "headers": {k.lower(): v for k, v in request.headers.items()}, "body": body.decode("latin-1"), "peer": list(peer or ())}
        return web.Response(status=status, text=json.dumps(payload), content_type="application/json")

    async def start(self) -> Upstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, LOOPBACK, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@contextlib.asynccontextmanager
async def upstreams(*names: str) -> AsyncIterator[list[Upstream]]:
    ups = [await Upstream(n).start() for n in names]
    try:
        yield ups
    finally:
        for u in ups:
            await u.stop()


@contextlib.asynccontextmanager
async def raw_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[int]:
    """A TCP server with a hand-written handler (garbage answers, early closes)."""

    async def wrapped(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(wrapped, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_request(r: asyncio.StreamReader) -> bytes:
    """Read one request head (and a content-length body) from a raw connection."""
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        head += await r.readexactly(length)
    return head


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 5.0, close_after: bool = False) -> bytes:
    """Send bytes, read until the server closes (or the timeout)."""
    r, w = await asyncio.open_connection(LOOPBACK, port)
    w.write(data)
    await w.drain()
    if close_after:
        w.write_eof()
    out = b""
    try:
        async with asyncio.timeout(read_timeout):
            while True:
                chunk = await r.read(65536)
                if not chunk:
                    break
                out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    w.close()
    return out


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0
