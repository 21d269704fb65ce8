"""PERMISSIVE mode's question about a new inbound connection: mesh mTLS, other TLS, or plaintext? Pure.

In PERMISSIVE mode a sidecar serves mTLS from other sidecars and plaintext from everyone else on the
SAME port, so it must decide from the first bytes the client sends, before answering anything (the
server speaks second in both HTTP and TLS). A TLS connection starts with a handshake record whose first
message is a ClientHello; a mesh client says who it is in the ALPN extension (`minimesh`, as Istio's
sidecars offer `istio`). A plaintext HTTP client starts with a method: `GET /details HTTP/1.1`.

The proxy's listener makes the same decision with its tls_inspector and filter chains matching
`transport_protocol: tls` + `application_protocols: [minimesh]`; this function is that decision on its own.
"""

from __future__ import annotations

import enum

from minimesh.proxy import tls_inspector

MESH_ALPN = "minimesh"
TLS_HANDSHAKE = 0x16  # TLS record content type: handshake
TLS_MAJOR = 0x03  # TLS 1.0-1.3 all have major version 3 in the record header


class Sniff(enum.Enum):
    NEED_MORE = "need more bytes"
    PLAINTEXT = "plaintext"
    MESH_TLS = "mesh mTLS"
    OTHER_TLS = "TLS (not the mesh's)"


def client_hello(first: bytes) -> tls_inspector.ClientHelloInfo | Sniff | None:
    """The ClientHello's SNI and ALPN; Sniff.NEED_MORE until it is complete; None if it is not a ClientHello."""
    found = tls_inspector.inspect(first)
    if found is tls_inspector.NEED_MORE:
        return Sniff.NEED_MORE
    if isinstance(found, tls_inspector.ClientHelloInfo):
        return found
    return None


def sniff(first: bytes) -> Sniff:
    """What the first bytes of a connection are (as many as have arrived so far)."""
    # BEGIN EXERCISE lab-06
    # TODO: no bytes yet -> NEED_MORE. A TLS connection starts with a handshake record: first[0] is
    #   TLS_HANDSHAKE and first[1] is TLS_MAJOR; anything else is PLAINTEXT (with one byte of 0x16 so far:
    #   NEED_MORE). Then ask client_hello(first): NEED_MORE -> NEED_MORE, None -> PLAINTEXT (not a
    #   ClientHello), else MESH_TLS when MESH_ALPN is among its .alpn, OTHER_TLS otherwise.
    raise NotImplementedError("lab 06: sniff: no bytes yet -> NEED_MORE. A TLS connection starts with a handshake record: first[0] is")
    # END EXERCISE
