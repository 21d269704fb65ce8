"""Cluster DNS: the resolver's answers, then the server over real UDP and TCP on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct

from dnslib import QTYPE, RCODE, DNSRecord

from minimesh.cluster.local.node.dns_resolver import Index, Resolver
from minimesh.cluster.local.node.dns_server import ClusterDns
from minimesh.k8s.aclient import Informer

SERVICES = [
    {"metadata": {"name": "details", "namespace": "default"},
     "spec": {"clusterIP": "10.96.5.5", "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]}},
    {"metadata": {"name": "db", "namespace": "shop"},
     "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
]
SLICES = [
    {"metadata": {"name": "db-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
     "addressType": "IPv4",
     "endpoints": [{"addresses": ["10.244.0.8"], "hostname": "db-0", "conditions": {"ready": True}},
                   {"addresses": ["10.244.0.9"], "conditions": {"ready": True}},
                   {"addresses": ["10.244.0.10"], "conditions": {"ready": False}}]},
]


def ask(resolver: Resolver, name: str, qtype: str = "A") -> DNSRecord:
    return resolver.answer(DNSRecord.question(name, qtype))


def answers(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


def test_service_pod_srv_ptr_and_nxdomain() -> None:
    pods = [{"metadata": {"name": "web", "namespace": "shop"}, "spec": {},
             "status": {"phase": "Running", "podIP": "10.244.0.42"}}]
    r = Resolver(Index.build(SERVICES, SLICES, pods=pods))
    assert answers(ask(r, "details.default.svc.cluster.local")) == ["10.96.5.5"]
    assert answers(ask(r, "db.shop.svc.cluster.local")) == ["10.244.0.8", "10.244.0.9"]  # headless: ready only
    assert answers(ask(r, "db-0.db.shop.svc.cluster.local")) == ["10.244.0.8"]
    assert answers(ask(r, "10-244-0-7.default.pod.cluster.local")) == ["10.244.0.7"]
    srv = ask(r, "_http._tcp.details.default.svc.cluster.local", "SRV")
    assert [(rr.rdata.port, str(rr.rdata.target)) for rr in srv.rr] == [(9080, "details.default.svc.cluster.local.")]
    assert answers(ask(r, "5.5.96.10.in-addr.arpa", "PTR")) == ["details.default.svc.cluster.local."]
    assert answers(ask(r, "8.0.244.10.in-addr.arpa", "PTR")) == ["db-0.db.shop.svc.cluster.local."]
    assert answers(ask(r, "42.0.244.10.in-addr.arpa", "PTR")) == ["10-244-0-42.shop.pod.cluster.local."]
    assert ask(r, "43.0.244.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    # the search path of a pod in "default" tries these first: they must not exist
    for name in ("details.default.default.svc.cluster.local", "details.svc.cluster.local", "details.cluster.local",
                 "nope.default.svc.cluster.local", "example.com"):
        reply = ask(r, name)
        assert reply.header.rcode == RCODE.NXDOMAIN, name
        assert reply.auth and reply.auth[0].rtype == QTYPE.SOA
    # an existing name asked for AAAA: NODATA (NOERROR, no answers), so resolvers do not give up on A
    nodata = ask(r, "details.default.svc.cluster.local", "AAAA")
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr


def test_server_answers_over_udp_and_tcp_and_follows_changes() -> None:
    async def go() -> None:
        services, slices = Informer(None, "/services"), Informer(None, "/slices")  # type: ignore[arg-type]
        services.cache = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in SERVICES}
        slices.cache = {"shop/db-1": SLICES[0]}
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        dns = ClusterDns(services, slices, "127.0.0.1", port)
        await dns.start()
        loop = asyncio.get_running_loop()
        try:
            def udp(name: str) -> DNSRecord:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(3)
                    s.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", port))
                    return DNSRecord.parse(s.recv(4096))

            def tcp(name: str) -> DNSRecord:
                with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                    q = DNSRecord.question(name).pack()
                    s.sendall(struct.pack("!H", len(q)) + q)
                    n = struct.unpack("!H", s.recv(2))[0]
                    data = b""
                    while len(data) < n:
                        data += s.recv(n - len(data))
                    return DNSRecord.parse(data)

            assert answers(await loop.run_in_executor(None, udp, "details.default.svc.cluster.local")) == ["10.96.5.5"]
            assert answers(await loop.run_in_executor(None, tcp, "details.default.svc.cluster.local")) == ["10.96.5.5"]
            # a new service shows up at once (the informer handler rebuilds the index)
            new = {"metadata": {"name": "reviews", "namespace": "default"}, "spec": {"clusterIP": "10.96.6.6", "ports": []}}
            services.cache["default/reviews"] = new
            for h in services.handlers:
                await h("ADDED", new, None)
            assert answers(await loop.run_in_executor(None, udp, "reviews.default.svc.cluster.local")) == ["10.96.6.6"]
        finally:
            await dns.stop()

    asyncio.run(go())
