"""The echo server's I/O: an asyncio protocol around httptools' C parser (no framework overhead).

HTTP/1.1 keep-alive and pipelining (answers leave in request order, delayed ones included), chunked and
content-length bodies (counted, not kept), `Expect: 100-continue`, a header-size limit (431), and a
clean 400 for bytes that are not HTTP.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from minimesh.apps.echo.reply import EchoRequest, Identity, error_response, plan, response_bytes

MAX_HEADER_BYTES = 64 * 1024
MAX_QUEUED = 64  # pipelined requests held before we stop reading from the client


def _addr(sockname: object) -> str:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return f"{sockname[0]}:{sockname[1]}"
    return "-"


@dataclass
class _Queued:
    data: bytes
    delay: float
    keep_alive: bool
    waited: bool = False


class EchoProtocol(asyncio.Protocol):
    def __init__(self, me: Identity, log: Callable[[str], None] | None) -> None:
        self.me = me
        self.log = log
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[_Queued] = deque()
        self.waiting = False
        self.paused = False
        self.closing = False
        self.peer = self.local = "-"
        self._reset()

    def _reset(self) -> None:
        self.url = bytearray()
        self.headers: list[tuple[str, str]] = []
        self.header_bytes = 0
        self.body_bytes = 0
        self.started = time.perf_counter()

    # ---- asyncio ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.peer = _addr(transport.get_extra_info("peername"))
        self.local = _addr(transport.get_extra_info("sockname"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported by the echo server")
        except httptools.HttpParserError as e:
            if not self.closing:
                self._fail(400, f"malformed HTTP request: {e}")

    # ---- httptools callbacks -------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))
        self._count(len(name) + len(value))

    def on_headers_complete(self) -> None:
        if self.transport and any(
            n.lower() == "expect" and v.lower() == "100-continue" for n, v in self.headers
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        req = EchoRequest(
            method=self.parser.get_method().decode("latin-1"),
            target=self.url.decode("latin-1"),
            http_version=self.parser.get_http_version(),
            headers=self.headers,
            body_bytes=self.body_bytes,
            peer=self.peer,
            local=self.local,
        )
        keep_alive = bool(self.parser.should_keep_alive())
        p = plan(req, self.me)
        data = response_bytes(p, self.me, keep_alive=keep_alive, head_only=req.method == "HEAD")
        if self.log:
            self.log(
                f'{self.peer} "{req.method} {req.target} HTTP/{req.http_version}" {p.status} {len(p.body)} '
                f"{(time.perf_counter() - self.started) * 1000:.2f}ms"
            )
        self.queue.append(_Queued(data, p.delay, keep_alive))
        if len(self.queue) > MAX_QUEUED and self.transport and not self.paused:
            self.transport.pause_reading()
            self.paused = True
        if not self.waiting:
            self._flush()

    # ---- answering in order ---------------------------------------------------------------------------
    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_HEADER_BYTES:
            self._fail(431, f"request head larger than {MAX_HEADER_BYTES} bytes")
            raise httptools.HttpParserError("header limit")  # stop this feed_data call

    def _flush(self) -> None:
        while self.queue and not self.closing and self.transport:
            item = self.queue[0]
            if item.delay > 0 and not item.waited:
                item.waited = True
                self.waiting = True
                asyncio.get_running_loop().call_later(item.delay, self._delay_done)
                return
            self.queue.popleft()
            self.transport.write(item.data)
            if not item.keep_alive:
                self.closing = True
                self.transport.close()
                return
        if self.paused and self.transport and len(self.queue) <= MAX_QUEUED // 2:
            self.transport.resume_reading()
            self.paused = False

    def _delay_done(self) -> None:
        self.waiting = False
        self._flush()

    def _fail(self, status: int, message: str) -> None:
        if self.transport and not self.closing:
            self.closing = True
            self.queue.clear()
            self.transport.write(error_response(status, message))
            self.transport.close()


async def serve(
    me: Identity,
    host: str,
    ports: list[int],
    *,
    log: Callable[[str], None] | None = None,
    ready: Callable[[list[tuple[str, int]]], None] | None = None,
) -> None:
    """Listen on every port (0 = any free one) until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda: EchoProtocol(me, log), host, port, reuse_address=True, backlog=1024)
        for port in ports
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before announcing: a stop may follow at once
        loop.add_signal_handler(sig, stop.set)
    bound = [s.getsockname()[:2] for srv in servers for s in srv.sockets]
    print("echo listening on " + ", ".join(f"{h}:{p}" for h, p in bound), flush=True)
    if ready:
        ready(bound)
    try:
        await stop.wait()
    finally:
        for srv in servers:
            srv.close()
        for srv in servers:
            await srv.wait_closed()


def stdout_log(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
