"""TLS for transport sockets: SSL contexts from PEM, SAN checks, and a TLS channel over peeked bytes.

The downstream side cannot use asyncio's start_tls: the tls_inspector has already read the ClientHello
from the socket. `TlsChannel` runs the TLS state machine over memory BIOs (as asyncio's sslproto does)
on top of a raw `Channel`, so the peeked bytes are simply fed in first. Upstream connections use
`ssl=` on create_connection. No `cryptography` import: certificates are PEM files or strings.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from minimesh.proxy.channel import Channel
from minimesh.proxy.config.tls import CommonTlsContext, DownstreamTlsContext, SanMatcher, UpstreamTlsContext
from minimesh.proxy.secrets import SecretManager, SecretNotReady

_VERSIONS = {"TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}


class PeerVerificationError(ssl.SSLError):
    pass


def _load_pem_pair(ctx: ssl.SSLContext, chain_pem: str, key_pem: str) -> None:
    # ssl wants files: write the PEM to a private temp file in memory, load, delete
    fd, path = tempfile.mkstemp(prefix="minimesh-tls-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(chain_pem.rstrip() + "\n" + key_pem.rstrip() + "\n")
        ctx.load_cert_chain(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _load_chain(ctx: ssl.SSLContext, common: CommonTlsContext, secrets: SecretManager | None) -> None:
    if common.certificate_sds is not None:
        if secrets is None:
            raise SecretNotReady(f"SDS secret {common.certificate_sds.name!r}: this proxy has no SDS")
        found = secrets.certificate(common.certificate_sds)
        _load_pem_pair(ctx, found.chain_pem, found.key_pem)
        return
    if common.certificate_chain is None or common.private_key is None:
        return
    if common.certificate_chain.filename and common.private_key.filename:
        ctx.load_cert_chain(common.certificate_chain.filename, common.private_key.filename)
        return
    _load_pem_pair(ctx, common.certificate_chain.read(), common.private_key.read())


def _has_validation(common: CommonTlsContext) -> bool:
    return common.trusted_ca is not None or common.validation_sds is not None


def _common(ctx: ssl.SSLContext, common: CommonTlsContext, secrets: SecretManager | None) -> None:
    if common.min_version in _VERSIONS:
        ctx.minimum_version = _VERSIONS[common.min_version]
    if common.max_version in _VERSIONS:
        ctx.maximum_version = _VERSIONS[common.max_version]
    _load_chain(ctx, common, secrets)
    if common.validation_sds is not None:
        if secrets is None:
            raise SecretNotReady(f"SDS secret {common.validation_sds.name!r}: this proxy has no SDS")
        ctx.load_verify_locations(cadata=secrets.trusted_ca(common.validation_sds))
    elif common.trusted_ca is not None:
        ctx.load_verify_locations(cadata=common.trusted_ca.read())
    if common.alpn_protocols:
        ctx.set_alpn_protocols(list(common.alpn_protocols))


def server_context(t: DownstreamTlsContext, secrets: SecretManager | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, t.common, secrets)
    if _has_validation(t.common):
        ctx.verify_mode = ssl.CERT_REQUIRED if t.require_client_certificate else ssl.CERT_OPTIONAL
    return ctx


def client_context(t: UpstreamTlsContext, secrets: SecretManager | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the mesh checks SANs (SPIFFE URIs), not host names
    ctx.verify_mode = ssl.CERT_NONE
    _common(ctx, t.common, secrets)
    if _has_validation(t.common):
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_sans(peercert: dict[str, Any] | None, kind: str = "URI") -> tuple[str, ...]:
    return tuple(v for k, v in (peercert or {}).get("subjectAltName", ()) if k == kind)


_SAN_KIND = {"URI": "URI", "DNS": "DNS", "EMAIL": "email", "IP_ADDRESS": "IP Address"}


def check_san(peercert: dict[str, Any], matchers: Iterable[SanMatcher]) -> None:
    """Raise PeerVerificationError unless some SAN of the (verified) peer certificate matches."""
    sans: list[tuple[str, str]] = list(peercert.get("subjectAltName", ())) if peercert else []
    for m in matchers:
        for k, v in sans:
            if (m.san_type == "ANY" or _SAN_KIND.get(m.san_type) == k) and m.matcher.matches(v):
                return
    raise PeerVerificationError(f"peer certificate SANs {[v for _, v in sans]} match none of the allowed SANs")


class TlsChannel:
    """The Channel interface (read/write/drain/close) with TLS in between, over a raw Channel."""

    def __init__(self, raw: Channel, ctx: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None) -> None:
        self.raw = raw
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = ctx.wrap_bio(self._in, self._out, server_side=server_side, server_hostname=server_hostname)
        self._plain: list[bytes] = []
        self._eof = False
        self.closed = raw.closed

    async def handshake(self) -> None:
        while True:
            try:
                self.ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = await self.raw.read()
                if not data:
                    raise ConnectionResetError("connection closed during the TLS handshake") from None
                self._in.write(data)
        self._flush()

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.raw.write(data)

    async def read(self) -> bytes:
        if self._plain:
            data = b"".join(self._plain)
            self._plain = []
            return data
        if self._eof:
            return b""
        while True:
            out = []
            try:
                while True:
                    chunk = self.ssl.read(65536)
                    if not chunk:
                        self._eof = True
                        break
                    out.append(chunk)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True
            self._flush()
            if out:
                return b"".join(out)
            if self._eof:
                return b""
            data = await self.raw.read()
            if not data:
                self._eof = True
                return b""
            self._in.write(data)

    def unread(self, data: bytes) -> None:
        if data:
            self._plain.insert(0, data)

    def write(self, data: bytes) -> None:
        if not self.raw.is_closed:
            self.ssl.write(data)
            self._flush()

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    async def drain(self) -> None:
        await self.raw.drain()

    @property
    def must_drain(self) -> bool:
        return self.raw.must_drain

    def write_eof(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self.ssl.unwrap()
        self._flush()
        self.raw.write_eof()

    def close(self) -> None:
        self.raw.close()

    def abort(self) -> None:
        self.raw.abort()

    @property
    def is_closed(self) -> bool:
        return self.raw.is_closed

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._plain

    @property
    def buffered(self) -> int:
        return sum(len(p) for p in self._plain)

    @property
    def on_eof(self) -> Callable[[], None] | None:
        return self.raw.on_eof

    @on_eof.setter
    def on_eof(self, cb: Callable[[], None] | None) -> None:
        self.raw.on_eof = cb

    @property
    def bytes_read(self) -> int:
        return self.raw.bytes_read

    @property
    def bytes_written(self) -> int:
        return self.raw.bytes_written

    def extra(self, name: str, default: Any = None) -> Any:
        if name == "peercert":
            return self.ssl.getpeercert()
        if name == "ssl_object":
            return self.ssl
        if name == "alpn":
            return self.ssl.selected_alpn_protocol()
        return self.raw.extra(name, default)
