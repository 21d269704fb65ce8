"""Listener behaviour: the virtual outbound hand-off, TCP proxying, TLS inspection and mTLS transport sockets."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from proxy_helpers import (
    LOOPBACK,
    addr,
    bootstrap,
    hcm,
    http_listener,
    raw_exchange,
    raw_server,
    route_config,
    running_proxy,
    static_cluster,
    status_of,
    upstreams,
)

from minimesh.proxy.config import Snapshot, parse_resource
from minimesh.proxy.config.snapshot import LISTENER_TYPE


def run(coro: Any) -> Any:
    return asyncio.run(coro)


ROUTE_ALL = route_config([{"match": {"prefix": "/"}, "route": {"cluster": "c"}}])


def test_virtual_outbound_hands_off_by_destination() -> None:
    """Without iptables the original destination is the local address; a listener 0.0.0.0:<port> that is not
    bound (bind_to_port: false, like Istio's per-port listeners) gets the connection."""
    async def main() -> None:
        async with upstreams("a") as (a,):
            virtual = {"name": "virtualOutbound", "address": addr(LOOPBACK, 0), "use_original_dst": True}
            async with running_proxy(bootstrap([virtual], [static_cluster("c", [a.port])])) as p:
                port = p.listener_port("virtualOutbound")
                # nothing matches yet and the connection was not redirected: closed, not looped back to itself
                raw = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=2)
                assert raw == b""
                assert p.stats.get("listener.127.0.0.1_0.no_filter_chain_match") == 1
                per_port = parse_resource(LISTENER_TYPE, {**http_listener(f"0.0.0.0_{port}", hcm(ROUTE_ALL), port=port),
                                                          "address": addr("0.0.0.0", port), "bind_to_port": False})
                await p.apply(Snapshot(listeners=(per_port,)))
                raw = await raw_exchange(port, b"GET /via HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert status_of(raw) == 200 and b'"path": "/via"' in raw
                assert p.stats.get("listener.127.0.0.1_0.downstream_cx_redirected") == 1
                assert p.stats.get(f"listener.0.0.0.0_{port}.downstream_cx_total") == 1
    run(main())


def test_tcp_proxy_copies_both_ways_with_half_close() -> None:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read()  # until the client's half-close
        w.write(data.upper())
        await w.drain()

    async def main() -> None:
        async with raw_server(echo) as port_up:
            lst = {"name": "tcp", "address": addr(LOOPBACK, 0), "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.tcp_proxy", "typed_config": {"stat_prefix": "db", "cluster": "c"}}]}]}
            async with running_proxy(bootstrap([lst], [static_cluster("c", [port_up])])) as p:
                raw = await raw_exchange(p.listener_port("tcp"), b"not http at all\x00\x01", close_after=True)
                assert raw == b"NOT HTTP AT ALL\x00\x01"
                for _ in range(50):
                    if p.access_log.recent():
                        break
                    await asyncio.sleep(0.02)
                info = p.access_log.recent()[-1]
                assert (info.method, info.bytes_received, info.bytes_sent) == ("", 17, 17)
                assert p.stats.get("tcp.db.downstream_cx_total") == 1
    run(main())


# --- TLS ------------------------------------------------------------------------------------------
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(k: ec.EllipticCurvePrivateKey) -> str:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()


def make_pki(tmp: Path) -> dict[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "minimesh-test")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    out = {"ca": ca.public_bytes(serialization.Encoding.PEM).decode()}
    for who in ("details", "productpage"):
        k = _key()
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name).public_key(k.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                    f"spiffe://cluster.local/ns/default/sa/{who}")]), critical=True)
                .sign(ca_key, hashes.SHA256()))
        (tmp / f"{who}.pem").write_text(cert.public_bytes(serialization.Encoding.PEM).decode())
        (tmp / f"{who}.key").write_text(_pem_key(k))
        out[who] = str(tmp / f"{who}.pem")
        out[f"{who}_key"] = str(tmp / f"{who}.key")
    return out


def _tls_common(pki: dict[str, str], who: str) -> dict[str, Any]:
    return {"tls_certificates": [{"certificate_chain": {"filename": pki[who]}, "private_key": {"filename": pki[f"{who}_key"]}}],
            "validation_context": {"trusted_ca": {"inline_string": pki["ca"]}}}


def test_permissive_inbound_with_mtls_and_an_mtls_client_cluster(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def main() -> None:
        async with upstreams("app") as (app,):
            tls_socket = {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": _tls_common(pki, "details"), "require_client_certificate": True}}
            inbound = {"name": "virtualInbound", "address": addr(LOOPBACK, 0), "traffic_direction": "INBOUND",
                       "listener_filters": [{"name": "envoy.filters.listener.tls_inspector"}],
                       "filter_chains": [
                           {"filter_chain_match": {"transport_protocol": "tls"}, "transport_socket": tls_socket,
                            "filters": [hcm(ROUTE_ALL, stat_prefix="inbound_mtls")]},
                           {"filter_chain_match": {"transport_protocol": "raw_buffer"},
                            "filters": [hcm(ROUTE_ALL, stat_prefix="inbound_plain")]}]}
            boot = bootstrap([inbound], [static_cluster("c", [app.port])])
            boot["node"]["metadata"] = {"WORKLOAD_NAME": "details-v1", "NAMESPACE": "default"}
            async with running_proxy(boot) as pin:
                port = pin.listener_port("virtualInbound")
                # PERMISSIVE: plaintext still works
                raw = await raw_exchange(port, b"GET /plain HTTP/1.1\r\nHost: details\r\nConnection: close\r\n\r\n")
                assert status_of(raw) == 200
                assert pin.stats.get("http.inbound_plain.downstream_rq_2xx") == 1
                # a TLS client without a certificate is refused
                ctx = ssl.create_default_context(cadata=pki["ca"])
                ctx.check_hostname = False
                try:
                    r, w = await asyncio.open_connection(LOOPBACK, port, ssl=ctx)
                    w.write(b"GET / HTTP/1.1\r\nHost: d\r\n\r\n")
                    assert await r.read() == b""
                except (ssl.SSLError, ConnectionError):
                    pass
                # an mTLS client cluster (the outbound side of the mesh), checking the server's SPIFFE id
                def client_cluster(name: str, san: str) -> dict[str, Any]:
                    return static_cluster(name, [port], transport_socket={"name": "envoy.transport_sockets.tls", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": "details.default.svc.cluster.local",
                        "common_tls_context": {**_tls_common(pki, "productpage"), "validation_context": {
                            "trusted_ca": {"filename": str(tmp_path / "ca.pem")},
                            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": san}}]}}}})
                (tmp_path / "ca.pem").write_text(pki["ca"])
                routes = [{"match": {"prefix": "/good"}, "route": {"cluster": "good"}},
                          {"match": {"prefix": "/bad"}, "route": {"cluster": "bad"}}]
                out_boot = bootstrap([http_listener("out", hcm(route_config(routes)))], [
                    client_cluster("good", "spiffe://cluster.local/ns/default/sa/details"),
                    client_cluster("bad", "spiffe://cluster.local/ns/default/sa/somebody-else")])
                async with running_proxy(out_boot) as pout, aiohttp.ClientSession() as s:
                    url = f"http://{LOOPBACK}:{pout.listener_port('out')}"
                    async with s.get(url + "/good") as resp:
                        assert resp.status == 200
                    async with s.get(url + "/bad") as resp:
                        assert resp.status == 503 and "match none of the allowed SANs" in await resp.text()
                    assert pout.access_log.recent()[-1].flags_text() == "UF"
                info = pin.access_log.recent()[-1]
                assert info.sni == "details.default.svc.cluster.local" and info.response_code == 200
                prom = pin.admin.handle("GET", "/stats/prometheus")[2].decode()
                line = next(x for x in prom.splitlines() if "inbound" not in x and x.startswith("istio_requests_total{")
                            and 'connection_security_policy="mutual_tls"' in x)
                assert 'source_principal="cluster.local/ns/default/sa/productpage"' in line
    run(main())
