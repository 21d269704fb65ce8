"""Sockets that live in another network namespace, usable from asyncio in this one.

The API server runs in the host namespace, but pod IPs are only routable inside the node's namespace
(webhooks behind Services) and `127.0.0.1:<port>` of a pod only exists in the pod's own namespace
(port-forward). Network namespaces are per thread, so a short-lived thread `setns()`es into the target,
creates the socket there and hands it back; the socket stays bound to that namespace for its life.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import socket
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(OSError):
    pass


def netns_path(name: str) -> Path:
    if "/" in name or name in ("", ".", ".."):
        raise NetnsError(f"invalid network namespace name {name!r}")
    return NETNS_DIR / name


def socket_in_netns(name: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
    """A new socket created inside the named network namespace (as `ip netns` names them)."""
    path = netns_path(name)
    result: dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            result["error"] = NetnsError(e.errno, f"cannot open network namespace {name!r}: {e.strerror}")
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                result["error"] = NetnsError(err, f"setns({name!r}) failed: {os.strerror(err)}")
                return
            result["sock"] = socket.socket(family, type)
        except OSError as e:
            result["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=work, name=f"netns-{name}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    sock = result["sock"]
    assert isinstance(sock, socket.socket)
    return sock


async def connect_in_netns(name: str | None, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connected, non-blocking TCP socket to host:port from inside `name` (None: this namespace)."""
    loop = asyncio.get_running_loop()
    if name is None:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    else:
        sock = await loop.run_in_executor(None, socket_in_netns, name,
                                          socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_connection(name: str | None, host: str, port: int, *, timeout: float = 10.0,
                          **kw: object) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over `connect_in_netns` (pass ssl=/server_hostname= for TLS)."""
    sock = await connect_in_netns(name, host, port, timeout)
    try:
        return await asyncio.wait_for(asyncio.open_connection(sock=sock, **kw), timeout)  # type: ignore[arg-type]
    except BaseException:
        sock.close()
        raise
