"""envoy.filters.http.router: send the request to a cluster, with timeouts, retries and circuit breakers.

Flow for one request: pick the cluster (weighted: the stage-3 exercise), then per attempt pick a host
(load balancer: the stage-3 exercise), take a pooled connection, send the head and body, read the response
head; retry when the policy says so (before anything went downstream), else stream the response back.
Failures become Envoy's local replies and response flags: UH, UF, UO, UC, UPE, UT, URX, NC.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import TYPE_CHECKING

from minimesh.proxy import retry, routing
from minimesh.proxy.config import RetryPolicy, Route, RouteConfiguration, VirtualHost
from minimesh.proxy.deadline import Deadline
from minimesh.proxy.filters.base import LocalReply
from minimesh.proxy.headers import Headers
from minimesh.proxy.http1 import (
    END,
    LAST_CHUNK,
    HttpError,
    ResponseHead,
    ResponseParser,
    chunk,
    request_head_bytes,
    response_head_bytes,
)
from minimesh.proxy.upstream import ClusterRuntime, ConnectFailure, Host, Overflow, UpstreamConn

if TYPE_CHECKING:
    from minimesh.proxy.hcm import Exchange, HttpConnectionManagerRuntime

RESET_BEFORE = "upstream connect error or disconnect/reset before headers. "


class Attempt:
    """The result of one try: a response head (kind "response") or a failure kind."""

    __slots__ = ("conn", "counted", "events", "head", "host", "kind", "parser", "pump", "reason", "started")

    def __init__(self, host: Host | None, kind: str = "", reason: str = "") -> None:
        self.host = host
        self.kind = kind
        self.reason = reason
        self.conn: UpstreamConn | None = None
        self.parser: ResponseParser | None = None
        self.head: ResponseHead | None = None
        self.events: deque[object] = deque()
        self.started = time.monotonic()
        self.counted = False  # request_started() was called for this attempt
        self.pump: asyncio.Task[None] | None = None

    @property
    def status(self) -> int:
        return self.head.status if self.head is not None else 0


_FAILURE_REPLY = {
    "connect_failure": (503, "UF", "remote connection failure", "upstream_reset_before_response_started{remote_connection_failure}"),
    "reset": (503, "UC", "connection termination", "upstream_reset_before_response_started{connection_termination}"),
    "protocol_error": (502, "UPE", "protocol error", "upstream_reset_before_response_started{protocol_error}"),
    "overflow": (503, "UO", "overflow", "upstream_reset_before_response_started{overflow}"),
}


class Router:
    def __init__(self, hcm: HttpConnectionManagerRuntime) -> None:
        self.hcm = hcm
        self.proxy = hcm.proxy
        self.rng = random.Random()

    def _local(self, ex: Exchange, reply: LocalReply) -> None:
        self.hcm._write_local(ex.d, ex.info, reply, keep=ex.keep_alive, method=ex.head.method, ex=ex)

    async def forward(self, ex: Exchange, vh: VirtualHost, route: Route, rc: RouteConfiguration) -> None:
        action = route.route
        assert action is not None
        info, head = ex.info, ex.head
        extra_headers = ()
        if action.weighted_clusters:
            name = routing.pick_weighted_cluster(action.weighted_clusters, self.rng.randrange(action.total_weight))
            for cw in action.weighted_clusters:
                if cw.name == name:
                    extra_headers = cw.request_headers_to_add
        else:
            name = action.cluster or ""
        info.upstream_cluster = name
        cluster = self.proxy.clusters.get(name)
        if cluster is None:
            self.hcm.s_no_cluster.inc()
            self._local(ex, LocalReply(503, "", flag="NC", details="cluster_not_found"))
            return
        policy = action.retry_policy or vh.retry_policy

        # the upstream request head
        assert ex.ctx is not None
        h = ex.ctx.headers.without_hop_by_hop()
        target = head.target
        if action.prefix_rewrite is not None and route.match.prefix is not None:
            h.set("x-envoy-original-path", target)
            target = action.prefix_rewrite + target[len(route.match.prefix):]
            if not target.startswith("/"):
                target = "/" + target
        if action.host_rewrite_literal:
            h.set("host", action.host_rewrite_literal)
        for opts in (extra_headers, route.request_headers_to_add, vh.request_headers_to_add, rc.request_headers_to_add):
            if opts:
                h.apply(opts)
        for hn in route.request_headers_to_remove:
            h.remove(hn)
        tel = self.proxy.telemetry
        if tel.enabled and self.hcm.direction == "OUTBOUND":
            tel.add_own(h)
        if head.has_body:
            if head.chunked:
                h.add("transfer-encoding", "chunked")
            else:
                h.add("content-length", str(head.content_length))
        ex.body.take_buffered()

        timeout = action.timeout
        per_try = policy.per_try_timeout if policy else None
        max_retries = policy.num_retries if policy else 0
        tried: list[Host] = []
        retries = 0
        first_sent: float | None = None
        att: Attempt | None = None
        overall = Deadline()
        try:
            with overall:
                if timeout:
                    # Envoy's route timeout starts once the whole request has been read
                    if ex.body.complete:
                        overall.set(timeout)
                    else:
                        ex.body.on_complete = lambda: overall.set(timeout)
                while True:
                    n = retries + 1
                    att = await self._attempt(ex, cluster, h, target, n, vh, policy, per_try, tried, retries > 0)
                    if first_sent is None:
                        first_sent = att.started
                    if att.kind in ("no_host", "overflow"):
                        self._fail(ex, att, retried=retries > 0, exhausted=False)
                        return
                    can_retry = retry.retriable(policy, att.kind, att.status)
                    if can_retry and retries < max_retries and ex.body.replayable:
                        if cluster.retries_active >= cluster.config.thresholds.max_retries:
                            cluster.s_rq_retry_overflow.inc()
                        else:
                            self._discard(cluster, att)
                            retries += 1
                            cluster.s_rq_retry.inc()
                            assert policy is not None
                            await asyncio.sleep(retry.backoff(policy, retries, self.rng))
                            continue
                    exhausted = can_retry and retries >= max_retries and max_retries > 0
                    if att.kind != "response":
                        self._fail(ex, att, retried=retries > 0, exhausted=exhausted)
                        return
                    if exhausted:
                        info.add_flag("URX")
                        cluster.s_rq_retry_limit_exceeded.inc()
                    elif retries:
                        cluster.s_rq_retry_success.inc()
                    info.upstream_service_time = int((time.monotonic() - first_sent) * 1000)
                    await self._respond(ex, cluster, att, vh, route, rc, n)
                    att = None
                    return
        except TimeoutError:
            if not overall.expired:
                raise
            cluster.s_rq_timeout.inc()
            info.add_flag("UT")
            if att is not None and att.host is not None and att.counted:
                att.host.rq_timeout += 1
                cluster.outlier_report(att.host, True)
            if att is not None:
                self._discard(cluster, att)
                att = None
            if ex.response_started:
                ex.keep_alive = False
                ex.d.chan.abort()
            else:
                info.details = "upstream_response_timeout"
                self._local(ex, LocalReply(504, "upstream request timeout", flag="UT", details="upstream_response_timeout"))
        finally:
            if att is not None:
                self._discard(cluster, att)

    # one try --------------------------------------------------------------------------------------
    async def _attempt(self, ex: Exchange, cluster: ClusterRuntime, h: Headers, target: str, n: int,
                       vh: VirtualHost, policy: RetryPolicy | None, per_try: float | None, tried: list[Host],
                       is_retry: bool) -> Attempt:
        info = ex.info
        host = cluster.pick(ex.d.info.local, tried, policy.previous_hosts if policy else False,
                            policy.host_selection_retry_max_attempts if policy else 1)
        if host is None:
            cluster.s_cx_none_healthy.inc()
            return Attempt(None, "no_host")
        if cluster.rq_active >= cluster.config.thresholds.max_requests:
            cluster.s_rq_pending_overflow.inc()
            return Attempt(host, "overflow")
        tried.append(host)
        info.upstream_host = host.address
        info.attempts = n
        att = Attempt(host)
        cluster.request_started(host)
        att.counted = True
        cluster.s_rq_total.value += 1
        if is_retry:
            cluster.retries_active += 1
        try:
            if per_try:
                try:
                    with Deadline() as dl:
                        dl.set(per_try)
                        await self._send_and_read_head(ex, cluster, att, h, target, n, vh)
                except TimeoutError:
                    cluster.s_rq_per_try_timeout.inc()
                    host.rq_timeout += 1
                    self._close_conn(att)
                    att.kind = "per_try_timeout"
            else:
                await self._send_and_read_head(ex, cluster, att, h, target, n, vh)
        except BaseException:
            self._discard(cluster, att)  # cancelled (client gone, overall timeout): close, account
            raise
        finally:
            if is_retry:
                cluster.retries_active -= 1
        if ex.body.error is not None:
            self._discard(cluster, att)
            raise ex.body.error
        if att.kind != "response":
            host.rq_error += 1
            cluster.outlier_report(host, True)
        return att

    async def _send_and_read_head(self, ex: Exchange, cluster: ClusterRuntime, att: Attempt, h: Headers,
                                  target: str, n: int, vh: VirtualHost) -> None:
        host = att.host
        assert host is not None
        pool = cluster.pool(host)
        for _stale_retry in range(2):
            try:
                conn, reused = await pool.acquire()
            except ConnectFailure as e:
                att.kind, att.reason = "connect_failure", e.reason
                return
            except Overflow:
                cluster.s_rq_pending_overflow.inc()
                att.kind = "overflow"
                return
            att.conn = conn
            ex.info.upstream_local = conn.local
            headers = h
            if n > 1 or vh.include_request_attempt_count:
                headers = h.copy()
                headers.set("x-envoy-attempt-count", str(n))
            out = [request_head_bytes(ex.head.method, target, headers)]
            body = ex.body
            pump = None
            if ex.head.has_body:
                if body.complete:
                    for c in body.chunks:
                        if c:
                            out.append(chunk(c) if ex.head.chunked else c)
                    if ex.head.chunked:
                        out.append(LAST_CHUNK)
                else:
                    pump = att.pump = asyncio.get_running_loop().create_task(self._pump(ex, conn))
            conn.chan.writelines(out)
            att.started = time.monotonic()
            try:
                got_any = await self._read_head(ex, att, conn)
            finally:
                if pump is not None and not pump.done() and att.head is None:
                    pump.cancel()  # no answer: stop sending (an early answer lets the body go on)
            if att.kind == "reset" and reused and not got_any and body.replayable:
                # the upstream closed a pooled connection just as we used it: try once more on a new one
                self._close_conn(att)
                att.kind = ""
                continue
            return

    async def _pump(self, ex: Exchange, conn: UpstreamConn) -> None:
        """Stream a request body that is still arriving."""
        chunked = ex.head.chunked
        i = 0
        try:
            while True:
                data = await ex.body.chunk(i)
                i += 1
                if data is None:
                    if chunked:
                        conn.chan.write(LAST_CHUNK)
                    return
                if data:
                    conn.chan.write(chunk(data) if chunked else data)
                    if conn.chan.must_drain:
                        await conn.chan.drain()
        except ConnectionResetError:
            conn.close()
        except HttpError as e:
            ex.body.error = e  # answered with a 4xx by the connection manager
            conn.close()

    async def _read_head(self, ex: Exchange, att: Attempt, conn: UpstreamConn) -> bool:
        """Read until the response head; sets att.kind. Returns whether any byte came back."""
        parser = conn.parser
        if parser is None or not parser.reusable:
            parser = conn.parser = ResponseParser(ex.head.method)
        else:
            parser.reset(ex.head.method)
        att.parser = parser
        got_any = False
        while att.head is None:
            data = await conn.chan.read()
            if not data:
                att.kind = "reset"
                return got_any
            got_any = True
            try:
                events = parser.feed(data)
            except HttpError as e:
                att.kind, att.reason = "protocol_error", e.details
                return got_any
            for ev in events:
                if att.head is None and isinstance(ev, ResponseHead):
                    att.head = ev
                else:
                    att.events.append(ev)
        att.kind = "response"
        return got_any

    # endings --------------------------------------------------------------------------------------
    def _close_conn(self, att: Attempt) -> None:
        if att.pump is not None:
            att.pump.cancel()
            att.pump = None
        if att.conn is not None:
            att.conn.close()
            att.conn.pool.release(att.conn, False)
            att.conn = None

    def _discard(self, cluster: ClusterRuntime, att: Attempt) -> None:
        """End an attempt whose response is not used (retried, timed out, failed)."""
        self._close_conn(att)
        if att.host is not None and att.counted:
            cluster.request_finished(att.host)
            if att.head is not None:
                cluster.count_response(att.head.status)
            att.counted = False

    def _fail(self, ex: Exchange, att: Attempt, *, retried: bool, exhausted: bool) -> None:
        info = ex.info
        cluster = self.proxy.clusters.get(info.upstream_cluster)
        if att.kind == "no_host":
            self._local(ex, LocalReply(503, "no healthy upstream", flag="UH", details="no_healthy_upstream"))
            return
        if att.kind == "per_try_timeout":
            if exhausted:
                info.add_flag("URX")
                if cluster is not None:
                    cluster.s_rq_retry_limit_exceeded.inc()
            self._local(ex, LocalReply(504, "upstream request timeout", flag="UT", details="upstream_per_try_timeout"))
            if cluster is not None:
                self._discard(cluster, att)
            return
        status, flag, why, details = _FAILURE_REPLY[att.kind]
        if exhausted:
            info.add_flag("URX")
            if cluster is not None:
                cluster.s_rq_retry_limit_exceeded.inc()
        if att.kind == "protocol_error" and cluster is not None:
            cluster.s_cx_protocol_error.inc()
        if att.kind == "reset" and cluster is not None:
            cluster.s_rq_rx_reset.inc()
        body = RESET_BEFORE + ("retried and the latest " if retried else "") + f"reset reason: {why}"
        if att.kind == "connect_failure" and att.reason:
            body += f", transport failure reason: {att.reason}"
        self._local(ex, LocalReply(status, body, flag=flag, details=details))
        if cluster is not None:
            self._discard(cluster, att)

    async def _respond(self, ex: Exchange, cluster: ClusterRuntime, att: Attempt, vh: VirtualHost, route: Route,
                       rc: RouteConfiguration, attempts: int) -> None:
        """Stream the upstream response to the client, then give the connection back to the pool."""
        rh = att.head
        conn, parser, host = att.conn, att.parser, att.host
        assert rh is not None and conn is not None and parser is not None and host is not None
        info, d = ex.info, ex.d
        status = rh.status
        cluster.count_response(status)
        cluster.outlier_report(host, status >= 500)
        if status >= 500:
            host.rq_error += 1
        else:
            host.rq_success += 1
        h = rh.headers.without_hop_by_hop()
        tel = self.proxy.telemetry
        if tel.enabled:
            if self.hcm.direction == "OUTBOUND":
                ex.peer = tel.take_peer(h)
            elif self.hcm.direction == "INBOUND":
                tel.add_own(h)
        h.add("x-envoy-upstream-service-time", str(info.upstream_service_time))
        if attempts > 1 or vh.include_attempt_count_in_response:
            h.set("x-envoy-attempt-count", str(attempts))
        for opts in (route.response_headers_to_add, vh.response_headers_to_add, rc.response_headers_to_add):
            if opts:
                h.apply(opts)
        if rh.no_body:
            mode = "none"
            if ex.head.method == "HEAD" and rh.content_length is not None:
                h.add("content-length", str(rh.content_length))
        elif rh.content_length is not None:
            mode = "length"
            h.add("content-length", str(rh.content_length))
        elif ex.head.version == "1.1":  # chunked or close-delimited upstream: re-frame as chunked
            mode = "chunked"
            h.add("transfer-encoding", "chunked")
        else:
            mode = "close"
            ex.keep_alive = False
        if self.hcm.owner.draining:
            ex.keep_alive = False
        if not ex.keep_alive:
            h.add("connection", "close")
        out = [response_head_bytes(status, rh.reason, h)]
        info.response_code = status
        info.details = "via_upstream"  # Envoy's %RESPONSE_CODE_DETAILS% for an upstream's answer
        ex.response_started = True
        sent = 0
        events = att.events
        chunked = mode == "chunked"
        reusable = rh.keep_alive and mode != "close"
        complete = False
        chan = d.chan
        try:
            while True:
                if not events:
                    if out:
                        chan.writelines(out)
                        out = []
                        if chan.must_drain:
                            await chan.drain()
                    data = await conn.chan.read()
                    try:
                        events.extend(parser.feed(data) if data else parser.feed_eof(rh))
                    except HttpError as e:
                        info.add_flag("UC" if not data else "UPE")
                        info.details = "upstream_reset_after_response_started{%s}" % (
                            "connection_termination" if not data else "protocol_error")
                        del e
                        reusable = False
                        ex.keep_alive = False
                        if out:
                            chan.writelines(out)
                        chan.abort()  # the client must not take a cut body for a whole one
                        return
                    continue
                ev = events.popleft()
                if ev is END:
                    if chunked:
                        out.append(LAST_CHUNK)
                    complete = True
                    break
                assert isinstance(ev, bytes)
                if ev:
                    sent += len(ev)
                    out.append(chunk(ev) if chunked else ev)
            chan.writelines(out)
            ex.response_done = True
            if events:
                reusable = False  # extra bytes after the response: do not trust this connection
        finally:
            info.bytes_sent = sent
            cluster.request_finished(host)
            att.counted = False
            cluster.h_rq_time.record((time.monotonic() - att.started) * 1000)
            body_sent = ex.body.complete and (att.pump is None or att.pump.done())
            if att.pump is not None and not att.pump.done():
                att.pump.cancel()
            att.pump = None
            conn.pool.release(conn, reusable and complete and body_sent)
            att.conn = None
            if mode == "close" and complete:
                ex.keep_alive = False
