"""envoy.filters.network.http_connection_manager: HTTP/1.1 on a downstream connection.

Per connection: parse requests (httptools via http1.py), answer protocol errors (400/431/408), then per
request: request id and forwarding headers, route selection (the stage-3 exercise), HTTP filters, and the
router (router.py) or a local/direct response. One access-log line and the stats per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from minimesh.authz.normalize import InvalidRequest, normalize_target
from minimesh.proxy import routing
from minimesh.proxy.accesslog import StreamInfo
from minimesh.proxy.config import HttpConnectionManager, Listener, RouteConfiguration
from minimesh.proxy.filters import registry
from minimesh.proxy.filters.base import ConnectionInfo, FilterEnv, LocalReply, RequestContext
from minimesh.proxy.headers import Headers, RequestHeaderView
from minimesh.proxy.http1 import END, HttpError, RequestHead, reason, response_head_bytes
from minimesh.proxy.stats import Counter

if TYPE_CHECKING:
    from minimesh.proxy.listener import ListenerRuntime
    from minimesh.proxy.server import Proxy
    from minimesh.proxy.telemetry import Peer

log = logging.getLogger("minimesh.proxy.http")

RETRY_BODY_LIMIT = 1024 * 1024  # Envoy's per_connection_buffer_limit_bytes: bodies above it are not replayed
_DATE: list[Any] = [0, ""]


def http_date() -> str:
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[0] = now
        _DATE[1] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
    return _DATE[1]


def new_request_id() -> str:
    b = os.urandom(16).hex()
    return f"{b[:8]}-{b[8:12]}-4{b[13:16]}-{'89ab'[int(b[16], 16) % 4]}{b[17:20]}-{b[20:32]}"


class Downstream:
    """One downstream HTTP connection."""

    __slots__ = (
        "chan",
        "closing",
        "disconnected",
        "events",
        "hcm",
        "head_started",
        "in_request",
        "info",
        "last_active",
        "local",
        "parser",
        "remote",
        "task",
    )

    def __init__(self, hcm: HttpConnectionManagerRuntime, chan: Any, info: ConnectionInfo) -> None:
        from minimesh.proxy.http1 import RequestParser

        self.hcm = hcm
        self.chan = chan
        self.info = info
        self.parser = RequestParser(hcm.max_head)
        self.events: deque[object] = deque()
        self.task: asyncio.Task[Any] | None = None
        self.in_request = False
        self.disconnected = False
        self.closing = False
        self.head_started: float | None = None
        self.last_active = time.monotonic()
        self.local = f"{info.local[0]}:{info.local[1]}"
        self.remote = f"{info.remote[0]}:{info.remote[1]}"

    def _on_eof(self) -> None:
        self.disconnected = True
        if self.in_request and self.task is not None and not self.task.done():
            self.task.cancel()

    async def next_event(self) -> object | None:
        """The next parser event of the current request (None: the client went away)."""
        events = self.events
        while not events:
            data = await self.chan.read()
            if not data:
                return None
            events.extend(self.parser.feed(data))
        ev = events.popleft()
        if isinstance(ev, HttpError):
            raise ev
        return ev

    def buffered_event(self) -> object | None:
        """The next event without waiting for the network (None if none is parsed yet)."""
        return self.events.popleft() if self.events else None


class RequestBody:
    """The request body, pulled from the downstream connection as the upstream takes it.

    Chunks are kept (up to RETRY_BODY_LIMIT) so that a retry can send the body again.
    """

    __slots__ = ("chunks", "complete", "d", "error", "on_complete", "replayable", "size", "truncated")

    def __init__(self, d: Downstream, head: RequestHead) -> None:
        self.d = d
        self.chunks: list[bytes] = []
        self.complete = False
        self.truncated = False
        self.error: HttpError | None = None  # a broken body seen by the upload pump
        self.replayable = True
        self.size = 0
        self.on_complete: Any = None
        if not head.has_body:
            # no body: llhttp completes the message right after the head (END is already queued)
            self.complete = True
            if d.events and d.events[0] is END:
                d.events.popleft()

    def _add(self, ev: object) -> None:
        if ev is END:
            self.complete = True
            if self.on_complete is not None:
                self.on_complete()
        elif isinstance(ev, bytes):
            self.chunks.append(ev)
            self.size += len(ev)
            if self.size > RETRY_BODY_LIMIT:
                self.replayable = False

    def take_buffered(self) -> None:
        """Move whatever body the parser already has into `chunks` (no waiting)."""
        while not self.complete:
            ev = self.d.buffered_event()
            if ev is None:
                return
            self._add(ev)

    async def chunk(self, i: int) -> bytes | None:
        """Chunk `i` of the body (waiting for it), or None after the last one."""
        while i >= len(self.chunks):
            if self.complete:
                return None
            ev = await self.d.next_event()
            if ev is None:
                self.truncated = True
                raise ConnectionResetError("downstream closed in the middle of the request body")
            self._add(ev)
        data = self.chunks[i]
        if not self.replayable:
            self.chunks[i] = b""
        return data

    async def discard(self) -> bool:
        """Read and drop the rest of the body; False if that is not worth it (close instead)."""
        self.take_buffered()
        return self.complete


class Exchange:
    """One request/response on a downstream connection."""

    __slots__ = ("body", "ctx", "d", "head", "info", "keep_alive", "peer", "response_done", "response_started")

    def __init__(self, d: Downstream, head: RequestHead, info: StreamInfo) -> None:
        self.d = d
        self.head = head
        self.info = info
        self.body = RequestBody(d, head)
        self.keep_alive = head.keep_alive
        self.response_started = False
        self.response_done = False
        self.ctx: RequestContext | None = None
        self.peer: Peer | None = None


class HttpConnectionManagerRuntime:
    """One per (listener, filter chain): config, filters and stats shared by its connections."""

    def __init__(self, proxy: Proxy, cfg: HttpConnectionManager, listener: Listener, owner: ListenerRuntime) -> None:
        from minimesh.proxy.router import Router

        self.proxy = proxy
        self.owner = owner
        self.cfg = cfg
        self.listener = listener
        self.direction = listener.traffic_direction
        self.max_head = cfg.max_request_headers_kb * 1024
        self.path_mode = cfg.path_normalization
        s = self.scope = proxy.stats.scope("http", cfg.stat_prefix, "envoy_http_conn_manager_prefix")
        env = FilterEnv(cfg.stat_prefix, s, proxy.stats, proxy.node)
        self.filters = [registry.get(f.name).create(f.config, env) for f in cfg.http_filters]
        self.router = Router(self)
        c = s.counter
        self.s_rq_total, self.s_rq_completed = c("downstream_rq_total"), c("downstream_rq_completed")
        self.s_cx_total, self.s_cx_destroy = c("downstream_cx_total"), c("downstream_cx_destroy")
        self.s_rq_rx_reset, self.s_rq_tx_reset = c("downstream_rq_rx_reset"), c("downstream_rq_tx_reset")
        self.s_cx_protocol_error = c("downstream_cx_protocol_error")
        self.s_rq_header_timeout, self.s_cx_idle_timeout = c("downstream_rq_header_timeout"), c("downstream_cx_idle_timeout")
        self.s_no_route, self.s_no_cluster = c("no_route"), c("no_cluster")
        self.s_direct_response = c("rq_direct_response")
        self.g_rq_active, self.g_cx_active = s.gauge("downstream_rq_active"), s.gauge("downstream_cx_active")
        self.h_rq_time = s.histogram("downstream_rq_time")
        self._code_class: dict[int, Counter] = {}

    # connection -----------------------------------------------------------------------------------
    async def serve(self, chan: Any, info: ConnectionInfo) -> None:
        d = Downstream(self, chan, info)
        d.task = asyncio.current_task()
        chan.on_eof = d._on_eof
        self.s_cx_total.inc()
        self.g_cx_active.inc()
        self.proxy.downstreams.add(d)
        try:
            while not d.closing:
                head = await self._next_head(d)
                if head is None:
                    break
                if not await self.handle(d, head):
                    break
        except (ConnectionError, asyncio.CancelledError):
            if not d.disconnected:
                raise
        finally:
            self.proxy.downstreams.discard(d)
            self.g_cx_active.dec()
            self.s_cx_destroy.inc()
            chan.close()

    async def _next_head(self, d: Downstream) -> RequestHead | None:
        while True:
            ev = d.buffered_event()
            if ev is None:
                data = await d.chan.read()
                if not data:
                    return None
                now = time.monotonic()
                d.last_active = now
                if d.head_started is None:
                    d.head_started = now
                try:
                    d.events.extend(d.parser.feed(data))
                except HttpError as e:
                    self._protocol_error(d, e)
                    return None
                continue
            if isinstance(ev, RequestHead):
                d.head_started = None
                return ev
            if isinstance(ev, HttpError):
                self._protocol_error(d, ev)
                return None
            # leftovers of a request we did not read to the end are impossible: such connections close

    def _protocol_error(self, d: Downstream, e: HttpError) -> None:
        self.s_cx_protocol_error.inc()
        info = StreamInfo(d.local, d.remote, d.info.sni)
        info.protocol = "HTTP/1.1"
        info.add_flag("DPE")
        self._write_local(d, info, LocalReply(e.status, reason(e.status), details=e.details), keep=False,
                          method="GET")
        self._finish(info, None, d)
        d.closing = True

    def header_timeout(self, d: Downstream) -> None:
        """Called by the proxy's sweeper when a request head is too slow (408, like Envoy)."""
        if d.in_request or d.closing:
            return
        self.s_rq_header_timeout.inc()
        info = StreamInfo(d.local, d.remote, d.info.sni)
        self._write_local(d, info, LocalReply(408, "request header timeout", details="request_header_timeout"),
                          keep=False, method="GET")
        self._finish(info, None, d)
        d.closing = True
        d.chan.close()

    # request ------------------------------------------------------------------------------------
    async def handle(self, d: Downstream, head: RequestHead) -> bool:
        """Serve one request; True if the connection can take another."""
        info = StreamInfo(d.local, d.remote, d.info.sni)
        if d.info.peer_sans:
            info.peer_uri_san = d.info.peer_sans[0]
        headers = head.headers
        # one pass over the headers for everything the connection manager reads
        host = ua = rid = xfp = xff = expect = None
        for k, v in headers.items():
            if k == "host":
                host = v
            elif k == "user-agent":
                ua = v
            elif k == "x-request-id":
                rid = v
            elif k == "x-forwarded-proto":
                xfp = v
            elif k == "x-forwarded-for":
                xff = v if xff is None else f"{xff},{v}"
            elif k == "expect":
                expect = v
        if host is None:  # HTTP/1.0 without Host: like Envoy's default_host_for_http_10
            host = d.local
            headers.add("host", host)
        info.method = head.method
        info.path = head.target
        info.protocol = "HTTP/1.1" if head.version == "1.1" else "HTTP/1.0"
        info.authority = host
        info.user_agent = ua or ""
        if not rid and self.cfg.generate_request_id:
            rid = new_request_id()
            headers.add("x-request-id", rid)
        info.request_id = rid or ""
        if xfp is None:
            headers.add("x-forwarded-proto", "https" if d.info.tls else "http")
        if self.cfg.use_remote_address:
            xff = f"{xff},{d.info.remote[0]}" if xff else d.info.remote[0]
            headers.set("x-forwarded-for", xff)
        info.x_forwarded_for = xff or ""
        ex = Exchange(d, head, info)
        if self.owner.draining:
            ex.keep_alive = False  # Envoy: a draining listener answers with connection: close
        d.in_request = True
        self.s_rq_total.value += 1
        self.g_rq_active.value += 1
        try:
            if self.proxy.telemetry.enabled and self.direction == "INBOUND":
                ex.peer = self.proxy.telemetry.take_peer(headers)
            if head.upgrade:
                self._write_local(d, info, LocalReply(403, "", details="upgrade_failed"), keep=False,
                                  method=head.method, ex=ex)
            else:
                if expect is not None and expect.lower() == "100-continue" and not ex.body.complete:
                    d.chan.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await self._decode(ex)
        except asyncio.CancelledError:
            if not d.disconnected:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            ex.keep_alive = False
        except ConnectionResetError:
            ex.keep_alive = False
        except HttpError as e:  # a broken request body (bad chunk)
            ex.keep_alive = False
            ex.body.truncated = ex.body.complete = True
            self.s_cx_protocol_error.inc()
            if not ex.response_started:
                info.add_flag("DPE")
                self._write_local(d, info, LocalReply(e.status, reason(e.status), details=e.details), keep=False,
                                  method=head.method, ex=ex)
            else:
                d.chan.abort()
        except Exception as e:  # a bug, or an exercise that is not done yet: answer, keep serving
            ex.keep_alive = False
            if isinstance(e, NotImplementedError):
                log.error("%s", e)
            else:
                log.exception("request %s %s failed", head.method, head.target)
            if not ex.response_started:
                info.details = f"minimesh_exception{{{type(e).__name__}}}"
                self._write_local(d, info, LocalReply(500, f"minimesh: {type(e).__name__}: {e}\n",
                                                      details=info.details), keep=False, method=head.method, ex=ex)
        finally:
            d.in_request = False
            self.g_rq_active.value -= 1
        if (d.disconnected or ex.body.truncated) and not ex.response_done:
            info.add_flag("DC")  # the client went away before the response was complete
            self.s_rq_rx_reset.inc()
            ex.keep_alive = False
        if ex.keep_alive and not ex.body.complete and not await ex.body.discard():
            ex.keep_alive = False  # answered before the whole body arrived: close rather than read it
        self._finish(info, ex, d)
        return ex.keep_alive and not d.disconnected

    async def _decode(self, ex: Exchange) -> None:
        d, head, info = ex.d, ex.head, ex.info
        cfg = self.cfg
        if self.path_mode is not None and head.target.startswith("/"):
            try:  # as Envoy's normalize_path: routes, filters and the upstream see the normalised path
                head.target = info.path = normalize_target(head.target, self.path_mode)  # type: ignore[arg-type]
            except InvalidRequest:
                self._write_local(d, info, LocalReply(400, "Bad Request", details="path_normalization_failed"),
                                  keep=False, method=head.method, ex=ex)
                return
        rc: RouteConfiguration | None = cfg.route_config
        if rc is None:
            rc = self.proxy.resources.route_config(cfg.rds_route_config_name or "")
        vh = route = None
        if rc is not None:
            vh = routing.select_virtual_host(rc, info.authority)
            if vh is not None:
                view = RequestHeaderView(head.headers, head.method, head.target, info.authority,
                                         "https" if d.info.tls else "http")
                route = routing.select_route(vh, head.method, head.target, view)
        ctx = ex.ctx = RequestContext(head.method, head.target, info.authority, head.headers, d.info, vh, route)
        for f in self.filters:
            r = f.on_request(ctx)
            if r is not None and not isinstance(r, LocalReply):
                r = await r
            if r is not None:
                for fl in ctx.flags:
                    info.add_flag(fl)
                self._write_local(d, info, r, keep=ex.keep_alive, method=head.method, ex=ex)
                return
        for fl in ctx.flags:
            info.add_flag(fl)
        if route is None:
            self.s_no_route.inc()
            details = "route_configuration_not_found" if rc is None else "route_not_found"
            self._write_local(d, info, LocalReply(404, "", flag="NR", details=details), keep=ex.keep_alive,
                              method=head.method, ex=ex)
            return
        info.route_name = route.name
        if route.direct_response is not None:
            self.s_direct_response.inc()
            dr = route.direct_response
            extra = Headers()
            extra.apply(route.response_headers_to_add)
            extra.apply(vh.response_headers_to_add if vh else ())
            extra.apply(rc.response_headers_to_add if rc else ())
            self._write_local(d, info, LocalReply(dr.status, dr.body or "", tuple(extra.items()), details="direct_response"),
                              keep=ex.keep_alive, method=head.method, ex=ex, server=False)
            return
        assert vh is not None and rc is not None
        await self.router.forward(ex, vh, route, rc)

    # responses ----------------------------------------------------------------------------------
    def _write_local(self, d: Downstream, info: StreamInfo, r: LocalReply, *, keep: bool, method: str,
                     ex: Exchange | None = None, server: bool = True) -> None:
        body = r.body.encode() if r.body else b""
        h = Headers()
        if body:
            h.add("content-length", str(len(body)))
            h.add("content-type", "text/plain")
        else:
            h.add("content-length", "0")
        h.add("date", http_date())
        if server:
            h.add("server", "minimesh")
        for k, v in r.headers:
            h.add(k, v)
        if not keep:
            h.add("connection", "close")
        if ex is not None:
            ex.response_started = ex.response_done = True
            if not keep:
                ex.keep_alive = False
        out = response_head_bytes(r.status, reason(r.status), h)
        if method != "HEAD":
            out += body
            info.bytes_sent = len(body)
        d.chan.write(out)
        info.response_code = r.status
        info.add_flag(r.flag)
        if r.details:
            info.details = r.details

    def count_code(self, status: int) -> None:
        cls = status // 100
        c = self._code_class.get(cls)
        if c is None:
            c = self._code_class[cls] = self.scope.counter(f"downstream_rq_{cls}xx")
        c.value += 1

    def _finish(self, info: StreamInfo, ex: Exchange | None, d: Downstream) -> None:
        info.finish()
        if ex is not None:
            info.bytes_received = ex.body.size
        if info.response_code:
            self.count_code(info.response_code)
        self.s_rq_completed.value += 1
        self.h_rq_time.record(info.duration_ms)
        self.proxy.access_log.log(info)
        tel = self.proxy.telemetry
        if tel.enabled and info.method:
            service = (info.authority.rsplit(":", 1)[0] if info.authority else "")
            cluster = self.proxy.clusters.get(info.upstream_cluster) if info.upstream_cluster else None
            if cluster is not None:
                svc = cluster.config.metadata.get("filter_metadata", {}).get("istio", {}).get("services")
                if isinstance(svc, list) and svc and isinstance(svc[0], dict) and svc[0].get("host"):
                    service = svc[0]["host"]
            tel.record_http(self.direction, info, ex.peer if ex else None, service, d.info.peer_principal,
                            d.info.tls and bool(d.info.peer_sans))
