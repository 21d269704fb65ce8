"""The agent's side end to end: token + root files → CSR to the real CA → SDS on a unix socket → renewal."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from minimesh.security import ca, ca_server, sds, workload
from minimesh.security.authn import TokenReviewer
from minimesh.security.certs import Settings, SettingsError, WorkloadIdentity, parse_ttl, sds_cluster
from minimesh.security.identity import Identity

from .conftest import SERVER_NAME, Api, MeshPki


def test_settings_from_env() -> None:
    s = Settings.from_env({"POD_NAMESPACE": "default", "SERVICE_ACCOUNT": "sleep", "MESH_CERT_TTL": "2m"})
    assert s.identity == Identity("default", "sleep") and s.ttl_seconds == 120
    assert s.ca_address == "minimeshd.mesh-system.svc:15012"
    with pytest.raises(SettingsError, match="SERVICE_ACCOUNT not set"):
        Settings.from_env({"POD_NAMESPACE": "default"})
    with pytest.raises(SettingsError, match="MESH_CERT_TTL='soon'"):
        Settings.from_env({"POD_NAMESPACE": "d", "SERVICE_ACCOUNT": "s", "MESH_CERT_TTL": "soon"})
    assert parse_ttl("24h") == 86400 and parse_ttl("90") == 90
    s = Settings.from_env({"POD_NAMESPACE": "d", "SERVICE_ACCOUNT": "s", "MESH_CERT_TTL": "1h"},
                          {"security.minimesh.io/cert-ttl": "20s"})
    assert s.ttl_seconds == 20
    with pytest.raises(SettingsError, match=r"annotation security\.minimesh\.io/cert-ttl='x'"):
        Settings.from_env({"POD_NAMESPACE": "d", "SERVICE_ACCOUNT": "s"}, {"security.minimesh.io/cert-ttl": "x"})


def test_rotation_time_is_half_the_life_from_arrival() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    c = workload.WorkloadCertificate("k", ("leaf", "root"), "spiffe://x", 1, t0 - dt.timedelta(minutes=1),
                                     t0 + dt.timedelta(seconds=60), t0)
    assert c.rotate_at() == t0 + dt.timedelta(seconds=30)
    assert c.rotate_at(0.05) == t0 + dt.timedelta(seconds=33)


def test_sds_cluster_is_a_pipe_the_proxy_accepts() -> None:
    from minimesh.proxy.config import parse_bootstrap

    c = sds_cluster("/etc/minimesh/proxy/sds.sock")
    assert c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "pipe": {"path": "/etc/minimesh/proxy/sds.sock"}}
    wid = WorkloadIdentity.from_env("/etc/minimesh/proxy", {"POD_NAMESPACE": "default", "SERVICE_ACCOUNT": "sleep"})
    boot: dict[str, Any] = {"node": {"id": "x"}}
    wid.contribute(boot)
    parsed = parse_bootstrap(boot)
    assert [c.name for c in parsed.clusters] == ["sds-grpc"]


async def _stream(socket: Path, names: list[str], want: int, node_id: str = "sidecar~1.2.3.4~p.ns~ns.svc.cluster.local") -> list[Any]:
    """Subscribe like the proxy, ACK each response, return the first `want` responses."""
    async with grpc.aio.insecure_channel(f"unix:{socket}") as ch:
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(ch)
        q: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        first = discovery_pb2.DiscoveryRequest(type_url=sds.SECRET_TYPE, resource_names=names)
        first.node.id = node_id
        q.put_nowait(first)

        async def requests() -> Any:
            while True:
                yield await q.get()

        call = stub.StreamSecrets(requests())
        got = []
        async for resp in call:
            got.append(resp)
            q.put_nowait(discovery_pb2.DiscoveryRequest(type_url=sds.SECRET_TYPE, resource_names=names,
                                                        version_info=resp.version_info, response_nonce=resp.nonce))
            if len(got) == want:
                call.cancel()
                break
        return got


def _unpack(resp: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for a in resp.resources:
        s = secret_pb2.Secret()
        a.Unpack(s)
        out[s.name] = s
    return out


@pytest.mark.timeout(120)
def test_certificates_from_the_ca_over_sds_and_renewed(api: Api, mesh_pki: MeshPki, tmp_path: Path) -> None:
    ns = api.namespace()
    api.service_account(ns, "bookinfo-details")
    (tmp_path / "token").write_text(api.token(ns, "bookinfo-details"))
    (tmp_path / "root-cert.pem").write_bytes(mesh_pki.ca_cert)

    async def go() -> tuple[list[Any], WorkloadIdentity]:
        signing = ca.load_signing_ca(mesh_pki.ca_cert, mesh_pki.ca_key)
        service = ca_server.CertificateService(signing, TokenReviewer(api.client()).identify)
        server, port = await ca_server.serve(service, "127.0.0.1", 0, mesh_pki.serving_cert, mesh_pki.serving_key)
        settings = Settings(Identity(ns, "bookinfo-details"), f"127.0.0.1:{port}", 10, str(tmp_path / "token"),
                            str(tmp_path / "root-cert.pem"), SERVER_NAME)
        wid = WorkloadIdentity(settings, tmp_path / "sds.sock")
        await wid.start()
        try:
            # two versions: the first certificate, then its renewal at half of the 10 s life
            responses = await asyncio.wait_for(_stream(wid.socket_path, ["default", "ROOTCA"], 2), 30)
        finally:
            await wid.stop()
            await server.stop(0)
        return responses, wid

    responses, wid = asyncio.run(go())
    assert [r.version_info for r in responses] == ["1", "2"]
    certs = []
    for r in responses:
        secrets = _unpack(r)
        assert set(secrets) == {"default", "ROOTCA"}
        assert secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes == mesh_pki.ca_cert
        chain = secrets["default"].tls_certificate.certificate_chain.inline_bytes
        assert b"PRIVATE KEY" in secrets["default"].tls_certificate.private_key.inline_bytes
        certs.append(x509.load_pem_x509_certificate(chain))
    assert certs[0].serial_number != certs[1].serial_number
    assert certs[0].public_key() != certs[1].public_key()  # a new key on every renewal
    for c in certs:
        uris = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
        assert uris == [f"spiffe://cluster.local/ns/{ns}/sa/bookinfo-details"]
    assert wid.manager.issued == 2 and wid.manager.failures == 0
    assert not wid.socket_path.exists()


@pytest.mark.timeout(60)
def test_without_a_root_the_agent_waits_and_says_why(tmp_path: Path) -> None:
    settings = Settings(Identity("default", "sleep"), "127.0.0.1:1", 0, str(tmp_path / "token"),
                        str(tmp_path / "missing-root.pem"))

    async def go() -> WorkloadIdentity:
        wid = WorkloadIdentity(settings, tmp_path / "sds.sock")
        await wid.start()
        await asyncio.sleep(0.3)
        await wid.stop()
        return wid

    wid = asyncio.run(go())
    assert wid.manager.current is None and wid.manager.failures >= 1
    assert "missing-root.pem is not there" in (wid.manager.last_error or "")
    assert wid.status()["certificate"] is None
