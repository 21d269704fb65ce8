"""Read a pcap and say what a sniffer on the wire could see: flows, plaintext HTTP, TLS (stage 6's evidence).

`analyse_pcap(path)` reads the file with scapy and decodes frame headers (any link type tcpdump writes,
e.g. Linux cooked v2 from `-i any`; see `packets.py`), counts flows per direction, reassembles each TCP
direction by sequence number, then reads the byte stream:

- plaintext HTTP/1 requests and responses with httptools (so a request line split over segments, or
  several requests on one keep-alive connection, are all found);
- TLS: record headers (type, version, length) are parsed here, because TLS on a non-443 port is just
  bytes to scapy unless it is bound; the handshake messages are reassembled across records and the
  ClientHello / ServerHello are decoded with scapy's TLS layer for SNI, ALPN and versions.

Nothing here needs root; `minimesh.capture.tcpdump` makes the pcap.
"""

from __future__ import annotations

import bisect
import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httptools
from scapy.error import Scapy_Exception
from scapy.layers.tls.extensions import (
    TLS_Ext_ALPN,
    TLS_Ext_ServerName,
    TLS_Ext_SupportedVersion_CH,
    TLS_Ext_SupportedVersion_SH,
)
from scapy.layers.tls.handshake import TLSClientHello, TLSServerHello

from minimesh.capture.packets import Decoded, decode, read_frames

TLS_CONTENT_TYPES = {
    20: "change_cipher_spec",
    21: "alert",
    22: "handshake",
    23: "application_data",
    24: "heartbeat",
}
TLS_VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
HANDSHAKE_TYPES = {
    0: "hello_request",
    1: "client_hello",
    2: "server_hello",
    4: "new_session_ticket",
    5: "end_of_early_data",
    8: "encrypted_extensions",
    11: "certificate",
    12: "server_key_exchange",
    13: "certificate_request",
    14: "server_hello_done",
    15: "certificate_verify",
    16: "client_key_exchange",
    20: "finished",
    24: "key_update",
}
_REQUEST_LINE = re.compile(
    rb"(?:^|\r\n)((?:GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|TRACE) \S+ HTTP/1\.[01]\r\n)"
)
_SEQ_MOD = 1 << 32

Endpoint = tuple[str, int]


def version_name(v: int) -> str:
    return TLS_VERSIONS.get(v, f"0x{v:04x}")


def looks_like_tls(data: bytes) -> bool:
    """A TLS record header: a known content type, major version 3, minor 0-4."""
    return len(data) >= 5 and data[0] in TLS_CONTENT_TYPES and data[1] == 3 and data[2] <= 4


# ---- report types ------------------------------------------------------------------------------


@dataclass
class Flow:
    """One direction of a conversation (a 5-tuple)."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    packets: int = 0
    bytes: int = 0  # IP bytes (headers included)
    payload_bytes: int = 0
    first: float = 0.0
    last: float = 0.0

    def __str__(self) -> str:
        return f"{self.proto} {self.src}:{self.sport} -> {self.dst}:{self.dport}"


@dataclass
class HttpRequest:
    time: float
    src: str
    dst: str
    method: str
    path: str
    host: str | None
    version: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HttpResponse:
    time: float
    src: str
    dst: str
    status: int
    reason: str
    version: str


@dataclass
class TlsRecord:
    time: float
    sender: str  # "client" or "server"
    content_type: str
    version: str
    length: int
    handshake_types: list[str] = field(default_factory=list)  # "encrypted" once encrypted


@dataclass
class TlsFlow:
    client: str
    server: str
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)  # offered by the client
    alpn_selected: str | None = None  # from the ServerHello when visible (TLS 1.2)
    client_versions: list[str] = field(default_factory=list)  # supported_versions offered
    version: str | None = None  # negotiated, from the ServerHello
    records: list[TlsRecord] = field(default_factory=list)

    @property
    def content_types(self) -> list[str]:
        return sorted({r.content_type for r in self.records})


@dataclass
class CaptureReport:
    path: str
    packets: int = 0
    undecoded_packets: int = 0  # not IP (ARP, ...)
    flows: list[Flow] = field(default_factory=list)
    http_requests: list[HttpRequest] = field(default_factory=list)
    http_responses: list[HttpResponse] = field(default_factory=list)
    tls_flows: list[TlsFlow] = field(default_factory=list)
    incomplete_streams: list[str] = field(default_factory=list)  # directions with a hole (lost segments)

    @property
    def plaintext_requests(self) -> list[HttpRequest]:
        return self.http_requests

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for tf, d in zip(self.tls_flows, out["tls_flows"], strict=True):
            d["content_types"] = tf.content_types
        return out

    def summary(self) -> str:
        lines = [f"capture {self.path}: {self.packets} packets, {len(self.flows)} flows"]
        t0 = min((f.first for f in self.flows), default=0.0)
        for f in self.flows:
            lines.append(
                f"  {f}  {f.packets} pkts {f.bytes} B ({f.payload_bytes} B payload)"
                f"  {f.first - t0:.3f}-{f.last - t0:.3f}s"
            )
        lines.append(f"plaintext HTTP requests ({len(self.http_requests)}):")
        lines += [
            f"  {r.time - t0:.3f}s {r.src} -> {r.dst}  {r.method} {r.path}  Host: {r.host}"
            for r in self.http_requests
        ]
        lines.append(f"plaintext HTTP responses ({len(self.http_responses)}):")
        lines += [
            f"  {r.time - t0:.3f}s {r.src} -> {r.dst}  {r.status} {r.reason}" for r in self.http_responses
        ]
        lines.append(f"TLS connections ({len(self.tls_flows)}):")
        for t in self.tls_flows:
            lines.append(
                f"  {t.client} -> {t.server}  SNI {t.sni or '-'}  ALPN {','.join(t.alpn) or '-'}"
                f"  version {t.version or '?'}  records: {len(t.records)} ({', '.join(t.content_types)})"
            )
        if self.incomplete_streams:
            lines.append(f"streams with missing segments: {', '.join(self.incomplete_streams)}")
        return "\n".join(lines)


# ---- TCP reassembly ----------------------------------------------------------------------------


@dataclass
class _Direction:
    src: Endpoint
    dst: Endpoint
    isn: int | None = None
    sent_syn: bool = False  # SYN without ACK: this side opened the connection
    segments: list[tuple[int, bytes, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.src[0]}:{self.src[1]} -> {self.dst[0]}:{self.dst[1]}"


@dataclass
class _Stream:
    """A reassembled direction: contiguous chunks (time the bytes became readable, bytes)."""

    chunks: list[tuple[float, bytes]]
    complete: bool

    @property
    def data(self) -> bytes:
        return b"".join(c for _, c in self.chunks)

    def time_at(self, offset: int) -> float:
        starts, pos = [], 0
        for _, c in self.chunks:
            starts.append(pos)
            pos += len(c)
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        return self.chunks[i][0] if self.chunks else 0.0


def reassemble(d: _Direction) -> _Stream:
    """Order segments by sequence number, drop retransmissions, stop at the first hole."""
    if not d.segments:
        return _Stream([], True)
    base = (d.isn + 1) % _SEQ_MOD if d.isn is not None else d.segments[0][0]
    ordered = []
    for seq, data, t in d.segments:
        rel = (seq - base) % _SEQ_MOD
        if rel >= _SEQ_MOD // 2:  # before the base: old data we did not see start
            continue
        ordered.append((rel, data, t))
    ordered.sort(key=lambda s: s[0])
    cursor, chunks, complete = 0, [], True
    for rel, data, t in ordered:
        end = rel + len(data)
        if end <= cursor:
            continue
        if rel > cursor:
            complete = False
            break
        # A byte is readable once everything before it has arrived: time is the running maximum.
        seen = max(t, chunks[-1][0]) if chunks else t
        chunks.append((seen, data[cursor - rel :]))
        cursor = end
    return _Stream(chunks, complete)


# ---- HTTP --------------------------------------------------------------------------------------


class _HttpCollector:
    def __init__(self, stream: _Stream, response: bool) -> None:
        self.stream, self.response = stream, response
        self.parser = httptools.HttpResponseParser(self) if response else httptools.HttpRequestParser(self)
        self.offset = 0  # bytes fed so far
        self.messages: list[dict[str, Any]] = []
        self.cur: dict[str, Any] = {}

    def on_message_begin(self) -> None:
        self.cur = {"time": self.now, "url": b"", "headers": {}, "reason": b""}

    def on_url(self, url: bytes) -> None:
        self.cur["url"] += url

    def on_status(self, status: bytes) -> None:
        self.cur["reason"] += status

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        prev = self.cur["headers"].get(key)
        text = value.decode("latin-1")
        self.cur["headers"][key] = f"{prev},{text}" if prev is not None else text

    def on_headers_complete(self) -> None:
        self.cur["version"] = "HTTP/" + self.parser.get_http_version()
        if self.response:
            self.cur["status"] = self.parser.get_status_code()  # type: ignore[attr-defined]
        else:
            self.cur["method"] = self.parser.get_method().decode()  # type: ignore[attr-defined]
        self.messages.append(self.cur)

    def feed(self, skip: int) -> None:
        pos = 0
        for t, chunk in self.stream.chunks:
            if pos + len(chunk) <= skip:
                pos += len(chunk)
                continue
            part = chunk[max(0, skip - pos) :]
            pos += len(chunk)
            self.now = t
            try:
                self.parser.feed_data(part)
            except httptools.HttpParserUpgrade:
                return
            except httptools.HttpParserError:
                return


def http_messages(stream: _Stream) -> tuple[str, list[dict[str, Any]]]:
    """("request"|"response"|"", messages) found in one reassembled direction."""
    data = stream.data
    if data.startswith(b"HTTP/1."):
        c = _HttpCollector(stream, response=True)
        c.feed(0)
        return "response", c.messages
    m = _REQUEST_LINE.search(data[:65536])
    if m:
        c = _HttpCollector(stream, response=False)
        c.feed(m.start(1))  # resynchronise when the capture started mid-stream
        return "request", c.messages
    return "", []


# ---- TLS ---------------------------------------------------------------------------------------


def tls_records(stream: _Stream, sender: str) -> tuple[list[TlsRecord], list[tuple[int, bytes]]]:
    """Records of one direction, and its plaintext handshake messages (type, whole message bytes)."""
    data = stream.data
    records: list[TlsRecord] = []
    hs_buffer = b""
    messages: list[tuple[int, bytes]] = []
    encrypted = False
    pos = 0
    while pos + 5 <= len(data) and looks_like_tls(data[pos : pos + 5]):
        ctype, version, length = (
            data[pos],
            int.from_bytes(data[pos + 1 : pos + 3], "big"),
            int.from_bytes(data[pos + 3 : pos + 5], "big"),
        )
        if pos + 5 + length > len(data):
            break  # the rest of this record was not captured
        fragment = data[pos + 5 : pos + 5 + length]
        rec = TlsRecord(stream.time_at(pos), sender, TLS_CONTENT_TYPES[ctype], version_name(version), length)
        if ctype == 20:
            encrypted = True  # everything this side sends after ChangeCipherSpec is encrypted
        elif ctype == 22 and encrypted:
            rec.handshake_types.append("encrypted")
        elif ctype == 22:
            hs_buffer += fragment
            while len(hs_buffer) >= 4:
                mlen = int.from_bytes(hs_buffer[1:4], "big")
                if len(hs_buffer) < 4 + mlen:
                    break
                mtype = hs_buffer[0]
                rec.handshake_types.append(HANDSHAKE_TYPES.get(mtype, f"type_{mtype}"))
                messages.append((mtype, hs_buffer[: 4 + mlen]))
                hs_buffer = hs_buffer[4 + mlen :]
        records.append(rec)
        pos += 5 + length
    return records, messages


def _client_hello(flow: TlsFlow, raw: bytes) -> None:
    hello = TLSClientHello(raw)
    for ext in hello.ext or []:
        if isinstance(ext, TLS_Ext_ServerName):
            names = [s.servername for s in ext.servernames or []]
            flow.sni = names[0].decode(errors="replace") if names else None
        elif isinstance(ext, TLS_Ext_ALPN):
            flow.alpn = [p.protocol.decode(errors="replace") for p in ext.protocols or []]
        elif isinstance(ext, TLS_Ext_SupportedVersion_CH):
            flow.client_versions = [version_name(v) for v in ext.versions or []]


def _server_hello(flow: TlsFlow, raw: bytes) -> None:
    hello = TLSServerHello(raw)
    version = hello.version
    for ext in hello.ext or []:
        if isinstance(ext, TLS_Ext_SupportedVersion_SH):
            version = ext.version
        elif isinstance(ext, TLS_Ext_ALPN) and ext.protocols:
            flow.alpn_selected = ext.protocols[0].protocol.decode(errors="replace")
    flow.version = version_name(version)


# ---- the pass over the pcap --------------------------------------------------------------------


def _is_client(d: _Direction, back: _Direction | None, data: bytes) -> bool:
    """This direction belongs to the side that opened the connection (SYN), else that sent a ClientHello."""
    if d.sent_syn or (back is not None and back.sent_syn):
        return d.sent_syn
    return data[5:6] == b"\x01"


def analyse_frames(frames: Iterable[tuple[float, int, bytes]], path: str = "") -> CaptureReport:
    """Analyse (timestamp, link type, frame) records, as `packets.read_frames` yields them."""
    report = CaptureReport(path)
    flows: dict[tuple, Flow] = {}
    directions: dict[tuple[Endpoint, Endpoint], _Direction] = {}
    for t, linktype, frame in frames:
        report.packets += 1
        pkt: Decoded | None = decode(linktype, frame)
        if pkt is None:
            report.undecoded_packets += 1
            continue
        key = (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
        f = flows.get(key)
        if f is None:
            f = flows[key] = Flow(*key, first=t)
        f.packets += 1
        f.bytes += pkt.ip_len
        f.payload_bytes += len(pkt.payload)
        f.last = t
        if pkt.proto != "tcp":
            continue
        src, dst = (pkt.src, pkt.sport), (pkt.dst, pkt.dport)
        d = directions.setdefault((src, dst), _Direction(src, dst))
        if pkt.flags & 0x02:  # SYN
            d.isn = pkt.seq
            d.sent_syn = d.sent_syn or not pkt.flags & 0x10  # without ACK: the opening side
        if pkt.payload:
            d.segments.append((pkt.seq, pkt.payload, t))
    report.flows = sorted(flows.values(), key=lambda fl: (fl.first, str(fl)))

    streams = {k: reassemble(d) for k, d in directions.items()}
    for k, s in streams.items():
        if not s.complete:
            report.incomplete_streams.append(directions[k].name)

    tls: dict[frozenset, TlsFlow] = {}
    for (src, dst), stream in streams.items():
        data = stream.data
        if not data:
            continue
        name_src, name_dst = f"{src[0]}:{src[1]}", f"{dst[0]}:{dst[1]}"
        if looks_like_tls(data):
            conn = frozenset((src, dst))
            is_client = _is_client(directions[(src, dst)], directions.get((dst, src)), data)
            flow = tls.setdefault(conn, TlsFlow(client="", server=""))
            if is_client:
                flow.client, flow.server = name_src, name_dst
            records, messages = tls_records(stream, "client" if is_client else "server")
            flow.records.extend(records)
            for mtype, raw in messages:
                if mtype == 1:
                    _client_hello(flow, raw)
                elif mtype == 2:
                    _server_hello(flow, raw)
            continue
        kind, messages = http_messages(stream)
        for m in messages:
            if kind == "request":
                report.http_requests.append(
                    HttpRequest(
                        m["time"],
                        name_src,
                        name_dst,
                        m["method"],
                        m["url"].decode("latin-1"),
                        m["headers"].get("host"),
                        m["version"],
                        m["headers"],
                    )
                )
            else:
                report.http_responses.append(
                    HttpResponse(
                        m["time"],
                        name_src,
                        name_dst,
                        m["status"],
                        m["reason"].decode("latin-1"),
                        m["version"],
                    )
                )
    for conn, flow in tls.items():
        if not flow.client:  # only the server side was seen: name the other end the client
            a, b = sorted(conn)
            flow.client, flow.server = f"{a[0]}:{a[1]}", f"{b[0]}:{b[1]}"
        flow.records.sort(key=lambda r: r.time)
    report.tls_flows = sorted(tls.values(), key=lambda fl: fl.records[0].time if fl.records else 0.0)
    report.http_requests.sort(key=lambda r: r.time)
    report.http_responses.sort(key=lambda r: r.time)
    return report


def analyse_pcap(path: str | Path) -> CaptureReport:
    """Analyse a pcap/pcapng file written by tcpdump."""
    return analyse_frames(read_frames(path), str(path))


def main(argv: list[str] | None = None) -> int:
    """`python -m minimesh.capture.analyse FILE [--json]`: print what the capture shows."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m minimesh.capture.analyse", description=main.__doc__)
    ap.add_argument("pcap", type=Path)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    a = ap.parse_args(argv)
    if not a.pcap.is_file():
        print(f"error: {a.pcap}: no such file", file=sys.stderr)
        return 1
    try:
        report = analyse_pcap(a.pcap)
    except (OSError, Scapy_Exception) as e:
        print(f"error: {a.pcap}: cannot read as pcap: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if a.json else report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
