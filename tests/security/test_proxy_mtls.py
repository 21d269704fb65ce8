"""Two real proxies doing mTLS with the push server's config shapes and certificates served over SDS by
the agent's SDS server (unix sockets), issued by the mesh CA: PERMISSIVE, STRICT, auto-mTLS fallback,
SAN checks, renewal without touching open connections."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from minimesh.pilot import mtls
from minimesh.pilot.protocol import Protocol
from minimesh.proxy.config import ConfigError
from minimesh.security import ca, sds, workload
from minimesh.security.certs import sds_cluster
from minimesh.security.identity import Identity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxy"))
from proxy_helpers import (
    LOOPBACK,
    addr,
    bootstrap,
    free_port,
    hcm,
    http_listener,
    raw_exchange,
    route_config,
    running_proxy,
    static_cluster,
    status_of,
    upstreams,
)

from .pki_support import csr, root

DETAILS = Identity("default", "bookinfo-details")
PRODUCTPAGE = Identity("default", "bookinfo-productpage")
HOST = "details.default.svc.cluster.local"
CLUSTER = f"outbound|9080||{HOST}"


def issue(signing: ca.SigningCa, who: Identity) -> workload.WorkloadCertificate:
    now = dt.datetime.now(dt.UTC)
    key, req = csr()
    from .pki_support import key_pem

    return workload.accept_chain(key_pem(key), ca.issue(req, who, signing, now), who, now)


@contextlib.asynccontextmanager
async def secret_server(path: Path, cert: workload.WorkloadCertificate | None) -> AsyncIterator[sds.SecretServer]:
    s = sds.SecretServer()
    if cert is not None:
        s.update(cert)
    server = await sds.serve(s, path)
    try:
        yield s
    finally:
        await server.stop(0)


def inbound_listener(port: int, mode: mtls.Mode) -> dict[str, Any]:
    app = hcm(route_config([{"match": {"prefix": "/"}, "route": {"cluster": f"inbound|{port}||"}}]),
              stat_prefix=f"inbound_0.0.0.0_{port}")
    return {"name": "virtualInbound", "address": addr(LOOPBACK, port), "traffic_direction": "INBOUND",
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector"}],
            "filter_chains": mtls.inbound_chains(port, Protocol.HTTP, mode, app)}


def server_boot(port: int, app_port: int, mode: mtls.Mode, sock: Path) -> dict[str, Any]:
    return bootstrap([inbound_listener(port, mode)], [static_cluster(f"inbound|{port}||", [app_port]),
                                                      sds_cluster(sock)])


def client_boot(server_port: int, sock: Path, identities: tuple[str, ...], tls_mode: bool = True) -> dict[str, Any]:
    cluster = static_cluster(CLUSTER, [])
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": addr(LOOPBACK, server_port)},
         **({"metadata": {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "minimesh"}}}} if tls_mode else {})}]
    cluster = mtls.with_auto_mtls(cluster, 9080, HOST, identities)
    out = http_listener("out", hcm(route_config([{"match": {"prefix": "/"}, "route": {"cluster": CLUSTER}}])))
    return bootstrap([out], [cluster, sds_cluster(sock)])


async def wait_for(what: str, cond: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def get(port: int, path: str = "/details/0") -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://{LOOPBACK}:{port}{path}") as r:
        return r.status, await r.text()


@pytest.fixture(scope="module")
def signing() -> ca.SigningCa:
    return root(dt.datetime.now(dt.UTC))[0]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@contextlib.asynccontextmanager
async def mesh(tmp: Path, signing: ca.SigningCa, mode: mtls.Mode, *, client_cert: bool = True,
               identities: tuple[str, ...] = (DETAILS.uri,), tls_mode: bool = True) -> AsyncIterator[Any]:
    port = free_port()
    async with upstreams("details") as (app,), \
            secret_server(tmp / "server.sock", issue(signing, DETAILS)) as ss, \
            secret_server(tmp / "client.sock", issue(signing, PRODUCTPAGE) if client_cert else None) as cs, \
            running_proxy(server_boot(port, app.port, mode, tmp / "server.sock")) as server, \
            running_proxy(client_boot(port, tmp / "client.sock", identities, tls_mode)) as client:
        await wait_for("the server's certificate over SDS", lambda: "default" in server.secrets.secrets)
        if client_cert:
            await wait_for("the client's certificate over SDS", lambda: "ROOTCA" in client.secrets.secrets)
        yield type("Mesh", (), {"port": port, "app": app, "server": server, "client": client, "ss": ss, "cs": cs,
                                "out": client.listener_port("out")})


def test_permissive_serves_mtls_from_sidecars_and_plaintext_from_anyone(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        async with mesh(tmp_path, signing, mtls.Mode.PERMISSIVE) as m:
            assert (await get(m.out))[0] == 200
            info = m.server.access_log.recent()[-1]
            assert info.peer_uri_san == PRODUCTPAGE.uri
            assert info.sni == f"outbound_.9080_._.{HOST}"
            assert m.server.stats.get(f"http.inbound_0.0.0.0_{m.port}.downstream_rq_2xx") >= 1
            raw = await raw_exchange(m.port, b"GET /plain HTTP/1.1\r\nHost: details\r\nConnection: close\r\n\r\n")
            assert status_of(raw) == 200
            assert m.server.access_log.recent()[-1].peer_uri_san == ""
    run(main())


def test_strict_refuses_plaintext_and_clients_without_a_mesh_certificate(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        async with mesh(tmp_path, signing, mtls.Mode.STRICT) as m:
            assert (await get(m.out))[0] == 200
            assert m.client.stats.get(f"cluster.{CLUSTER}.ssl.handshake") == 1
            raw = await raw_exchange(m.port, b"GET /plain HTTP/1.1\r\nHost: details\r\nConnection: close\r\n\r\n")
            assert raw == b""  # closed without an answer
            # TLS with the mesh ALPN but no client certificate: the handshake is refused
            ctx = ssl.create_default_context(cadata=signing.cert_pem)
            ctx.check_hostname = False
            ctx.set_alpn_protocols(["minimesh"])
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                r, w = await asyncio.open_connection(LOOPBACK, m.port, ssl=ctx)
                w.write(b"GET / HTTP/1.1\r\nHost: d\r\n\r\n")
                await w.drain()
                await r.readexactly(1)
            assert m.app.requests == 1
    run(main())


def test_a_server_with_the_wrong_identity_is_rejected(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        wanted = ("spiffe://cluster.local/ns/default/sa/bookinfo-reviews",)
        async with mesh(tmp_path, signing, mtls.Mode.PERMISSIVE, identities=wanted) as m:
            status, body = await get(m.out)
            assert status == 503 and "match none of the allowed SANs" in body
            assert m.client.access_log.recent()[-1].flags_text() == "UF"
            assert m.client.stats.get(f"cluster.{CLUSTER}.ssl.fail_verify_san") >= 1
            assert m.app.requests == 0
    run(main())


def test_without_a_certificate_auto_mtls_stays_plaintext(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        async with mesh(tmp_path, signing, mtls.Mode.PERMISSIVE, client_cert=False) as m:
            assert (await get(m.out))[0] == 200
            assert m.server.access_log.recent()[-1].peer_uri_san == ""  # it came in plaintext
            assert m.client.stats.get(f"cluster.{CLUSTER}.transport_socket_match.no_certificate_plaintext") >= 1
            # the certificate arrives: pooled plaintext connections are not reused, the next request is mTLS
            m.cs.update(issue(signing, PRODUCTPAGE))
            await wait_for("the client's certificate", lambda: "default" in m.client.secrets.secrets)
            assert (await get(m.out))[0] == 200
            assert m.server.access_log.recent()[-1].peer_uri_san == PRODUCTPAGE.uri
    run(main())


def test_endpoints_without_a_sidecar_get_plaintext(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        async with mesh(tmp_path, signing, mtls.Mode.PERMISSIVE, tls_mode=False) as m:
            assert (await get(m.out))[0] == 200
            assert m.server.access_log.recent()[-1].peer_uri_san == ""
    run(main())


def _serial(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


async def _server_serial(port: int, client: workload.WorkloadCertificate, tmp: Path) -> int:
    (tmp / "c.pem").write_text(client.cert_chain_pem + client.key_pem)
    ctx = ssl.create_default_context(cadata=client.root_pem)
    ctx.check_hostname = False
    ctx.load_cert_chain(str(tmp / "c.pem"))
    ctx.set_alpn_protocols(["minimesh"])
    _, w = await asyncio.open_connection(LOOPBACK, port, ssl=ctx)
    der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    w.close()
    return _serial(der)


def test_renewal_changes_new_connections_only(tmp_path: Path, signing: ca.SigningCa) -> None:
    async def main() -> None:
        async with mesh(tmp_path, signing, mtls.Mode.STRICT) as m:
            me = issue(signing, PRODUCTPAGE)
            first = await _server_serial(m.port, me, tmp_path)
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://{LOOPBACK}:{m.out}/a") as r:
                    assert r.status == 200
                generation = m.server.secrets.generation
                renewed = issue(signing, DETAILS)
                m.ss.update(renewed)
                await wait_for("the renewed certificate", lambda: m.server.secrets.generation > generation)
                assert await _server_serial(m.port, me, tmp_path) == renewed.serial != first
                for _ in range(3):  # the client's pooled connection (made with the old certificate) goes on
                    async with s.get(f"http://{LOOPBACK}:{m.out}/b") as r:
                        assert r.status == 200
            assert m.client.stats.get(f"cluster.{CLUSTER}.upstream_cx_total") == 1
    run(main())


def test_sds_cluster_must_exist() -> None:
    from minimesh.proxy.config import parse_bootstrap
    from minimesh.proxy.server import Proxy

    boot = client_boot(1, Path("/nonexistent.sock"), (DETAILS.uri,))
    boot["static_resources"]["clusters"] = [c for c in boot["static_resources"]["clusters"] if c["name"] != "sds-grpc"]

    async def main() -> None:
        p = Proxy(parse_bootstrap(boot))
        with pytest.raises(ConfigError, match="comes from cluster 'sds-grpc', which is not a static cluster with a pipe"):
            await p.start()
        await p.stop()
    run(main())
