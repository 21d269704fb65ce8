"""envoy.filters.network.tcp_proxy: copy bytes both ways between the client and one upstream host.

Used for non-HTTP ports and for the PassthroughCluster (plain TCP to the original destination) and the
BlackHoleCluster (no hosts: the connection is closed). Half-closes are passed on.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from minimesh.proxy.accesslog import StreamInfo
from minimesh.proxy.config import TcpProxy
from minimesh.proxy.filters.base import ConnectionInfo
from minimesh.proxy.upstream import ConnectFailure

if TYPE_CHECKING:
    from minimesh.proxy.listener import ListenerRuntime
    from minimesh.proxy.server import Proxy


class TcpProxyRuntime:
    def __init__(self, proxy: Proxy, cfg: TcpProxy, owner: ListenerRuntime) -> None:
        self.proxy = proxy
        self.cfg = cfg
        self.owner = owner
        s = proxy.stats.scope("tcp", cfg.stat_prefix, "envoy_tcp_prefix")
        self.s_cx_total, self.s_no_route = s.counter("downstream_cx_total"), s.counter("downstream_cx_no_route")
        self.s_rx_bytes, self.s_tx_bytes = s.counter("downstream_cx_rx_bytes_total"), s.counter("downstream_cx_tx_bytes_total")
        self.s_idle_timeout = s.counter("idle_timeout")
        self.s_connect_fail = s.counter("upstream_connect_fail")
        self.g_cx_active = s.gauge("downstream_cx_active")

    async def serve(self, chan: Any, conn: ConnectionInfo) -> None:
        proxy = self.proxy
        info = StreamInfo(f"{conn.local[0]}:{conn.local[1]}", f"{conn.remote[0]}:{conn.remote[1]}", conn.sni)
        info.upstream_cluster = self.cfg.cluster
        if conn.peer_sans:
            info.peer_uri_san = conn.peer_sans[0]
        self.s_cx_total.inc()
        self.g_cx_active.inc()
        proxy.tcp_sessions += 1
        up = None
        host = None
        cluster = proxy.clusters.get(self.cfg.cluster)
        tel = proxy.telemetry
        try:
            if cluster is None:
                self.s_no_route.inc()
                info.add_flag("NC")
                return
            host = cluster.pick(conn.local)
            if host is None:
                cluster.s_cx_none_healthy.inc()
                info.add_flag("UH")
                return
            info.upstream_host = host.address
            if cluster.cx_active >= cluster.config.thresholds.max_connections:
                cluster.s_cx_overflow.inc()
                info.add_flag("UO")
                return
            try:
                up = await cluster.open_connection(host)
            except ConnectFailure:
                self.s_connect_fail.inc()
                info.add_flag("UF")
                return
            h = host
            up.closed.add_done_callback(lambda _f: cluster.connection_closed(h))
            sockname = up.extra("sockname")
            if sockname:
                info.upstream_local = f"{sockname[0]}:{sockname[1]}"
            if tel.enabled:
                tel.record_tcp(self.owner.cfg.traffic_direction, info, self.cfg.cluster, opened=True)
            last = [time.monotonic()]
            pumps = [asyncio.ensure_future(self._pump(chan, up, last)), asyncio.ensure_future(self._pump(up, chan, last))]
            idle = self.cfg.idle_timeout
            try:
                while not all(p.done() for p in pumps):
                    wait = idle - (time.monotonic() - last[0]) if idle else None
                    if wait is not None and wait <= 0:
                        self.s_idle_timeout.inc()
                        break
                    await asyncio.wait([p for p in pumps if not p.done()], timeout=wait)
            finally:
                for p in pumps:
                    p.cancel()
        finally:
            info.bytes_received = chan.bytes_read
            info.bytes_sent = chan.bytes_written
            self.s_rx_bytes.inc(info.bytes_received)
            self.s_tx_bytes.inc(info.bytes_sent)
            if up is not None:
                up.close()
            chan.close()
            self.g_cx_active.dec()
            proxy.tcp_sessions -= 1
            info.finish()
            proxy.access_log.log(info)
            if tel.enabled and up is not None:
                tel.record_tcp(self.owner.cfg.traffic_direction, info, self.cfg.cluster, opened=False)

    @staticmethod
    async def _pump(src: Any, dst: Any, last: list[float]) -> None:
        while True:
            data = await src.read()
            if not data:
                dst.write_eof()
                return
            last[0] = time.monotonic()
            dst.write(data)
            if dst.must_drain:
                await dst.drain()
