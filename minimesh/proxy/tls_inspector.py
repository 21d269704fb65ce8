"""envoy.filters.listener.tls_inspector without I/O: is this a TLS ClientHello, and what SNI/ALPN does it ask?

`inspect(first_bytes)` returns NEED_MORE until it can decide, then a `ClientHelloInfo` (TLS) or
PLAINTEXT. A TLS record starts 0x16 (handshake) 0x03 0x0X (version); the handshake's first message is a
ClientHello (type 1), whose extensions carry server_name (0) and ALPN (16).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_CLIENT_HELLO = 64 * 1024


@dataclass(frozen=True, slots=True)
class ClientHelloInfo:
    sni: str = ""
    alpn: tuple[str, ...] = ()


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_MORE = _Marker("NEED_MORE")
PLAINTEXT = _Marker("PLAINTEXT")


def inspect(data: bytes) -> ClientHelloInfo | _Marker:
    if not data:
        return NEED_MORE
    if data[0] != 0x16:
        return PLAINTEXT
    if len(data) >= 2 and data[1] != 0x03:
        return PLAINTEXT
    if len(data) < 5:
        return NEED_MORE
    if data[2] > 0x04:
        return PLAINTEXT
    # the ClientHello may span several records; gather the handshake bytes
    hs = bytearray()
    pos = 0
    while True:
        if len(data) < pos + 5:
            return NEED_MORE if len(data) < MAX_CLIENT_HELLO else PLAINTEXT
        if data[pos] != 0x16:
            return PLAINTEXT
        rec_len = struct.unpack_from("!H", data, pos + 3)[0]
        if len(data) < pos + 5 + rec_len:
            return NEED_MORE if len(data) < MAX_CLIENT_HELLO else PLAINTEXT
        hs += data[pos + 5: pos + 5 + rec_len]
        pos += 5 + rec_len
        if len(hs) >= 4:
            if hs[0] != 0x01:
                return PLAINTEXT
            need = 4 + int.from_bytes(hs[1:4], "big")
            if len(hs) >= need:
                return _parse_client_hello(bytes(hs[4:need]))


def _parse_client_hello(body: bytes) -> ClientHelloInfo:
    """Read SNI and ALPN from a ClientHello body; tolerate anything malformed (it is then just TLS)."""
    try:
        p = 2 + 32  # version, random
        p += 1 + body[p]  # session id
        p += 2 + struct.unpack_from("!H", body, p)[0]  # cipher suites
        p += 1 + body[p]  # compression methods
        if p + 2 > len(body):
            return ClientHelloInfo()
        end = p + 2 + struct.unpack_from("!H", body, p)[0]
        p += 2
        sni, alpn = "", []
        while p + 4 <= end:
            ext_type, ext_len = struct.unpack_from("!HH", body, p)
            ext = body[p + 4: p + 4 + ext_len]
            p += 4 + ext_len
            if ext_type == 0 and len(ext) >= 5 and ext[2] == 0:  # server_name, host_name entry
                n = struct.unpack_from("!H", ext, 3)[0]
                sni = ext[5:5 + n].decode("ascii", "replace").lower()
            elif ext_type == 16 and len(ext) >= 2:
                q, stop = 2, 2 + struct.unpack_from("!H", ext, 0)[0]
                while q < stop and q < len(ext):
                    n = ext[q]
                    alpn.append(ext[q + 1:q + 1 + n].decode("ascii", "replace"))
                    q += 1 + n
        return ClientHelloInfo(sni, tuple(alpn))
    except (IndexError, struct.error):
        return ClientHelloInfo()
