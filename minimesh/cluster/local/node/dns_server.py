"""The cluster DNS server: UDP and TCP on <node_ip>:53 in the node netns, answers from informer caches.

The kube-dns Service (10.96.0.10) DNATs here through kube-proxy's rules, as CoreDNS pods would be.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from dnslib import RCODE, DNSError, DNSRecord

from minimesh.cluster.local.node.dns_resolver import Index, Resolver
from minimesh.k8s.aclient import Informer

log = logging.getLogger(__name__)


class ClusterDns:
    def __init__(self, services: Informer, slices: Informer, host: str, port: int = 53, pods: Informer | None = None):
        self.services = services
        self.slices = slices
        self.pods = pods
        self.host = host
        self.port = port
        self.resolver = Resolver(Index())
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.base_events.Server | None = None
        self.queries = 0
        for inf in (services, slices, *([pods] if pods else [])):
            inf.add_handler(self._changed)

    async def _changed(self, typ: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.rebuild()

    def rebuild(self) -> None:
        self.resolver.index = Index.build(self.services.items(), self.slices.items(),
                                          pods=self.pods.items() if self.pods else None)

    def handle(self, data: bytes) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except (DNSError, IndexError, struct.error):
            return None
        self.queries += 1
        try:
            return self.resolver.answer(request).pack()
        except Exception:  # a malformed question must never take the server down
            log.exception("DNS answer failed")
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()

    async def start(self) -> None:
        self.rebuild()
        loop = asyncio.get_running_loop()
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport  # type: ignore[assignment]

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                out = server.handle(data)
                if out is not None:
                    self.transport.sendto(out, addr)  # type: ignore[attr-defined]

        self.udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.host, self.port))

        async def tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readexactly(2)
                    data = await reader.readexactly(struct.unpack("!H", head)[0])
                    out = server.handle(data)
                    if out is None:
                        break
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.tcp = await asyncio.start_server(tcp_client, self.host, self.port, reuse_address=True)
        log.info("cluster DNS serving on %s:%d (udp, tcp)", self.host, self.port)

    async def stop(self) -> None:
        if self.udp:
            self.udp.close()
        if self.tcp:
            self.tcp.close()
            await self.tcp.wait_closed()
