"""A diagnostic listener that says where captured traffic really lands (used by stage 2's graders).

    python -m minimesh.init.diag [--ports 15001,15006] [--extra-ports 9080] [--name pod-a]
    python -m minimesh.init.diag probe 10.96.0.12:9080 [--bind 127.0.0.6] [--http]

`serve` (the default) listens on the capture ports (and extra ports). For every accepted TCP
connection it reads the original destination with getsockopt(SOL_IP, SO_ORIGINAL_DST) (the address
the client dialled before the nat table's REDIRECT rewrote it) and answers with one JSON line::

    {"listener": 15001, "original_dst": "10.96.0.12:9080", "peer": "10.244.0.5:43210", ...}

HTTP clients (curl) get `200 OK` with that JSON as the body. Any other client gets the line at once
after sending something that is not HTTP (e.g. "probe\\n"), or after --sniff-timeout if it sends
nothing. Every answer is also logged to stdout, one JSON object per line.

`probe` connects (optionally from a given source address), prints the server's JSON line and exits 0,
or prints {"error": ...} and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any

import h11

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
DEFAULT_PORTS = (15001, 15006)
MAX_HEAD = 64 * 1024
_HTTP_START = re.compile(rb"^[A-Z]{3,10} \S")


# ---- pure helpers ------------------------------------------------------------------------------


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """(ip, port) from a struct sockaddr_in (family: host order, port: network order)."""
    if len(raw) < 8:
        raise ValueError(f"sockaddr_in too short: {len(raw)} bytes")
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


def hostport(addr: tuple[Any, ...] | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else "?"


def looks_like_http(first: bytes) -> bool:
    """The first bytes start an HTTP/1 request (a method token and a space)."""
    return bool(_HTTP_START.match(first))


def answer(
    listener: int,
    original_dst: str,
    source: str,
    peer: str,
    local: str,
    name: str | None,
    request: dict[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "listener": listener,
        "original_dst": original_dst,
        "original_dst_from": source,
        "peer": peer,
        "local": local,
    }
    if name:
        out["name"] = name
    if request:
        out["request"] = request
    return out


# ---- server ------------------------------------------------------------------------------------


def original_dst(sock: socket.socket) -> tuple[str, str]:
    """(ip:port, where it came from): SO_ORIGINAL_DST, or the local address when not NATed."""
    try:
        ip, port = parse_sockaddr_in(sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
        return f"{ip}:{port}", "SO_ORIGINAL_DST"
    except OSError:
        return hostport(sock.getsockname()), "local address"


async def _read_http_request(reader: asyncio.StreamReader, first: bytes) -> h11.Request | None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(first)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if isinstance(event, h11.Request):
            return event
        if event is h11.NEED_DATA:
            data = await reader.read(4096)
            conn.receive_data(data)
            if not data:
                return None
        else:
            return None


def _http_response(body: bytes) -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # put h11 in the state to answer
    conn.next_event()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
        ("server", "minimesh-diag"),
    ]
    return b"".join(
        [
            conn.send(h11.Response(status_code=200, headers=headers)) or b"",
            conn.send(h11.Data(data=body)) or b"",
            conn.send(h11.EndOfMessage()) or b"",
        ]
    )


class DiagServer:
    def __init__(
        self, ports: Sequence[int], host: str = "0.0.0.0", name: str | None = None, sniff: float = 0.3
    ):
        self.ports, self.host, self.name, self.sniff = list(ports), host, name, sniff
        self.servers: list[asyncio.Server] = []

    async def start(self) -> None:
        for port in self.ports:
            self.servers.append(await asyncio.start_server(self._handle, self.host, port, reuse_address=True))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        listener = sock.getsockname()[1]  # the port this connection was accepted on
        dst, source = original_dst(sock)
        peer, local = hostport(writer.get_extra_info("peername")), hostport(writer.get_extra_info("sockname"))
        try:
            try:
                first = await asyncio.wait_for(reader.read(4096), self.sniff)
            except TimeoutError:
                first = b""
            request = None
            if first and looks_like_http(first):
                request = await asyncio.wait_for(_read_http_request(reader, first), 10)
            info = None
            if request is not None:
                host = next((v.decode() for k, v in request.headers if k == b"host"), "")
                info = {"method": request.method.decode(), "path": request.target.decode(), "host": host}
            reply = answer(listener, dst, source, peer, local, self.name, info)
            line = json.dumps(reply, sort_keys=True)
            print(line, flush=True)
            body = (line + "\n").encode()
            writer.write(_http_response(body) if request is not None else body)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            print(
                json.dumps({"listener": listener, "peer": peer, "error": str(e) or type(e).__name__}),
                flush=True,
            )
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def serve_forever(self) -> None:
        await self.start()
        print(
            json.dumps({"event": "listening", "host": self.host, "ports": self.ports, "name": self.name}),
            flush=True,
        )
        await asyncio.gather(*(s.serve_forever() for s in self.servers))


# ---- probe -------------------------------------------------------------------------------------


def probe(target: str, bind: str | None = None, timeout: float = 5.0, http: bool = False) -> dict[str, Any]:
    """Connect to host:port and return the diag server's answer (raises OSError/ValueError)."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"target {target!r}: want HOST:PORT")
    with socket.create_connection(
        (host, int(port)), timeout=timeout, source_address=(bind, 0) if bind else None
    ) as s:
        if http:
            s.sendall(f"GET /diag HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
        else:
            s.sendall(b"probe\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    text = data.decode(errors="replace")
    if http:
        head, _, text = text.partition("\r\n\r\n")
        if not head.startswith("HTTP/1.1 200"):
            raise ValueError(f"unexpected HTTP answer: {head.splitlines()[0] if head else '(nothing)'}")
    line = text.strip().splitlines()[0] if text.strip() else ""
    if not line:
        raise ValueError("the server closed the connection without an answer")
    return json.loads(line)


# ---- CLI ---------------------------------------------------------------------------------------


def _port_list(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ports") from None
    if not all(1 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"{text!r}: ports are 1-65535")
    return ports


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "probe":
        ap = argparse.ArgumentParser(prog="python -m minimesh.init.diag probe")
        ap.add_argument("target", help="HOST:PORT")
        ap.add_argument("--bind", help="source address (e.g. 127.0.0.6)")
        ap.add_argument("--timeout", type=float, default=5.0)
        ap.add_argument("--http", action="store_true", help="ask with an HTTP GET instead of a raw line")
        a = ap.parse_args(argv[1:])
        try:
            print(json.dumps(probe(a.target, a.bind, a.timeout, a.http), sort_keys=True), flush=True)
            return 0
        except (OSError, ValueError) as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}", "target": a.target}), flush=True)
            return 1
    if argv and argv[0] == "serve":
        argv = argv[1:]
    ap = argparse.ArgumentParser(prog="python -m minimesh.init.diag", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--ports", type=_port_list, default=list(DEFAULT_PORTS), help="capture ports (15001,15006)"
    )
    ap.add_argument("--extra-ports", type=_port_list, default=[], help="more ports to listen on")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--name", help="a label included in every answer")
    ap.add_argument("--sniff-timeout", type=float, default=0.3, help="seconds to wait for an HTTP request")
    a = ap.parse_args(argv)
    server = DiagServer([*a.ports, *a.extra_ports], a.host, a.name, a.sniff_timeout)
    try:
        asyncio.run(server.serve_forever())
    except OSError as e:
        print(json.dumps({"event": "error", "error": str(e)}), flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
