"""The agent's side of the CA call: CreateCertificate over TLS, authenticated by the pod's token.

The CA's serving certificate is verified against the mesh root mounted from ConfigMap
minimesh-ca-root-cert, and its name must match the address dialled (minimeshd.mesh-system.svc), so the
token is only ever sent to the real CA.
"""

from __future__ import annotations

import os

# getaddrinfo (the pod's hosts file and resolv.conf) rather than gRPC's own DNS client
os.environ.setdefault("GRPC_DNS_RESOLVER", "native")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # C-core INFO lines (GOAWAY...) are noise in the proxy container's log

import grpc

from minimesh.security.proto import ca_pb2, ca_pb2_grpc

DEFAULT_ADDRESS = "minimeshd.mesh-system.svc:15012"


class CaCallError(RuntimeError):
    """The CA said no, or could not be reached; `code` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def create_certificate(address: str, root_pem: bytes, token: str, csr_pem: str, ttl_seconds: int = 0,
                             timeout: float = 10.0, server_name: str | None = None) -> list[str]:
    """The PEM chain [leaf, ..., root] for this CSR; raises CaCallError."""
    creds = grpc.ssl_channel_credentials(root_certificates=root_pem)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    async with grpc.aio.secure_channel(address, creds, options=options) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        try:
            resp = await stub.CreateCertificate(
                ca_pb2.IstioCertificateRequest(csr=csr_pem, validity_duration=ttl_seconds),
                metadata=(("authorization", f"Bearer {token}"),) if token else (), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise CaCallError(e.code().name, e.details() or "") from None
    if not resp.cert_chain:
        raise CaCallError("INTERNAL", "the CA answered with an empty certificate chain")
    return list(resp.cert_chain)
