"""The admin server (Envoy's /config_dump, /stats, /clusters, /ready, POST /quitquitquit, ...).

A tiny HTTP/1.1 server on the proxy's own parser (no aiohttp: the proxy stays small). Bind it to loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from minimesh.proxy.accesslog import format_line, format_time
from minimesh.proxy.channel import Channel
from minimesh.proxy.headers import Headers
from minimesh.proxy.http1 import END, HttpError, RequestHead, RequestParser, reason, response_head_bytes

if TYPE_CHECKING:
    from minimesh.proxy.server import Proxy

log = logging.getLogger("minimesh.proxy.admin")
T = "type.googleapis.com/"
LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL, "off": logging.CRITICAL + 10}

Reply = tuple[int, str, bytes]  # status, content type, body


def _ts(t: float) -> str:
    return format_time(t)


class AdminServer:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.get_routes: dict[str, Callable[[dict[str, list[str]]], Reply]] = {
            "/": self._help, "/config_dump": self._config_dump, "/stats": self._stats,
            "/stats/prometheus": self._prometheus, "/clusters": self._clusters, "/listeners": self._listeners,
            "/ready": self._ready, "/server_info": self._server_info, "/access_log": self._access_log,
            "/memory": self._memory,
        }
        self.post_routes: dict[str, Callable[[dict[str, list[str]]], Reply]] = {
            "/quitquitquit": self._quit, "/healthcheck/fail": self._hc_fail, "/healthcheck/ok": self._hc_ok,
            "/logging": self._logging, "/reset_counters": self._reset_counters, "/drain_listeners": self._drain,
        }

    async def start(self, host: str, port: int) -> None:
        me = self

        class _Conn(Channel):
            __slots__ = ()

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                asyncio.get_running_loop().create_task(me._serve(self))

        self.server = await asyncio.get_running_loop().create_server(_Conn, host, port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, chan: Channel) -> None:
        parser = RequestParser()
        pending: list[object] = []
        head: RequestHead | None = None
        try:
            while True:
                data = await chan.read()
                if not data:
                    return
                try:
                    pending.extend(parser.feed(data))
                except HttpError as e:
                    self._write(chan, e.status, "text/plain", reason(e.status).encode() + b"\n", False)
                    return
                while pending:
                    ev = pending.pop(0)
                    if isinstance(ev, RequestHead):
                        head = ev
                    elif ev is END and head is not None:
                        status, ctype, body = self.handle(head.method, head.target)
                        self._write(chan, status, ctype, b"" if head.method == "HEAD" else body, head.keep_alive)
                        if not head.keep_alive:
                            return
                        head = None
        finally:
            chan.close()

    @staticmethod
    def _write(chan: Channel, status: int, ctype: str, body: bytes, keep: bool) -> None:
        h = Headers([("content-type", ctype), ("content-length", str(len(body))), ("cache-control", "no-cache, max-age=0"),
                     ("x-content-type-options", "nosniff"), ("server", "minimesh")])
        if not keep:
            h.add("connection", "close")
        chan.write(response_head_bytes(status, reason(status), h) + body)

    def handle(self, method: str, target: str) -> Reply:
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True)
        path = url.path.rstrip("/") or "/"
        if path in self.post_routes:
            if method != "POST":
                return 405, "text/plain", b"This endpoint needs a POST request.\n"
            return self.post_routes[path](query)
        if path in self.get_routes:
            if method not in ("GET", "HEAD"):
                return 405, "text/plain", b"This endpoint needs a GET request.\n"
            try:
                return self.get_routes[path](query)
            except ValueError as e:
                return 400, "text/plain", f"{e}\n".encode()
        return 404, "text/plain", b"invalid path. admin commands are:\n" + self._help(query)[2]

    # GET ------------------------------------------------------------------------------------------
    def _help(self, q: dict[str, list[str]]) -> Reply:
        lines = [f"  {p}" for p in sorted(self.get_routes)] + [f"  {p} (POST)" for p in sorted(self.post_routes)]
        return 200, "text/plain", ("admin commands are:\n" + "\n".join(lines) + "\n").encode()

    def _json(self, data: Any) -> Reply:
        return 200, "application/json", (json.dumps(data, indent=2) + "\n").encode()

    def config_dump(self, include_eds: bool = True) -> dict[str, Any]:
        p = self.proxy
        r = p.resources
        boot = p.bootstrap.to_dict()
        static_listeners, dynamic_listeners = [], []
        for name, e in sorted(r.listeners.items()):
            lst = {"@type": T + "envoy.config.listener.v3.Listener", **e.resource.to_dict()}
            if e.static:
                static_listeners.append({"listener": lst, "last_updated": _ts(e.last_updated)})
            else:
                dynamic_listeners.append({"name": name, "active_state": {
                    "version_info": e.version_info, "listener": lst, "last_updated": _ts(e.last_updated)}})
        static_clusters, dynamic_clusters = [], []
        for _name, e in sorted(r.clusters.items()):
            c = {"@type": T + "envoy.config.cluster.v3.Cluster", **e.resource.to_dict()}
            if e.static:
                static_clusters.append({"cluster": c, "last_updated": _ts(e.last_updated)})
            else:
                dynamic_clusters.append({"version_info": e.version_info, "cluster": c,
                                         "last_updated": _ts(e.last_updated)})
        static_routes = []
        for _name, e in sorted(r.listeners.items()):
            for chain in e.resource.all_chains():
                rc = getattr(chain.terminal.config, "route_config", None)
                if rc is not None:
                    static_routes.append({"route_config": {"@type": T + "envoy.config.route.v3.RouteConfiguration",
                                                           **rc.to_dict()}, "last_updated": _ts(e.last_updated)})
        dynamic_routes = [{"version_info": e.version_info, "route_config": {
            "@type": T + "envoy.config.route.v3.RouteConfiguration", **e.resource.to_dict()},
            "last_updated": _ts(e.last_updated)} for _n, e in sorted(r.routes.items())]
        configs: list[dict[str, Any]] = [
            {"@type": T + "envoy.admin.v3.BootstrapConfigDump", "bootstrap": boot, "last_updated": _ts(p.started)},
            {"@type": T + "envoy.admin.v3.ClustersConfigDump", "version_info": r.version_info.get("clusters", ""),
             "static_clusters": static_clusters, "dynamic_active_clusters": dynamic_clusters},
            {"@type": T + "envoy.admin.v3.ListenersConfigDump", "version_info": r.version_info.get("listeners", ""),
             "static_listeners": static_listeners, "dynamic_listeners": dynamic_listeners},
            {"@type": T + "envoy.admin.v3.RoutesConfigDump", "static_route_configs": static_routes,
             "dynamic_route_configs": dynamic_routes},
        ]
        if include_eds:
            static_eps, dynamic_eps = [], []
            for _name, e in sorted(r.clusters.items()):
                la = e.resource.load_assignment
                if la is not None and e.resource.type != "EDS":
                    static_eps.append({"endpoint_config": {"@type": T + "envoy.config.endpoint.v3.ClusterLoadAssignment",
                                                           **la.to_dict()}, "last_updated": _ts(e.last_updated)})
            for _name, e in sorted(r.endpoints.items()):
                dynamic_eps.append({"version_info": e.version_info, "endpoint_config": {
                    "@type": T + "envoy.config.endpoint.v3.ClusterLoadAssignment", **e.resource.to_dict()},
                    "last_updated": _ts(e.last_updated)})
            configs.append({"@type": T + "envoy.admin.v3.EndpointsConfigDump", "static_endpoint_configs": static_eps,
                            "dynamic_endpoint_configs": dynamic_eps})
        return {"configs": configs}

    def _config_dump(self, q: dict[str, list[str]]) -> Reply:
        dump = self.config_dump()
        want = (q.get("resource") or [""])[0]
        if want:
            key = {"dynamic_listeners": "dynamic_listeners", "static_listeners": "static_listeners",
                   "dynamic_active_clusters": "dynamic_active_clusters", "static_clusters": "static_clusters",
                   "dynamic_route_configs": "dynamic_route_configs", "static_route_configs": "static_route_configs",
                   "dynamic_endpoint_configs": "dynamic_endpoint_configs"}.get(want)
            if key is None:
                raise ValueError(f"unknown resource {want!r}")
            return self._json({"configs": [x for c in dump["configs"] for x in c.get(key, [])]})
        return self._json(dump)

    def _stats(self, q: dict[str, list[str]]) -> Reply:
        fmt = (q.get("format") or [""])[0]
        flt = (q.get("filter") or [""])[0] or None
        if fmt == "json":
            return 200, "application/json", self.proxy.stats.render_json(flt).encode()
        if fmt == "prometheus":
            return self._prometheus(q)
        return 200, "text/plain", self.proxy.stats.render_text(flt, "usedonly" in q).encode()

    def _prometheus(self, q: dict[str, list[str]]) -> Reply:
        return 200, "text/plain; version=0.0.4", self.proxy.stats.render_prometheus().encode()

    def _clusters(self, q: dict[str, list[str]]) -> Reply:
        clusters = self.proxy.clusters.clusters
        if (q.get("format") or [""])[0] == "json":
            out = []
            for name, rt in sorted(clusters.items()):
                t = rt.config.thresholds
                out.append({"name": name, "added_via_api": not rt.static and not rt.implicit,
                            "circuit_breakers": {"thresholds": [t.to_dict()]},
                            "host_statuses": [{"address": {"socket_address": {"address": h.ip, "port_value": h.port}},
                                               "stats": [{"name": k, "value": getattr(h, k)} for k in
                                                         ("cx_active", "cx_connect_fail", "cx_total", "rq_active",
                                                          "rq_error", "rq_success", "rq_timeout", "rq_total")],
                                               "health_status": {"eds_health_status": h.health_status,
                                                                 "failed_outlier_check": h.ejected},
                                               "weight": h.weight} for h in rt.hosts]})
            return self._json({"cluster_statuses": out})
        lines = []
        for name, rt in sorted(clusters.items()):
            t = rt.config.thresholds
            lines.append(f"{name}::observability_name::{name}")
            for prio in ("default_priority", "high_priority"):
                th = t if prio == "default_priority" else type(t)()
                lines += [f"{name}::{prio}::max_connections::{th.max_connections}",
                          f"{name}::{prio}::max_pending_requests::{th.max_pending_requests}",
                          f"{name}::{prio}::max_requests::{th.max_requests}",
                          f"{name}::{prio}::max_retries::{th.max_retries}"]
            lines.append(f"{name}::added_via_api::{'true' if not rt.static and not rt.implicit else 'false'}")
            for h in rt.hosts:
                pre = f"{name}::{h.address}"
                for k in ("cx_active", "cx_connect_fail", "cx_total", "rq_active", "rq_error", "rq_success",
                          "rq_timeout", "rq_total"):
                    lines.append(f"{pre}::{k}::{getattr(h, k)}")
                lines += [f"{pre}::hostname::{h.hostname}", f"{pre}::health_flags::{h.health_flags()}",
                          f"{pre}::weight::{h.weight}", f"{pre}::region::{h.locality[0]}",
                          f"{pre}::zone::{h.locality[1]}", f"{pre}::sub_zone::{h.locality[2]}",
                          f"{pre}::canary::false", f"{pre}::priority::0", f"{pre}::success_rate::-1",
                          f"{pre}::local_origin_success_rate::-1"]
        return 200, "text/plain", ("\n".join(lines) + "\n").encode()

    def _listeners(self, q: dict[str, list[str]]) -> Reply:
        items = []
        for n, rt in sorted(self.proxy.listeners.items()):
            port = rt.cfg.address.port_value
            if rt.cfg.bind_to_port:
                try:
                    port = self.proxy.listener_port(n)  # the real port when the config said 0
                except KeyError:
                    pass
            items.append((n, rt.cfg.address.address, port))
        if (q.get("format") or [""])[0] == "json":
            return self._json({"listener_statuses": [
                {"name": n, "local_address": {"socket_address": {"address": a, "port_value": p}}} for n, a, p in items]})
        return 200, "text/plain", "".join(f"{n}::{a}:{p}\n" for n, a, p in items).encode()

    def _ready(self, q: dict[str, list[str]]) -> Reply:
        state = self.proxy.state
        if self.proxy.health_check_failed and state == "LIVE":
            state = "DRAINING"
        return (200 if state == "LIVE" else 503), "text/plain", f"{state}\n".encode()

    def _server_info(self, q: dict[str, list[str]]) -> Reply:
        return self._json(self.proxy.server_info())

    def _access_log(self, q: dict[str, list[str]]) -> Reply:
        n = int((q.get("n") or ["0"])[0] or 0)
        items = self.proxy.access_log.recent(n or None)
        if (q.get("format") or [""])[0] == "json":
            return self._json([i.to_dict() for i in items])
        return 200, "text/plain", "".join(format_line(i) for i in items).encode()

    def _memory(self, q: dict[str, list[str]]) -> Reply:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        try:
            with open("/proc/self/statm") as f:
                pages = int(f.read().split()[1])
            import os

            current = pages * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            current = rss
        return self._json({"allocated": str(current), "heap_size": str(current), "max_rss": str(rss)})

    # POST -----------------------------------------------------------------------------------------
    def _quit(self, q: dict[str, list[str]]) -> Reply:
        self.proxy.quit_soon(0)
        return 200, "text/plain", b"OK\n"

    def _hc_fail(self, q: dict[str, list[str]]) -> Reply:
        self.proxy.health_check_failed = True
        return 200, "text/plain", b"OK\n"

    def _hc_ok(self, q: dict[str, list[str]]) -> Reply:
        self.proxy.health_check_failed = False
        return 200, "text/plain", b"OK\n"

    def _logging(self, q: dict[str, list[str]]) -> Reply:
        level = (q.get("level") or [""])[0].lower()
        logger = logging.getLogger("minimesh")
        if level:
            if level not in LEVELS:
                return 400, "text/plain", f"unknown level {level!r}; use one of {', '.join(LEVELS)}\n".encode()
            logger.setLevel(LEVELS[level])
        names = sorted(n for n in logging.root.manager.loggerDict if n.startswith("minimesh"))
        body = "active loggers:\n" + "".join(
            f"  {n}: {logging.getLevelName(logging.getLogger(n).getEffectiveLevel()).lower()}\n" for n in names)
        return 200, "text/plain", body.encode()

    def _reset_counters(self, q: dict[str, list[str]]) -> Reply:
        self.proxy.stats.reset_counters()
        return 200, "text/plain", b"OK\n"

    def _drain(self, q: dict[str, list[str]]) -> Reply:
        for rt in self.proxy.listeners.values():
            rt.start_draining(self.proxy.options.drain_time)
        return 200, "text/plain", b"OK\n"


