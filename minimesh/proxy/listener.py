"""Listeners at run time: accept, listener filters (original destination, TLS inspection), filter chain
choice, hand-off to the network filter (HTTP connection manager or TCP proxy).

A listener with `use_original_dst` (Istio's virtual outbound 0.0.0.0:15001) hands each connection to the
listener for its original destination: exactly `ip:port`, else `0.0.0.0:port`; with none, its own filter
chains, else the PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

from minimesh.proxy import original_dst, tls_inspector
from minimesh.proxy.accesslog import StreamInfo
from minimesh.proxy.channel import Channel
from minimesh.proxy.config import FilterChain, HttpConnectionManager, Listener, TcpProxy
from minimesh.proxy.config.listener import ORIGINAL_DST_FILTER, TLS_INSPECTOR
from minimesh.proxy.filter_chain_match import needs_tls_inspection, select_filter_chain
from minimesh.proxy.filters import registry
from minimesh.proxy.filters.base import ConnectionInfo
from minimesh.proxy.hcm import HttpConnectionManagerRuntime
from minimesh.proxy.secrets import ContextSource
from minimesh.proxy.tcp_proxy import TcpProxyRuntime
from minimesh.proxy.upstream import BLACKHOLE, PASSTHROUGH

if TYPE_CHECKING:
    from minimesh.proxy.server import Proxy

log = logging.getLogger("minimesh.proxy.listener")


def stat_address(host: str, port: int) -> str:
    """Envoy's listener stat name for an address: 0.0.0.0:15001 -> 0.0.0.0_15001."""
    return f"{host}_{port}".replace(":", "_")


class ListenerRuntime:
    def __init__(self, proxy: Proxy, cfg: Listener) -> None:
        self.proxy = proxy
        self.cfg = cfg
        self.name = cfg.name
        self.draining = False
        self.drain_deadline: float | None = None
        self.connections: set[asyncio.Task[Any]] = set()
        s = proxy.stats.scope("listener", stat_address(cfg.address.address, cfg.address.port_value),
                              "envoy_listener_address")
        self.s_cx_total, self.s_cx_destroy = s.counter("downstream_cx_total"), s.counter("downstream_cx_destroy")
        self.s_no_chain = s.counter("no_filter_chain_match")
        self.s_lf_timeout = s.counter("downstream_listener_filter_timeout")
        self.s_no_cert = s.counter("ssl.connection_error_no_certificate")
        self.s_handshake_error = s.counter("ssl.connection_error")
        self.s_handoff = s.counter("downstream_cx_redirected")
        self.g_cx_active = s.gauge("downstream_cx_active")
        self.inspect_tls = cfg.has_listener_filter(TLS_INSPECTOR) or needs_tls_inspection(cfg.all_chains())
        self.want_original_dst = cfg.use_original_dst or cfg.has_listener_filter(ORIGINAL_DST_FILTER)
        # Build every chain's runtime now: problems surface before the config is swapped in.
        self.networks: dict[int, Any] = {}
        self.guards: dict[int, list[Any]] = {}  # non-terminal network filters (RBAC) of each chain
        self.tls: dict[int, ContextSource] = {}  # the SSLContext of each TLS chain (rebuilt on SDS updates)
        for i, chain in enumerate(cfg.all_chains()):
            self.networks[id(chain)] = self._network(chain)
            if len(chain.filters) > 1:
                self.guards[id(chain)] = [registry.network_filter(f.name).create(f.config, proxy.stats)  # type: ignore[union-attr]
                                          for f in chain.filters[:-1]]
            if chain.transport_socket is not None:
                where = f"listeners[{cfg.name!r}].filter_chains[{i}].transport_socket"
                proxy.check_transport_socket(chain.transport_socket, where)
                self.tls[id(chain)] = ContextSource(chain.transport_socket, proxy.secrets)
        self.fallback = None
        if cfg.use_original_dst:
            cluster = PASSTHROUGH if proxy.options.outbound_traffic_policy == "ALLOW_ANY" else BLACKHOLE
            self.fallback = TcpProxyRuntime(proxy, TcpProxy(cluster, cluster), self)

    def _network(self, chain: FilterChain) -> Any:
        cfg = chain.terminal.config
        if isinstance(cfg, HttpConnectionManager):
            return HttpConnectionManagerRuntime(self.proxy, cfg, self.cfg, self)
        return TcpProxyRuntime(self.proxy, cfg, self)

    # accepting ------------------------------------------------------------------------------------
    def accepted(self, chan: Channel) -> None:
        """Called from connection_made of a socket bound for this listener."""
        task = asyncio.get_running_loop().create_task(self.on_connection(chan))
        self.proxy.connection_tasks.add(task)
        task.add_done_callback(self.proxy.connection_tasks.discard)

    async def on_connection(self, chan: Channel) -> None:
        local = chan.extra("sockname") or ("0.0.0.0", 0)
        peer = chan.extra("peername") or ("0.0.0.0", 0)
        local = (local[0], local[1])
        dest, redirected = local, False
        if self.want_original_dst:
            dest, redirected = original_dst.destination(chan.sock(), local)
        target: ListenerRuntime = self
        if self.cfg.use_original_dst:
            found = self.proxy.listener_for(dest, exclude=self)
            if found is not None:
                target = found
                self.s_handoff.inc()
        await target.dispatch(chan, dest, (peer[0], peer[1]), redirected=redirected)

    async def dispatch(self, chan: Any, dest: tuple[str, int], peer: tuple[str, int], *,
                       redirected: bool = False) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        self.s_cx_total.inc()
        self.g_cx_active.inc()
        try:
            await self._dispatch(chan, dest, peer, redirected)
        except (ConnectionError, ssl.SSLError) as e:
            log.debug("listener %s: connection from %s ended: %s", self.name, peer, e)
        except Exception:
            log.exception("listener %s: connection from %s failed", self.name, peer)
        finally:
            if task is not None:
                self.connections.discard(task)
            self.g_cx_active.dec()
            self.s_cx_destroy.inc()
            chan.close()

    async def _dispatch(self, chan: Any, dest: tuple[str, int], peer: tuple[str, int], redirected: bool) -> None:
        transport, sni, alpn = "raw_buffer", "", ()
        if self.inspect_tls:
            hello = await self._inspect(chan)
            if hello is None:
                return
            if isinstance(hello, tls_inspector.ClientHelloInfo):
                transport, sni, alpn = "tls", hello.sni, hello.alpn
        chain = select_filter_chain(self.cfg.filter_chains, self.cfg.default_filter_chain, destination_port=dest[1],
                                    transport_protocol=transport, server_name=sni, application_protocols=alpn)
        if chain is None:
            if self.fallback is not None and not redirected and self.fallback.cfg.cluster == PASSTHROUGH:
                # a direct connection to the virtual listener itself: passing it "through" would loop
                self.s_no_chain.inc()
                log.debug("listener %s: %s:%d was not redirected; nothing to pass through to", self.name, *dest)
                return
            if self.fallback is not None:
                await self.fallback.serve(chan, ConnectionInfo(peer, dest, self.name, self.cfg.traffic_direction))
                return
            self.s_no_chain.inc()
            log.debug("listener %s: no filter chain for %s:%d (%s)", self.name, dest[0], dest[1], transport)
            return
        info = ConnectionInfo(peer, dest, self.name, self.cfg.traffic_direction, sni=sni)
        source = self.tls.get(id(chain))
        if source is not None:
            from minimesh.proxy.tls import TlsChannel, peer_sans

            try:
                ctx = source.get()
            except ssl.SSLError as e:  # e.g. the SDS certificate has not arrived: nothing to present
                self.s_no_cert.inc()
                log.debug("listener %s: closing a TLS connection from %s:%d: %s", self.name, peer[0], peer[1], e)
                return
            tchan = TlsChannel(chan, ctx, server_side=True)
            try:
                async with asyncio.timeout(self.cfg.listener_filters_timeout or 15.0):
                    await tchan.handshake()
            except (ssl.SSLError, ConnectionError, TimeoutError) as e:
                self.s_handshake_error.inc()
                log.debug("listener %s: TLS handshake with %s failed: %s", self.name, peer, e)
                return
            info.tls = True
            info.alpn = tchan.ssl.selected_alpn_protocol() or ""
            info.peer_sans = peer_sans(tchan.ssl.getpeercert())
            chan = tchan
        for guard in self.guards.get(id(chain), ()):
            denied = guard.allows(info)
            if denied is not None:  # Envoy logs the closed connection with its termination details
                line = StreamInfo(f"{dest[0]}:{dest[1]}", f"{peer[0]}:{peer[1]}", sni)
                line.termination = denied
                line.upstream_cluster = getattr(chain.terminal.config, "cluster", "")
                line.peer_uri_san = info.peer_sans[0] if info.peer_sans else ""
                line.finish()
                self.proxy.access_log.log(line)
                return
        await self.networks[id(chain)].serve(chan, info)

    async def _inspect(self, chan: Channel) -> Any:
        """Peek until the tls_inspector can tell; None when the client gave up or the timeout passed."""
        deadline = time.monotonic() + (self.cfg.listener_filters_timeout or 15.0)
        want = 1
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    data = await chan.peek(want)
            except TimeoutError:
                self.s_lf_timeout.inc()
                if self.cfg.continue_on_listener_filters_timeout:
                    return tls_inspector.PLAINTEXT
                return None
            result = tls_inspector.inspect(data)
            if result is tls_inspector.NEED_MORE:
                if chan.at_eof or len(data) < want:
                    return tls_inspector.PLAINTEXT if data else None
                want = len(data) + 1
                continue
            return result

    def start_draining(self, drain_time: float) -> None:
        self.draining = True
        self.drain_deadline = time.monotonic() + drain_time


class ListenSocket:
    """A bound socket; the listener runtime that serves it can be swapped on a config update."""

    def __init__(self, owner: ListenerRuntime) -> None:
        self.owner = owner
        self.server: asyncio.AbstractServer | None = None

    async def bind(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        me = self

        class _Accepted(Channel):
            __slots__ = ()

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                me.owner.accepted(self)

        self.server = await loop.create_server(_Accepted, host, port, reuse_address=True, backlog=1024)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
