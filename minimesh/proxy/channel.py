"""A byte channel over one TCP connection: an asyncio Protocol with an awaitable read side.

Cheaper than StreamReader/StreamWriter on the hot path and with exactly the flow control the proxy needs:
reading pauses when more than HIGH_WATER bytes wait unread, `drain()` waits while the kernel buffer of
the other side is full. Bytes can be pushed back with `unread` (listener filters peek at the first bytes).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class Channel(asyncio.Protocol):
    __slots__ = ("_buf", "_closed", "_drain_waiter", "_eof", "_loop", "_paused", "_size", "_waiter",
                 "_write_paused", "bytes_read", "bytes_written", "closed", "on_eof", "transport")

    def __init__(self) -> None:
        self._buf: list[bytes] = []
        self._size = 0
        self._eof = False
        self._closed = False
        self._paused = False
        self._write_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.on_eof: Callable[[], None] | None = None  # called once when the peer closes or resets
        self.bytes_read = 0
        self.bytes_written = 0
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf.append(data)
        self._size += len(data)
        self.bytes_read += len(data)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        if self._size > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        self._notify_eof()
        # keep the write side open: the owner decides (tcp_proxy half-closes, HTTP closes); TLS has no
        # half-close (asyncio would log a warning for True on an SSL transport)
        t = self.transport
        return t is None or t.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._closed = True
        self._wake()
        d = self._drain_waiter
        if d is not None and not d.done():
            d.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)
        self._notify_eof()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        d = self._drain_waiter
        if d is not None:
            self._drain_waiter = None
            if not d.done():
                d.set_result(None)

    # reading ------------------------------------------------------------------------------------
    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _notify_eof(self) -> None:
        cb = self.on_eof
        if cb is not None:
            self.on_eof = None
            cb()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf

    @property
    def buffered(self) -> int:
        return self._size

    async def read(self) -> bytes:
        """All bytes received so far (waiting for some); b"" once the peer closed and all was read."""
        if not self._buf:
            if self._eof:
                return b""
            self._waiter = self._loop.create_future()
            await self._waiter
            if not self._buf:
                return b""
        buf = self._buf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        self._buf = []
        self._size = 0
        if self._paused and self.transport is not None and not self._closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def unread(self, data: bytes) -> None:
        """Put bytes back in front (after peeking)."""
        if data:
            self._buf.insert(0, data)
            self._size += len(data)

    async def peek(self, n: int) -> bytes:
        """Wait until at least `n` bytes (or EOF) are buffered; return them without consuming."""
        while self._size < n and not self._eof:
            self._waiter = self._loop.create_future()
            await self._waiter
        data = b"".join(self._buf)
        self._buf = [data] if data else []
        return data

    # writing ------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self._closed:
            self.bytes_written += len(data)
            t.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        t = self.transport
        if t is not None and not self._closed:
            for p in parts:
                self.bytes_written += len(p)
            t.writelines(parts)

    @property
    def must_drain(self) -> bool:
        return self._write_paused and not self._closed

    async def drain(self) -> None:
        if self._write_paused and not self._closed:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    def write_eof(self) -> None:
        t = self.transport
        if t is not None and not self._closed and t.can_write_eof():
            t.write_eof()

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()

    def abort(self) -> None:
        t = self.transport
        if t is not None:
            t.abort()

    # addresses ----------------------------------------------------------------------------------
    def extra(self, name: str, default: Any = None) -> Any:
        t = self.transport
        return t.get_extra_info(name, default) if t is not None else default

    def sock(self) -> socket.socket | None:
        return self.extra("socket")
