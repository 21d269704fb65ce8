"""Reading capture files and decoding frame headers down to TCP/UDP. Pure except `read_frames`.

scapy reads the file (pcap with µs or ns timestamps, or pcapng) through its raw readers; the headers
are decoded here with `struct`, which is some 20 times faster than building a scapy packet per frame
and is all the analyser needs (addresses, ports, TCP sequence numbers and flags, payload).

Link types: Ethernet (with 802.1Q tags), Linux cooked v1 and v2 (tcpdump `-i any`), raw IP, BSD loopback.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scapy.utils import RawPcapReader

DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_RAW_ALT, DLT_LINUX_SLL, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2 = (
    0, 1, 12, 101, 113, 228, 229, 276,
)  # fmt: skip
ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
IPPROTO_TCP, IPPROTO_UDP = 6, 17


@dataclass(frozen=True)
class Decoded:
    proto: str  # "tcp", "udp" or "ip/<number>"
    src: str
    sport: int
    dst: str
    dport: int
    ip_len: int  # bytes of the IP packet, headers included
    seq: int = 0  # TCP only
    flags: int = 0  # TCP only
    payload: bytes = b""  # TCP/UDP payload


def _network_start(linktype: int, frame: bytes) -> tuple[int, int] | None:
    """(ethertype, offset of the IP header) for the link types tcpdump writes."""
    if linktype == DLT_EN10MB:
        if len(frame) < 14:
            return None
        etype, off = struct.unpack_from("!H", frame, 12)[0], 14
        while etype in (ETH_VLAN, ETH_QINQ) and len(frame) >= off + 4:
            etype, off = struct.unpack_from("!H", frame, off + 2)[0], off + 4
        return etype, off
    if linktype == DLT_LINUX_SLL:
        return (struct.unpack_from("!H", frame, 14)[0], 16) if len(frame) >= 16 else None
    if linktype == DLT_LINUX_SLL2:
        return (struct.unpack_from("!H", frame, 0)[0], 20) if len(frame) >= 20 else None
    if linktype in (DLT_RAW, DLT_RAW_ALT, DLT_IPV4, DLT_IPV6):
        if not frame:
            return None
        return (ETH_IPV4 if frame[0] >> 4 == 4 else ETH_IPV6), 0
    if linktype == DLT_NULL:
        if len(frame) < 4:
            return None
        family = struct.unpack_from("=I", frame, 0)[0]
        return (ETH_IPV4 if family == socket.AF_INET else ETH_IPV6), 4
    return None


def decode(linktype: int, frame: bytes) -> Decoded | None:
    """The IP/TCP/UDP view of one frame, or None when it is not IP (ARP, ...) or is truncated."""
    start = _network_start(linktype, frame)
    if start is None:
        return None
    etype, off = start
    if etype == ETH_IPV4 and len(frame) >= off + 20 and frame[off] >> 4 == 4:
        ihl = (frame[off] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, off + 2)[0]
        frag = struct.unpack_from("!H", frame, off + 6)[0] & 0x1FFF
        proto = frame[off + 9]
        src, dst = (
            socket.inet_ntop(socket.AF_INET, frame[off + 12 : off + 16]),
            socket.inet_ntop(socket.AF_INET, frame[off + 16 : off + 20]),
        )
        l4, end = off + ihl, off + total  # `end` drops Ethernet padding of short frames
        if frag:  # a later fragment carries no L4 header
            return Decoded(f"ip/{proto}", src, 0, dst, 0, total)
    elif etype == ETH_IPV6 and len(frame) >= off + 40 and frame[off] >> 4 == 6:
        total = 40 + struct.unpack_from("!H", frame, off + 4)[0]
        proto = frame[off + 6]
        src, dst = (
            socket.inet_ntop(socket.AF_INET6, frame[off + 8 : off + 24]),
            socket.inet_ntop(socket.AF_INET6, frame[off + 24 : off + 40]),
        )
        l4, end = off + 40, off + total
    else:
        return None
    end = min(end, len(frame))
    if proto == IPPROTO_TCP and end >= l4 + 20:
        sport, dport, seq = struct.unpack_from("!HHI", frame, l4)
        doff = (frame[l4 + 12] >> 4) * 4
        flags = frame[l4 + 13]
        return Decoded("tcp", src, sport, dst, dport, total, seq, flags, bytes(frame[l4 + doff : end]))
    if proto == IPPROTO_UDP and end >= l4 + 8:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        return Decoded("udp", src, sport, dst, dport, total, payload=bytes(frame[l4 + 8 : end]))
    return Decoded(f"ip/{proto}", src, 0, dst, 0, total)


def read_frames(path: str | Path) -> Iterator[tuple[float, int, bytes]]:
    """(timestamp, link type, frame bytes) of every packet of a pcap or pcapng file."""
    reader = RawPcapReader(str(path))  # its metaclass opens pcapng files with RawPcapNgReader
    try:
        for data, meta in reader:
            if hasattr(meta, "linktype"):  # pcapng
                ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol if meta.tshigh is not None else 0.0
                yield ts, meta.linktype, data
            else:
                yield meta.sec + meta.usec / (1e9 if reader.nano else 1e6), reader.linktype, data
    finally:
        reader.close()
