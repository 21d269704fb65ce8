"""The pcap analyser on hand-made captures: reassembly edge cases that real traffic rarely shows on demand."""

from __future__ import annotations

import ssl
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from minimesh.capture.analyse import analyse_pcap, looks_like_tls

C, S = ("10.0.0.2", 40000), ("10.0.0.1", 9080)
ISN_C, ISN_S = 1000, 5000


def seg(src, dst, seq: int, payload: bytes = b"", flags: str = "PA", t: float = 0.0, ack: int = 0):
    pkt = (
        Ether() / IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags)
    )
    if payload:
        pkt = pkt / Raw(payload)
    pkt.time = t
    return pkt


def handshake(t: float = 0.0) -> list:
    return [
        seg(C, S, ISN_C, flags="S", t=t),
        seg(S, C, ISN_S, flags="SA", t=t + 0.001, ack=ISN_C + 1),
        seg(C, S, ISN_C + 1, flags="A", t=t + 0.002, ack=ISN_S + 1),
    ]


def write(tmp_path: Path, packets: list) -> Path:
    path = tmp_path / "crafted.pcap"
    wrpcap(str(path), packets)
    return path


def test_http_out_of_order_retransmitted_and_pipelined(tmp_path: Path) -> None:
    req1 = b"GET /details/0 HTTP/1.1\r\nHost: details\r\n\r\n"
    req2 = b"POST /reviews HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n\r\nhello"
    req3 = b"GET /ratings HTTP/1.1\r\nHost: ratings\r\n\r\n"
    stream = req1 + req2 + req3
    a, b, c = stream[:10], stream[10:60], stream[60:]
    base = ISN_C + 1
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 3
    packets = [
        *handshake(),
        seg(C, S, base + 10, b, t=0.010),  # arrives before the first part
        seg(C, S, base, a, t=0.011),
        seg(C, S, base, a, t=0.012),  # retransmission
        seg(C, S, base + 60, c, t=0.013),
        seg(S, C, ISN_S + 1, resp, t=0.020),
    ]
    report = analyse_pcap(write(tmp_path, packets))
    assert [(r.method, r.path, r.host) for r in report.http_requests] == [
        ("GET", "/details/0", "details"),
        ("POST", "/reviews", "reviews"),
        ("GET", "/ratings", "ratings"),
    ]
    assert [r.status for r in report.http_responses] == [200, 200, 200]
    assert report.incomplete_streams == []
    out = next(f for f in report.flows if (f.src, f.sport) == C)
    assert out.packets == 6 and out.payload_bytes == len(stream) + len(a)


def test_a_hole_stops_the_stream_and_is_reported(tmp_path: Path) -> None:
    req = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
    packets = [
        *handshake(),
        seg(C, S, ISN_C + 1, req),
        seg(C, S, ISN_C + 1 + len(req) + 100, b"GET /two HTTP/1.1\r\n\r\n"),
    ]
    report = analyse_pcap(write(tmp_path, packets))
    assert [r.path for r in report.http_requests] == ["/one"]
    assert report.incomplete_streams == ["10.0.0.2:40000 -> 10.0.0.1:9080"]


def test_capture_started_mid_stream_resynchronises(tmp_path: Path) -> None:
    tail_of_body = b'"rating": 5}\r\n'
    packets = [seg(C, S, 777_777, tail_of_body + b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")]
    report = analyse_pcap(write(tmp_path, packets))
    assert [r.path for r in report.http_requests] == ["/late"]


def test_sequence_numbers_wrap_around(tmp_path: Path) -> None:
    isn = 2**32 - 5
    req = b"GET /wrapped HTTP/1.1\r\nHost: w\r\n\r\n"
    packets = [
        seg(C, S, isn, flags="S"),
        seg(C, S, isn + 1, req[:8]),
        seg(C, S, (isn + 1 + 8) % 2**32, req[8:]),
    ]
    assert [r.path for r in analyse_pcap(write(tmp_path, packets)).http_requests] == ["/wrapped"]


def client_hello(sni: str, alpn: list[str]) -> bytes:
    """A real ClientHello from Python's TLS stack, without any network."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_client_hello_split_over_segments_gives_sni_and_alpn(tmp_path: Path) -> None:
    hello = client_hello("reviews.default.svc.cluster.local", ["istio-peer-exchange", "http/1.1"])
    assert looks_like_tls(hello)
    base = ISN_C + 1
    packets = [*handshake(), seg(C, S, base, hello[:3], t=0.01), seg(C, S, base + 3, hello[3:], t=0.02)]
    report = analyse_pcap(write(tmp_path, packets))
    (flow,) = report.tls_flows
    assert (flow.client, flow.server) == ("10.0.0.2:40000", "10.0.0.1:9080")
    assert flow.sni == "reviews.default.svc.cluster.local"
    assert flow.alpn == ["istio-peer-exchange", "http/1.1"]
    assert "TLS 1.3" in flow.client_versions and flow.version is None  # no ServerHello captured
    (record,) = flow.records
    assert (record.sender, record.content_type, record.handshake_types) == (
        "client",
        "handshake",
        ["client_hello"],
    )
    assert report.http_requests == []


def test_other_packets_are_counted_not_decoded(tmp_path: Path) -> None:
    dns = Ether() / IP(src="10.0.0.2", dst="10.96.0.10") / UDP(sport=5353, dport=53) / Raw(b"\x00" * 12)
    arp = Ether() / ARP()
    report = analyse_pcap(write(tmp_path, [dns, arp]))
    assert (report.packets, report.undecoded_packets) == (2, 1)
    assert [(f.proto, f.dst, f.dport) for f in report.flows] == [("udp", "10.96.0.10", 53)]
    assert report.to_dict()["flows"][0]["proto"] == "udp"


def test_command_line(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    pcap = write(tmp_path, [*handshake(), seg(C, S, ISN_C + 1, b"GET /cli HTTP/1.1\r\nHost: c\r\n\r\n")])
    run = [sys.executable, "-m", "minimesh.capture.analyse"]
    done = subprocess.run([*run, str(pcap), "--json"], capture_output=True, text=True, cwd="/", timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["http_requests"][0]["path"] == "/cli"
    junk = tmp_path / "junk.pcap"
    junk.write_text("not a capture")
    bad = subprocess.run([*run, str(junk)], capture_output=True, text=True, cwd="/", timeout=60)
    assert bad.returncode == 1 and "cannot read as pcap" in bad.stderr and "Traceback" not in bad.stderr
