"""The CA's gRPC service (Istio's istio.v1.auth.IstioCertificateService/CreateCertificate), on 15012 over TLS.

One call: `authorization: Bearer <token>` metadata + a CSR → the certificate chain [leaf, root]. The token
is checked with a TokenReview (audience minimesh-ca); the identity signed into the certificate is the
service account the API server names, never anything from the request. Errors say what to do:
UNAUTHENTICATED (no token, a token the API server rejects, the wrong audience), PERMISSION_DENIED (a
token that is not a service account's), INVALID_ARGUMENT (a CSR the CA will not sign), UNIMPLEMENTED
(lab 06's `sign_csr` not written yet), UNAVAILABLE (the API server cannot be asked right now).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc

from minimesh.security import ca
from minimesh.security.authn import AuthError, bearer_token
from minimesh.security.identity import Identity
from minimesh.security.proto import ca_pb2, ca_pb2_grpc

log = logging.getLogger(__name__)

PORT = 15012
SERVICE_NAME = "istio.v1.auth.IstioCertificateService"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class CaStats:
    issued: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # by gRPC status name
    issue_seconds: list[float] = field(default_factory=list)  # last 1000 issuance times (review + sign)

    def record(self, seconds: float) -> None:
        self.issued += 1
        self.issue_seconds.append(seconds)
        del self.issue_seconds[:-1000]


class CertificateService(ca_pb2_grpc.IstioCertificateServiceServicer):
    """`identify(token) -> Identity` is blocking (a TokenReview): it runs in a thread."""

    def __init__(self, signing_ca: ca.SigningCa, identify: Callable[[str], Identity],
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.ca = signing_ca
        self.identify = identify
        self.clock = clock
        self.stats = CaStats()

    async def CreateCertificate(self, request: ca_pb2.IstioCertificateRequest,
                                context: grpc.aio.ServicerContext) -> ca_pb2.IstioCertificateResponse:
        start = time.monotonic()
        peer = context.peer()
        code, message = grpc.StatusCode.INTERNAL, ""
        try:
            token = bearer_token(context.invocation_metadata() or ())
            identity = await asyncio.to_thread(self.identify, token)
            ttl = dt.timedelta(seconds=request.validity_duration) if request.validity_duration > 0 else None
            chain = ca.issue(request.csr, identity, self.ca, self.clock(), ttl)
        except AuthError as e:
            code, message = getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNAUTHENTICATED), e.message
        except ca.CsrError as e:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, f"bad CSR: {e}"
        except NotImplementedError as e:
            code, message = grpc.StatusCode.UNIMPLEMENTED, (
                f"the mesh CA cannot sign yet ({e}): write sign_csr in minimesh/security/ca.py (or `minimesh lab"
                " solve 06`), then restart minimeshd: minimesh rollout restart -n mesh-system deploy/minimeshd")
        except ca.CaError as e:
            code, message = grpc.StatusCode.INTERNAL, f"the CA failed: {e}"
        else:
            took = time.monotonic() - start
            self.stats.record(took)
            log.info("ca: issued a certificate for %s to %s (%.1f ms)", identity, peer, took * 1000)
            return ca_pb2.IstioCertificateResponse(cert_chain=chain)
        self.stats.failures[code.name] += 1
        log.warning("ca: %s for %s: %s", code.name, peer, message)
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")


async def serve(service: CertificateService, listen: str, port: int, cert_pem: bytes,
                key_pem: bytes) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server with TLS (the serving certificate of minimeshd.mesh-system.svc)."""
    server = grpc.aio.server()
    ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(service, server)
    creds = grpc.ssl_server_credentials([(key_pem, cert_pem)])
    bound = server.add_secure_port(f"{listen}:{port}", creds)
    if not bound:
        raise OSError(f"cannot listen on {listen}:{port}")
    await server.start()
    return server, bound
