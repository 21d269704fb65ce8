"""The diagnostic listener on loopback (no capture rules here: the original destination is the listener)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import urllib.request

from minimesh.init.diag import DiagServer, looks_like_http, parse_sockaddr_in, probe


def test_parse_sockaddr_in() -> None:
    raw = (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", 9080)
        + socket.inet_aton("10.96.0.12")
        + bytes(8)
    )
    assert parse_sockaddr_in(raw) == ("10.96.0.12", 9080)


def test_looks_like_http() -> None:
    assert looks_like_http(b"GET / HTTP/1.1\r\n")
    assert looks_like_http(b"DELETE /x")
    assert not looks_like_http(b"probe\n")
    assert not looks_like_http(b"\x16\x03\x01\x02\x00")


async def _serve_and_ask() -> tuple[dict, dict, dict]:
    server = DiagServer([0], host="127.0.0.1", name="loop", sniff=5.0)
    await server.start()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        raw = await asyncio.to_thread(probe, f"127.0.0.1:{port}")
        http = await asyncio.to_thread(probe, f"127.0.0.1:{port}", None, 5.0, True)

        def curl_like() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/some/path?q=1", timeout=5) as resp:
                assert resp.status == 200 and resp.headers["content-type"] == "application/json"
                return json.loads(resp.read())

        via_urllib = await asyncio.to_thread(curl_like)
    finally:
        for s in server.servers:
            s.close()
            await s.wait_closed()
    return raw, http, via_urllib


def test_answers_raw_and_http_clients() -> None:
    raw, http, via_urllib = asyncio.run(_serve_and_ask())
    port = int(raw["local"].rsplit(":", 1)[1])
    assert raw["listener"] == port
    assert raw["original_dst"] == f"127.0.0.1:{port}" and raw["name"] == "loop"
    assert raw["peer"].startswith("127.0.0.1:") and "request" not in raw
    assert http["request"] == {"method": "GET", "path": "/diag", "host": f"127.0.0.1:{port}"}
    assert via_urllib["request"]["path"] == "/some/path?q=1"
