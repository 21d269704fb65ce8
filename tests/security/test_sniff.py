"""PERMISSIVE's decision over the first bytes, fed with real ClientHellos made by OpenSSL."""

from __future__ import annotations

import ssl

from hypothesis import given
from hypothesis import strategies as st

from minimesh.security.sniff import MESH_ALPN, Sniff, sniff


def client_hello(alpn: list[str] | None, sni: str | None = "outbound_.9080_._.details.default.svc.cluster.local") -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def test_mesh_tls_other_tls_and_plaintext() -> None:
    assert sniff(client_hello([MESH_ALPN])) is Sniff.MESH_TLS
    assert sniff(client_hello(["h2", MESH_ALPN])) is Sniff.MESH_TLS
    assert sniff(client_hello(["h2", "http/1.1"])) is Sniff.OTHER_TLS
    assert sniff(client_hello(None, sni=None)) is Sniff.OTHER_TLS
    assert sniff(b"GET /details/0 HTTP/1.1\r\nHost: details:9080\r\n\r\n") is Sniff.PLAINTEXT
    assert sniff(b"\x16\x01") is Sniff.PLAINTEXT  # a handshake byte, then not TLS
    assert sniff(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is Sniff.PLAINTEXT  # a handshake, not a ClientHello


def test_waits_for_the_whole_client_hello() -> None:
    hello = client_hello([MESH_ALPN])
    assert sniff(b"") is Sniff.NEED_MORE
    for cut in (1, 2, 5, 40, len(hello) - 1):
        assert sniff(hello[:cut]) is Sniff.NEED_MORE, cut


@given(st.binary(min_size=1, max_size=64).filter(lambda b: b[0] != 0x16))
def test_anything_not_starting_a_handshake_is_plaintext(data: bytes) -> None:
    assert sniff(data) is Sniff.PLAINTEXT


@given(st.integers(min_value=1))
def test_every_prefix_of_a_mesh_hello_is_need_more_or_mesh(n: int) -> None:
    hello = _HELLO
    got = sniff(hello[: n % (len(hello) + 1)])
    assert got in (Sniff.NEED_MORE, Sniff.MESH_TLS)


_HELLO = client_hello([MESH_ALPN])
