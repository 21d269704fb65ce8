"""Reading a capture as stage 6's evidence (pure): what a sniffer got from a pod's port.

`summarize(report, server_port)` says whether HTTP requests crossed the wire in clear text and which TLS
connections carried the mesh's ALPN; `first_client_bytes(pcap, server_port)` hands back the first bytes
each client sent, which is exactly what PERMISSIVE mode (and the lab's `sniff` exercise) decides on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minimesh.capture.packets import decode, read_frames
from minimesh.security.sniff import MESH_ALPN


@dataclass
class Evidence:
    plaintext_requests: list[str] = field(default_factory=list)  # "GET /details/0 (10.244.0.9 -> 10.244.0.7)"
    tls_connections: int = 0
    mesh_tls_connections: int = 0  # whose captured ClientHello offers the mesh's ALPN
    sni: list[str] = field(default_factory=list)

    @property
    def encrypted_only(self) -> bool:
        return not self.plaintext_requests and self.mesh_tls_connections > 0

    def __str__(self) -> str:
        if self.plaintext_requests:
            return f"{len(self.plaintext_requests)} plaintext request(s), e.g. {self.plaintext_requests[0]}"
        return (f"no plaintext request; {self.tls_connections} TLS connection(s), {self.mesh_tls_connections}"
                f" with ALPN {MESH_ALPN!r}" + (f", SNI {self.sni[0]}" if self.sni else ""))


def summarize(report: Any, server_port: int) -> Evidence:
    """Evidence about connections to `server_port` in a CaptureReport (minimesh.capture.analyse)."""
    ev = Evidence()
    for r in report.http_requests:
        if r.dst.endswith(f":{server_port}"):
            ev.plaintext_requests.append(f"{r.method} {r.path} ({r.src} -> {r.dst})")
    for t in report.tls_flows:
        # a connection whose handshake was not captured (it was opened earlier) may have client and server
        # the wrong way round: the port on either side counts
        if t.server.endswith(f":{server_port}") or t.client.endswith(f":{server_port}"):
            ev.tls_connections += 1
            if MESH_ALPN in (t.alpn or []):
                ev.mesh_tls_connections += 1
            if t.sni and t.sni not in ev.sni:
                ev.sni.append(t.sni)
    return ev


def first_client_bytes(pcap: str | Path, server_port: int) -> list[tuple[str, bytes]]:
    """(flow, the first payload segment the client sent) for every connection to `server_port`."""
    seen: dict[tuple[str, int, str, int], bytes] = {}
    for _, linktype, frame in read_frames(pcap):
        d = decode(linktype, frame)
        if d is None or d.proto != "tcp" or d.dport != server_port or not d.payload:
            continue
        key = (d.src, d.sport, d.dst, d.dport)
        seen.setdefault(key, d.payload)
    return [(f"{s}:{sp} -> {dst}:{dp}", data) for (s, sp, dst, dp), data in seen.items()]
