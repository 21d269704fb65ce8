"""Where was a redirected connection going? getsockopt(SOL_IP, SO_ORIGINAL_DST) after iptables REDIRECT.

The kernel answers with a `struct sockaddr_in`: family (2 bytes, host order), port (2 bytes, network
order), IPv4 address (4 bytes), zero padding (8 bytes). A connection that was not redirected has no
conntrack NAT entry and the call fails (ENOENT); then the local address is the destination.
"""

from __future__ import annotations

import socket
import struct

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
SOCKADDR_IN_LEN = 16


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """Decode a sockaddr_in as returned by SO_ORIGINAL_DST."""
    if len(raw) < 8:
        raise ValueError(f"sockaddr_in too short: {len(raw)} bytes")
    family = struct.unpack_from("=H", raw, 0)[0]
    if family != socket.AF_INET:
        raise ValueError(f"not an AF_INET address (family {family})")
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


def original_dst(sock: socket.socket | object) -> tuple[str, int] | None:
    """The original destination of a redirected TCP connection, or None when it was not redirected."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_LEN)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return None
    try:
        return parse_sockaddr_in(raw)
    except ValueError:
        return None


def destination(sock: socket.socket | object, local: tuple[str, int]) -> tuple[tuple[str, int], bool]:
    """(destination, redirected): SO_ORIGINAL_DST when it differs from the local address, else local."""
    dst = original_dst(sock)
    if dst is None or (dst[0] == local[0] and dst[1] == local[1]):
        return (local[0], local[1]), False
    return dst, True
