"""The agent's SDS server: hands the workload key/certificate and the mesh root to the proxy.

Envoy's Secret Discovery Service (`envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets`),
state of the world, as Istio's agent serves it: over a unix socket in the proxy's own memory-backed
volume (only the proxy container can reach it, unlike anything on localhost, which the app shares),
with two secrets: `default` (the workload's chain + private key) and `ROOTCA` (the root to verify peers).
When the certificate is renewed the new version is pushed on every open stream; the proxy uses it for
new connections and leaves open ones alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from minimesh.security.workload import WorkloadCertificate

log = logging.getLogger(__name__)

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SOCKET_NAME = "sds.sock"


def secrets_for(cert: WorkloadCertificate) -> dict[str, secret_pb2.Secret]:
    """The two SDS secrets of a workload certificate (PEM as inline bytes, as Istio sends them)."""
    return {
        WORKLOAD_SECRET: secret_pb2.Secret(name=WORKLOAD_SECRET, tls_certificate=common_pb2.TlsCertificate(
            certificate_chain={"inline_bytes": cert.cert_chain_pem.encode()},
            private_key={"inline_bytes": cert.key_pem.encode()})),
        ROOT_SECRET: secret_pb2.Secret(name=ROOT_SECRET, validation_context=common_pb2.CertificateValidationContext(
            trusted_ca={"inline_bytes": cert.root_pem.encode()})),
    }


def pack(secrets: list[secret_pb2.Secret]) -> list[any_pb2.Any]:
    out = []
    for s in secrets:
        a = any_pb2.Any()
        a.Pack(s)
        out.append(a)
    return out


class SecretServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self) -> None:
        self.secrets: dict[str, secret_pb2.Secret] = {}
        self.version = 0
        self._streams: set[asyncio.Queue[object]] = set()
        self.pushes = 0
        self.nacks = 0

    def update(self, cert: WorkloadCertificate) -> None:
        """A new certificate: bump the version and push it to every open stream."""
        self.secrets = secrets_for(cert)
        self.version += 1
        for q in self._streams:
            q.put_nowait("update")

    def _response(self, names: tuple[str, ...]) -> discovery_pb2.DiscoveryResponse | None:
        found = [self.secrets[n] for n in names if n in self.secrets]
        if not found:
            return None
        return discovery_pb2.DiscoveryResponse(version_info=str(self.version), type_url=SECRET_TYPE,
                                               nonce=uuid.uuid4().hex[:12], resources=pack(found))

    async def StreamSecrets(self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        q: asyncio.Queue[object] = asyncio.Queue()
        self._streams.add(q)

        async def read() -> None:
            try:
                async for req in request_iterator:
                    q.put_nowait(req)
            finally:
                q.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        names: tuple[str, ...] = ()
        sent: tuple[tuple[str, ...], int] | None = None
        try:
            while True:
                item = await q.get()
                if item is None:
                    return
                if isinstance(item, discovery_pb2.DiscoveryRequest):
                    if item.type_url and item.type_url != SECRET_TYPE:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                            f"this SDS server serves {SECRET_TYPE}, not {item.type_url}")
                    if item.error_detail.code:
                        self.nacks += 1
                        log.warning("sds: the proxy rejected version %s: %s", item.version_info,
                                    item.error_detail.message)
                    names = tuple(sorted(item.resource_names))
                if not names or sent == (names, self.version):
                    continue
                resp = self._response(names)
                if resp is not None:
                    sent = (names, self.version)
                    self.pushes += 1
                    yield resp
        finally:
            self._streams.discard(q)
            reader.cancel()

    async def FetchSecrets(self, request: discovery_pb2.DiscoveryRequest,
                           context: grpc.aio.ServicerContext) -> discovery_pb2.DiscoveryResponse:
        resp = self._response(tuple(request.resource_names))
        if resp is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no certificate yet: the agent is still asking the CA")
        assert resp is not None
        return resp


async def serve(secret_server: SecretServer, socket_path: str | Path) -> grpc.aio.Server:
    """Serve SDS on a unix socket (a stale socket file from a previous run is replaced)."""
    path = Path(socket_path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = grpc.aio.server()
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(secret_server, server)
    if not server.add_insecure_port(f"unix:{path}"):
        raise OSError(f"cannot listen on unix socket {path}")
    await server.start()
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)  # the proxy runs as the agent's user; nobody else needs the private key
    return server
