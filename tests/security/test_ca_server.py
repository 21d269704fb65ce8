"""The CA over real gRPC/TLS, authenticating real service-account tokens with the API server's TokenReview."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from cryptography import x509

from minimesh.security import ca, ca_server
from minimesh.security.authn import TokenReviewer
from minimesh.security.ca_client import CaCallError, create_certificate

from .conftest import SERVER_NAME, Api, MeshPki
from .pki_support import csr


async def _with_ca(api: Api, mesh_pki: MeshPki, calls: Any) -> Any:
    signing = ca.load_signing_ca(mesh_pki.ca_cert, mesh_pki.ca_key)
    reviewer = TokenReviewer(api.client())
    service = ca_server.CertificateService(signing, reviewer.identify)
    server, port = await ca_server.serve(service, "127.0.0.1", 0, mesh_pki.serving_cert, mesh_pki.serving_key)
    try:
        return await calls(f"127.0.0.1:{port}", service)
    finally:
        await server.stop(0)


def _call(addr: str, mesh_pki: MeshPki, token: str, csr_pem: str, ttl: int = 0) -> Any:
    return create_certificate(addr, mesh_pki.ca_cert, token, csr_pem, ttl, server_name=SERVER_NAME)


def test_issues_for_the_token_owner_not_for_what_the_csr_asks(api: Api, mesh_pki: MeshPki) -> None:
    ns = api.namespace()
    api.service_account(ns, "bookinfo-details")
    token = api.token(ns, "bookinfo-details")
    _, req = csr(uri=f"spiffe://cluster.local/ns/{ns}/sa/admin")

    async def calls(addr: str, service: ca_server.CertificateService) -> list[str]:
        return await _call(addr, mesh_pki, token, req, 60)

    chain = asyncio.run(_with_ca(api, mesh_pki, calls))
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == [f"spiffe://cluster.local/ns/{ns}/sa/bookinfo-details"]
    assert chain[-1].encode() == mesh_pki.ca_cert
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc) == dt.timedelta(seconds=60) + ca.BACKDATE


def test_errors_say_what_to_do(api: Api, mesh_pki: MeshPki) -> None:
    ns = api.namespace()
    api.service_account(ns, "sleep")
    good = api.token(ns, "sleep")
    wrong_audience = api.token(ns, "sleep", audience="https://kubernetes.default.svc.cluster.local")
    admin = api.cluster.srv.pki.token  # authenticated, but not a workload
    _, req = csr()

    async def calls(addr: str, service: ca_server.CertificateService) -> dict[str, CaCallError]:
        out = {}
        for name, token, pem in (("no token", "", req), ("garbage token", "not-a-jwt", req),
                                 ("wrong audience", wrong_audience, req), ("admin", admin, req),
                                 ("bad csr", good, "-----BEGIN CERTIFICATE REQUEST-----\nxx\n")):
            with pytest.raises(CaCallError) as e:
                await _call(addr, mesh_pki, token, pem)
            out[name] = e.value
        assert service.stats.issued == 0 and sum(service.stats.failures.values()) == 5
        return out

    errors = asyncio.run(_with_ca(api, mesh_pki, calls))
    assert errors["no token"].code == "UNAUTHENTICATED"
    assert "authorization: Bearer" in errors["no token"].message
    assert errors["garbage token"].code == "UNAUTHENTICATED"
    assert "rejected by the API server's TokenReview" in errors["garbage token"].message
    assert errors["wrong audience"].code == "UNAUTHENTICATED"
    assert "minimesh-ca" in errors["wrong audience"].message
    assert errors["admin"].code == "PERMISSION_DENIED"
    assert "kubernetes-admin" in errors["admin"].message
    assert errors["bad csr"].code == "INVALID_ARGUMENT" and "bad CSR" in errors["bad csr"].message


def test_the_client_only_talks_to_the_real_ca(api: Api, mesh_pki: MeshPki) -> None:
    """A CA server whose certificate the mesh root did not sign never sees the token."""
    from minimesh.install import pki

    rogue = pki.new_root_ca(dt.datetime.now(dt.UTC))
    ns = api.namespace()
    api.service_account(ns, "sleep")
    token = api.token(ns, "sleep")

    async def calls(addr: str, service: ca_server.CertificateService) -> None:
        with pytest.raises(CaCallError) as e:
            await create_certificate(addr, rogue.cert_pem, token, csr()[1], server_name=SERVER_NAME, timeout=3)
        assert e.value.code == "UNAVAILABLE"
        assert service.stats.issued == 0 and not service.stats.failures  # the call never reached the service

    asyncio.run(_with_ca(api, mesh_pki, calls))
