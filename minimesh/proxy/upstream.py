"""Clusters at run time: hosts, load balancing (the stage-3 exercise), circuit breakers, connection pools.

A `ClusterRuntime` outlives config updates with the same cluster name (its stats and pooled connections
stay); `ClusterManager.apply` swaps the set. Requests in flight keep the objects they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from minimesh.proxy import balancer
from minimesh.proxy.channel import Channel
from minimesh.proxy.config import Cluster, ClusterLoadAssignment, Resources
from minimesh.proxy.config.tls import UpstreamTlsContext
from minimesh.proxy.secrets import ContextSource, SecretManager
from minimesh.proxy.stats import Counter, Stats

log = logging.getLogger("minimesh.proxy.upstream")

PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
HEALTHY_STATUSES = frozenset({"UNKNOWN", "HEALTHY", "DEGRADED"})
_PICK: Any = object()  # open_connection: choose the transport socket for the host
# (ip, port, health, weight, locality, hostname, socket-match metadata) of a wanted host
_Wanted = tuple[str, int, str, int, tuple[str, str, str], str, tuple[tuple[str, str], ...]]


class ConnectFailure(Exception):
    """Could not connect to the upstream host (flag UF)."""

    def __init__(self, host: Host, reason: str, timeout: bool = False) -> None:
        super().__init__(reason)
        self.host = host
        self.reason = reason
        self.timeout = timeout


class Overflow(Exception):
    """A circuit breaker is open (flag UO)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Host:
    """One upstream endpoint with its health and per-host stats (the /clusters admin view)."""

    __slots__ = ("_pool", "address", "consecutive_5xx", "cx_active", "cx_connect_fail", "cx_total", "ejected",
                 "ejections", "health_status", "healthy", "hostname", "ip", "locality", "port", "rq_active",
                 "rq_error", "rq_success", "rq_timeout", "rq_total", "socket_match", "weight")

    def __init__(self, ip: str, port: int, health_status: str = "UNKNOWN", weight: int = 1,
                 locality: tuple[str, str, str] = ("", "", ""), hostname: str = "",
                 socket_match: tuple[tuple[str, str], ...] = ()) -> None:
        self.ip, self.port = ip, port
        self.socket_match = socket_match  # endpoint metadata for the cluster's transport_socket_matches
        self.address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        self.health_status = health_status
        self.weight = weight
        self.locality = locality
        self.hostname = hostname
        self.ejected = False
        self.healthy = health_status in HEALTHY_STATUSES
        self.consecutive_5xx = self.ejections = 0
        self.cx_active = self.cx_total = self.cx_connect_fail = 0
        self.rq_active = self.rq_total = self.rq_success = self.rq_error = self.rq_timeout = 0
        self._pool: HostPool | None = None

    def set_health(self, status: str) -> None:
        self.health_status = status
        self.healthy = status in HEALTHY_STATUSES and not self.ejected

    def health_flags(self) -> str:
        flags = []
        if self.health_status in ("UNHEALTHY", "TIMEOUT"):
            flags.append("/failed_eds_health")
        if self.health_status == "DRAINING":
            flags.append("/pending_dynamic_removal")
        if self.health_status == "DEGRADED":
            flags.append("/degraded_eds_health")
        if self.ejected:
            flags.append("/failed_outlier_check")
        return "|".join(flags) or "healthy"

    def __repr__(self) -> str:
        return f"Host({self.address}, healthy={self.healthy})"


class UpstreamConn:
    """One pooled HTTP/1.1 connection to a host."""

    __slots__ = ("chan", "idle_since", "local", "parser", "pool", "requests", "transport")

    def __init__(self, chan: Channel, pool: HostPool, transport: UpstreamTlsContext | None = None) -> None:
        self.chan = chan
        self.pool = pool
        self.transport = transport  # the TLS config it was made with (None: plaintext)
        self.requests = 0
        self.idle_since = 0.0
        self.parser: Any = None  # the ResponseParser, reused across responses on this connection
        sockname = chan.extra("sockname")
        self.local = f"{sockname[0]}:{sockname[1]}" if sockname else ""

    @property
    def usable(self) -> bool:
        return not self.chan.is_closed and not self.chan.at_eof and self.chan.buffered == 0

    def close(self) -> None:
        self.chan.close()


class HostPool:
    """Idle connections to one host, and the requests waiting for one (max_pending_requests)."""

    __slots__ = ("cluster", "host", "idle", "retired", "waiters")

    def __init__(self, cluster: ClusterRuntime, host: Host) -> None:
        self.cluster = cluster
        self.host = host
        self.idle: list[UpstreamConn] = []
        self.waiters: deque[asyncio.Future[UpstreamConn | None]] = deque()
        self.retired = False

    async def acquire(self) -> tuple[UpstreamConn, bool]:
        """A connection to the host: (conn, reused). Raises ConnectFailure or Overflow."""
        rt = self.cluster
        want = rt.transport_for(self.host)
        while True:
            while self.idle:
                conn = self.idle.pop()
                # a pooled connection made with other TLS settings (plaintext before the certificate
                # arrived, or an older config) is not what this request must go over
                if conn.usable and (conn.transport is want or conn.transport == want):
                    conn.chan.on_eof = None
                    return conn, True
                conn.close()
            if rt.cx_active < rt.config.thresholds.max_connections:
                return await self._connect(want), False
            rt.s_cx_overflow.inc()
            if rt.rq_pending >= rt.config.thresholds.max_pending_requests:
                raise Overflow("pending")
            fut: asyncio.Future[UpstreamConn | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            rt.rq_pending += 1
            rt.s_rq_pending_total.inc()
            rt.g_rq_pending_active.inc()
            try:
                conn = await fut
            finally:
                rt.rq_pending -= 1
                rt.g_rq_pending_active.dec()
                if not fut.done():
                    fut.cancel()
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            if conn is not None:
                return conn, True

    async def _connect(self, transport: UpstreamTlsContext | None) -> UpstreamConn:
        chan = await self.cluster.open_connection(self.host, transport)
        conn = UpstreamConn(chan, self, transport)
        chan.closed.add_done_callback(lambda _f: self._lost(conn))
        return conn

    def _lost(self, conn: UpstreamConn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        self.cluster.connection_closed(self.host)

    def release(self, conn: UpstreamConn, reusable: bool) -> None:
        rt = self.cluster
        conn.requests += 1
        max_rq = rt.config.max_requests_per_connection
        if not reusable or self.retired or not conn.usable or (max_rq and conn.requests >= max_rq):
            conn.close()
            return
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)
        conn.chan.on_eof = conn.close  # the upstream closed an idle connection
        conn.idle_since = time.monotonic()

    def close_idle(self, now: float, timeout: float) -> None:
        """Close connections idle for longer than `timeout` (the proxy's sweeper calls this)."""
        for conn in [c for c in self.idle if now - c.idle_since > timeout]:
            self.idle.remove(conn)
            self.cluster.s_cx_idle_timeout.inc()
            conn.close()

    def retire(self) -> None:
        self.retired = True
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "delayed connect error: 111"  # Envoy's wording for ECONNREFUSED
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {getattr(e, 'reason', None) or e}"
    return f"{type(e).__name__}: {e}"


def make_balancer(policy: str) -> Any:
    if policy == "LEAST_REQUEST":
        return balancer.LeastRequest()
    if policy == "RANDOM":
        return balancer.RandomPick()
    return balancer.RoundRobin()


class ClusterRuntime:
    def __init__(self, config: Cluster, assignment: ClusterLoadAssignment | None, stats: Stats,
                 *, implicit: bool = False, static: bool = True, secrets: SecretManager | None = None) -> None:
        self.name = config.name
        self.config = config
        self.secrets = secrets
        self._sources: dict[int, ContextSource] = {}  # by id() of the transport socket config (kept in self.config)
        self.implicit = implicit
        self.static = static
        self.rng = random.Random()
        self.hosts: list[Host] = []
        self.by_address: dict[str, Host] = {}
        self.active_requests: dict[str, int] = {}
        self.pools: dict[str, HostPool] = {}
        self.cx_active = self.rq_active = self.rq_pending = self.retries_active = 0
        self.lb = make_balancer(config.lb_policy)
        self._dns_task: asyncio.Task[None] | None = None
        self._ejection_handles: list[asyncio.TimerHandle] = []
        s = self.scope = stats.scope("cluster", config.name, "envoy_cluster_name")
        c: Callable[[str], Counter] = s.counter
        self.s_rq_total, self.s_rq_completed = c("upstream_rq_total"), c("upstream_rq_completed")
        self.s_rq_timeout, self.s_rq_per_try_timeout = c("upstream_rq_timeout"), c("upstream_rq_per_try_timeout")
        self.s_rq_retry, self.s_rq_retry_success = c("upstream_rq_retry"), c("upstream_rq_retry_success")
        self.s_rq_retry_overflow = c("upstream_rq_retry_overflow")
        self.s_rq_retry_limit_exceeded = c("upstream_rq_retry_limit_exceeded")
        self.s_rq_pending_overflow, self.s_rq_pending_total = c("upstream_rq_pending_overflow"), c("upstream_rq_pending_total")
        self.s_rq_rx_reset, self.s_rq_tx_reset = c("upstream_rq_rx_reset"), c("upstream_rq_tx_reset")
        self.s_cx_total, self.s_cx_connect_fail = c("upstream_cx_total"), c("upstream_cx_connect_fail")
        self.s_cx_connect_timeout, self.s_cx_overflow = c("upstream_cx_connect_timeout"), c("upstream_cx_overflow")
        self.s_cx_destroy, self.s_cx_idle_timeout = c("upstream_cx_destroy"), c("upstream_cx_idle_timeout")
        self.s_cx_protocol_error, self.s_cx_none_healthy = c("upstream_cx_protocol_error"), c("upstream_cx_none_healthy")
        self.s_ejections = c("outlier_detection.ejections_enforced_total")
        self.s_tls_no_secret = c("transport_socket_match.no_certificate_plaintext")
        # Envoy's TLS stats: handshakes, and why verification failed (root or SAN)
        self.s_ssl_handshake, self.s_ssl_fail_san = c("ssl.handshake"), c("ssl.fail_verify_san")
        self.s_ssl_fail_verify = c("ssl.fail_verify_error")
        self.g_cx_active, self.g_rq_active = s.gauge("upstream_cx_active"), s.gauge("upstream_rq_active")
        self.g_rq_pending_active = s.gauge("upstream_rq_pending_active")
        self.g_membership_total, self.g_membership_healthy = s.gauge("membership_total"), s.gauge("membership_healthy")
        self.g_ejections_active = s.gauge("outlier_detection.ejections_active")
        self.h_rq_time = s.histogram("upstream_rq_time")
        self._code_counters: dict[int, tuple[Counter, Counter]] = {}
        self.update(config, assignment)

    # config -------------------------------------------------------------------------------------
    def update(self, config: Cluster, assignment: ClusterLoadAssignment | None) -> None:
        if config.lb_policy != self.config.lb_policy:
            self.lb = make_balancer(config.lb_policy)
        if (config.transport_socket, config.transport_socket_matches) != \
                (self.config.transport_socket, self.config.transport_socket_matches):
            self._sources = {}
        self.config = config
        if config.type == "ORIGINAL_DST":
            self._set_membership()
            return
        if config.type == "STRICT_DNS":
            self._start_dns(assignment)
            return
        wanted: list[_Wanted] = []
        for loc, ep in (assignment.all_endpoints() if assignment else []):
            a = ep.address
            wanted.append((a.address, a.port_value, ep.health_status, ep.load_balancing_weight,
                           (loc.locality.region, loc.locality.zone, loc.locality.sub_zone), ep.hostname,
                           ep.socket_match))
        self._set_hosts(wanted)

    def _set_hosts(self, wanted: list[_Wanted]) -> None:
        hosts: list[Host] = []
        by_address: dict[str, Host] = {}
        for ip, port, status, weight, locality, hostname, socket_match in wanted:
            probe = Host(ip, port, status, weight, locality, hostname, socket_match)
            h = self.by_address.get(probe.address) or by_address.get(probe.address)
            if h is None:
                h = probe
            else:
                h.set_health(status)
                h.weight, h.locality, h.socket_match = weight, locality, socket_match
            if h.address not in by_address:
                hosts.append(h)
                by_address[h.address] = h
        for addr, old in self.by_address.items():
            if addr not in by_address and old._pool is not None:
                old._pool.retire()
                self.pools.pop(addr, None)
        self.hosts, self.by_address = hosts, by_address
        self._set_membership()

    def _set_membership(self) -> None:
        self.g_membership_total.set(len(self.hosts))
        self.g_membership_healthy.set(sum(1 for h in self.hosts if h.healthy))

    def _start_dns(self, assignment: ClusterLoadAssignment | None) -> None:
        if self._dns_task is not None:
            self._dns_task.cancel()
        targets = [(ep.address.address, ep.address.port_value, ep.hostname) for _, ep in
                   (assignment.all_endpoints() if assignment else [])]
        self._dns_task = asyncio.get_running_loop().create_task(self._dns_loop(targets))

    async def _dns_loop(self, targets: list[tuple[str, int, str]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wanted = []
            for name, port, hostname in targets:
                try:
                    infos = await loop.getaddrinfo(name, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
                except OSError as e:
                    log.warning("cluster %s: cannot resolve %s: %s", self.name, name, e)
                    continue
                for ip in sorted({i[4][0] for i in infos}):
                    wanted.append((ip, port, "HEALTHY", 1, ("", "", ""), hostname or name, ()))
            self._set_hosts(wanted)
            await asyncio.sleep(self.config.dns_refresh_rate)

    def close_idle(self, now: float) -> None:
        if self.config.idle_timeout:
            for pool in self.pools.values():
                if pool.idle:
                    pool.close_idle(now, self.config.idle_timeout)

    def cleanup(self) -> None:
        """ORIGINAL_DST hosts are made per destination; forget the idle ones (Envoy: cleanup_interval)."""
        if self.config.type != "ORIGINAL_DST":
            return
        idle = [h for h in self.hosts if not h.rq_active and not h.cx_active and not (h._pool and h._pool.idle)]
        if not idle:
            return
        for h in idle:
            self.by_address.pop(h.address, None)
            pool = self.pools.pop(h.address, None)
            if pool is not None:
                pool.retire()
        gone = set(map(id, idle))
        self.hosts = [h for h in self.hosts if id(h) not in gone]
        self._set_membership()

    def retire(self) -> None:
        for pool in self.pools.values():
            pool.retire()
        if self._dns_task is not None:
            self._dns_task.cancel()
        for h in self._ejection_handles:
            h.cancel()

    def source(self, ts: UpstreamTlsContext) -> ContextSource:
        found = self._sources.get(id(ts))
        if found is None:
            found = self._sources[id(ts)] = ContextSource(ts, self.secrets)
        return found

    def transport_for(self, host: Host) -> UpstreamTlsContext | None:
        """The TLS config to reach `host` with (None: plaintext).

        The first of `transport_socket_matches` whose match is contained in the host's socket-match
        metadata, else the cluster's `transport_socket` (Envoy's rule). minimesh adds one thing: a match
        whose SDS certificate has not arrived is skipped, so a sidecar without a certificate (no CA yet)
        keeps talking plaintext through Istio-style auto-mTLS config instead of failing."""
        matches = self.config.transport_socket_matches
        if not matches:
            return self.config.transport_socket
        for m in matches:
            if m.matches(host.socket_match):
                if m.transport_socket is None or self.source(m.transport_socket).ready:
                    return m.transport_socket
                self.s_tls_no_secret.inc()
        return self.config.transport_socket

    def tls_context(self, ts: UpstreamTlsContext | None = None) -> ssl.SSLContext | None:
        ts = ts if ts is not None else self.config.transport_socket
        return None if ts is None else self.source(ts).get()

    def check_peer(self, chan: Channel, ts: UpstreamTlsContext | None = None) -> None:
        from minimesh.proxy.tls import check_san

        ts = ts if ts is not None else self.config.transport_socket
        if ts is not None and ts.common.san_matchers:
            check_san(chan.extra("peercert") or {}, ts.common.san_matchers)

    # connections --------------------------------------------------------------------------------
    async def open_connection(self, host: Host, transport: Any = _PICK) -> Channel:
        """Connect to `host` (connect_timeout, bind address, TLS), counting it against max_connections.
        `transport`: the TLS config to use (default: `transport_for(host)`).
        The caller must call `connection_closed(host)` once the channel is closed."""
        loop = asyncio.get_running_loop()
        self.cx_active += 1
        host.cx_active += 1
        host.cx_total += 1
        self.s_cx_total.inc()
        self.g_cx_active.inc()
        ok = False
        try:
            local = (self.config.upstream_bind_address, 0) if self.config.upstream_bind_address else None
            ts = self.transport_for(host) if transport is _PICK else transport
            tls = self.tls_context(ts) if ts is not None else None
            async with asyncio.timeout(self.config.connect_timeout):
                _, chan = await loop.create_connection(
                    Channel, host.ip, host.port, local_addr=local, ssl=tls,
                    server_hostname=((ts.sni if ts else "") or host.hostname or host.ip) if tls else None)
            if tls is not None:
                try:
                    self.check_peer(chan, ts)
                except ssl.SSLError:
                    self.s_ssl_fail_san.inc()
                    chan.abort()
                    raise
                self.s_ssl_handshake.inc()
            ok = True
            return chan
        except TimeoutError:
            host.cx_connect_fail += 1
            self.s_cx_connect_fail.inc()
            self.s_cx_connect_timeout.inc()
            raise ConnectFailure(host, "connection timeout", timeout=True) from None
        except (OSError, ssl.SSLError, ValueError) as e:
            host.cx_connect_fail += 1
            self.s_cx_connect_fail.inc()
            if isinstance(e, ssl.SSLCertVerificationError):
                self.s_ssl_fail_verify.inc()
            raise ConnectFailure(host, _reason(e)) from None
        finally:
            if not ok:
                self.connection_closed(host)

    def connection_closed(self, host: Host) -> None:
        self.cx_active -= 1
        host.cx_active -= 1
        self.g_cx_active.dec()
        self.s_cx_destroy.inc()
        self.wake_pending()

    # picking hosts ------------------------------------------------------------------------------
    def pick(self, original_dst: tuple[str, int] | None, tried: list[Host] | None = None,
             previous_hosts: bool = False, attempts: int = 1) -> Host | None:
        """The host for the next attempt (None: no healthy host -> 503 UH)."""
        if self.config.type == "ORIGINAL_DST":
            if original_dst is None:
                return None
            ip, port = original_dst
            key = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            h = self.by_address.get(key)
            if h is None:
                h = Host(ip, port)
                self.by_address[key] = h
                self.hosts.append(h)
                self._set_membership()
            return h
        host = None
        for _ in range(max(1, attempts) if previous_hosts and tried else 1):
            host = self._lb_pick()
            if host is None or not previous_hosts or not tried or host not in tried:
                return host
        return host

    def _lb_pick(self) -> Host | None:
        lb = self.lb
        if isinstance(lb, balancer.RoundRobin):
            return lb.pick(self.hosts)
        if isinstance(lb, balancer.LeastRequest):
            return lb.pick(self.hosts, self.active_requests, self.rng)
        return lb.pick(self.hosts, self.rng)

    def pool(self, host: Host) -> HostPool:
        p = host._pool
        if p is None or p.retired:
            p = host._pool = self.pools[host.address] = HostPool(self, host)
        return p

    def wake_pending(self) -> None:
        for pool in self.pools.values():
            while pool.waiters:
                fut = pool.waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
                    return

    # accounting ---------------------------------------------------------------------------------
    def request_started(self, host: Host) -> None:
        self.rq_active += 1
        self.g_rq_active.inc()
        host.rq_active += 1
        host.rq_total += 1
        self.active_requests[host.address] = self.active_requests.get(host.address, 0) + 1

    def request_finished(self, host: Host) -> None:
        self.rq_active -= 1
        self.g_rq_active.dec()
        host.rq_active -= 1
        n = self.active_requests.get(host.address, 1) - 1
        if n:
            self.active_requests[host.address] = n
        else:
            self.active_requests.pop(host.address, None)

    def count_response(self, status: int) -> None:
        pair = self._code_counters.get(status)
        if pair is None:
            pair = self._code_counters[status] = (self.scope.counter(f"upstream_rq_{status}"),
                                                  self.scope.counter(f"upstream_rq_{status // 100}xx"))
        pair[0].value += 1
        pair[1].value += 1

    def outlier_report(self, host: Host, failed: bool) -> None:
        od = self.config.outlier_detection
        if od is None:
            return
        if not failed:
            host.consecutive_5xx = 0
            return
        host.consecutive_5xx += 1
        if host.consecutive_5xx < od.consecutive_5xx or host.ejected:
            return
        ejected = sum(1 for h in self.hosts if h.ejected)
        if self.hosts and (ejected + 1) * 100 > od.max_ejection_percent * len(self.hosts) and ejected > 0:
            return  # Envoy always allows ejecting one host, then respects max_ejection_percent
        host.ejected = True
        host.healthy = False
        host.ejections += 1
        host.consecutive_5xx = 0
        self.s_ejections.inc()
        self.g_ejections_active.inc()
        self._set_membership()
        handle = asyncio.get_running_loop().call_later(od.base_ejection_time * host.ejections, self._uneject, host)
        self._ejection_handles.append(handle)

    def _uneject(self, host: Host) -> None:
        self._ejection_handles = [h for h in self._ejection_handles if not h.cancelled() and h.when() > time.monotonic()]
        host.ejected = False
        host.set_health(host.health_status)
        self.g_ejections_active.dec()
        self._set_membership()


class ClusterManager:
    """All clusters by name; `apply` swaps to a new validated config."""

    def __init__(self, stats: Stats, secrets: SecretManager | None = None) -> None:
        self.stats = stats
        self.secrets = secrets
        self.clusters: dict[str, ClusterRuntime] = {}

    def get(self, name: str) -> ClusterRuntime | None:
        return self.clusters.get(name)

    def apply(self, resources: Resources) -> None:
        new: dict[str, ClusterRuntime] = {}
        for name, entry in resources.clusters.items():
            cfg = entry.resource
            la = resources.load_assignment(cfg)
            rt = self.clusters.get(name)
            if rt is not None and not rt.implicit:
                rt.update(cfg, la)
                rt.static = entry.static
            else:
                if rt is not None:
                    rt.retire()
                rt = ClusterRuntime(cfg, la, self.stats, static=entry.static, secrets=self.secrets)
            new[name] = rt
        for name, cfg in ((PASSTHROUGH, Cluster(PASSTHROUGH, type="ORIGINAL_DST", connect_timeout=10.0)),
                          (BLACKHOLE, Cluster(BLACKHOLE, type="STATIC"))):
            if name not in new:
                rt = self.clusters.get(name)
                new[name] = rt if rt is not None and rt.implicit else ClusterRuntime(cfg, None, self.stats, implicit=True)
        for name, rt in self.clusters.items():
            if new.get(name) is not rt:
                rt.retire()
        self.clusters = new

    def close(self) -> None:
        for rt in self.clusters.values():
            rt.retire()
