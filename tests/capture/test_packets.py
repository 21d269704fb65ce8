"""Frame decoding (pure) against frames built with scapy, and reading pcap/pcapng files."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter, wrpcapng

from minimesh.capture.packets import (
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_RAW_ALT,
    Decoded,
    decode,
    read_frames,
)

TCP_PKT = (
    IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=40000, dport=9080, seq=123, flags="PA") / Raw(b"hello")
)
WANT = Decoded("tcp", "10.0.0.2", 40000, "10.0.0.1", 9080, 45, 123, 0x18, b"hello")


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (DLT_EN10MB, Ether() / TCP_PKT),
        (DLT_EN10MB, Ether() / Dot1Q(vlan=7) / TCP_PKT),
        (DLT_LINUX_SLL, CookedLinux() / TCP_PKT),
        (DLT_LINUX_SLL2, CookedLinuxV2() / TCP_PKT),
        (DLT_RAW_ALT, TCP_PKT),
    ],
)
def test_tcp_over_every_link_type(linktype: int, frame) -> None:
    assert decode(linktype, bytes(frame)) == WANT


def test_ethernet_padding_is_not_payload() -> None:
    frame = bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="A")) + b"\x00" * 6
    got = decode(DLT_EN10MB, frame)
    assert got is not None and got.payload == b""


def test_ipv6_udp_and_other_protocols() -> None:
    v6 = decode(
        DLT_EN10MB,
        bytes(Ether() / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=53, dport=5353) / Raw(b"x")),
    )
    assert v6 == Decoded("udp", "fd00::1", 53, "fd00::2", 5353, 49, payload=b"x")
    icmp = decode(DLT_EN10MB, bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2", proto=1) / Raw(b"\x08\x00")))
    assert icmp is not None and icmp.proto == "ip/1"
    frag = decode(
        DLT_EN10MB, bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2", frag=100, proto=6) / Raw(b"x" * 30))
    )
    assert frag is not None and (frag.proto, frag.payload) == ("ip/6", b"")


def test_not_ip_or_truncated_is_none() -> None:
    assert decode(DLT_EN10MB, bytes(Ether() / ARP())) is None
    assert decode(DLT_EN10MB, bytes(Ether() / TCP_PKT)[:20]) is None
    assert decode(999, bytes(TCP_PKT)) is None


def test_read_frames_from_pcap_nanosecond_pcap_and_pcapng(tmp_path: Path) -> None:
    pkt = Ether() / TCP_PKT
    pkt.time = 1700000000.25
    for name, nano in (("us.pcap", False), ("ns.pcap", True)):
        with PcapWriter(str(tmp_path / name), nano=nano) as w:
            w.write(pkt)
        ((ts, linktype, data),) = list(read_frames(tmp_path / name))
        assert (round(ts, 6), linktype, decode(linktype, data)) == (1700000000.25, DLT_EN10MB, WANT)
    wrpcapng(str(tmp_path / "x.pcapng"), [pkt])
    ((ts, linktype, data),) = list(read_frames(tmp_path / "x.pcapng"))
    assert (round(ts, 6), linktype, decode(linktype, data)) == (1700000000.25, DLT_EN10MB, WANT)
