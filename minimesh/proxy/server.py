"""The proxy process: config state, listeners, clusters, stats, access log, admin, drain and exit.

`Proxy.apply(snapshot)` is the entry point for dynamic config (stage 4's xDS client): the merged config
is validated and every new listener socket bound BEFORE anything changes; then clusters and listeners are
swapped in one step. Requests in flight finish on the objects they started with; replaced listeners
drain (their responses say `connection: close`, idle connections close after the drain time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from typing import Any

from minimesh.proxy.accesslog import AccessLog
from minimesh.proxy.config import Bootstrap, ConfigError, Resources, Snapshot
from minimesh.proxy.listener import ListenerRuntime, ListenSocket
from minimesh.proxy.secrets import SecretManager
from minimesh.proxy.stats import Stats
from minimesh.proxy.telemetry import Telemetry
from minimesh.proxy.upstream import ClusterManager

log = logging.getLogger("minimesh.proxy")
VERSION = "minimesh-proxy/0.1.0"


class Proxy:
    def __init__(self, bootstrap: Bootstrap, *, admin: bool = True) -> None:
        self.bootstrap = bootstrap
        self.node = bootstrap.node
        self.options = bootstrap.options
        self.stats = Stats()
        self.access_log = AccessLog(self.options.access_log_path, self.options.access_log_ring_size)
        self.telemetry = Telemetry(self.stats, self.node)
        self.resources = Resources()
        # SDS secrets (stage 6): the workload certificate and root from the agent, for TLS transport sockets
        self.secrets = SecretManager(self.node.to_dict(), bootstrap.clusters)
        self.clusters = ClusterManager(self.stats, self.secrets)
        self.listeners: dict[str, ListenerRuntime] = {}
        self.sockets: dict[tuple[str, int], ListenSocket] = {}
        self.downstreams: set[Any] = set()
        self.connection_tasks: set[asyncio.Task[Any]] = set()
        self.retired: list[ListenerRuntime] = []
        self.tcp_sessions = 0
        self.state = "PRE_INITIALIZING"
        self.health_check_failed = False
        self.started = time.time()
        self.stopped = asyncio.Event()
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._want_admin = admin
        self.admin: Any = None
        self.exit_code = 0
        root = self.stats.scope("server")
        self.g_live, self.g_state = root.gauge("live"), root.gauge("state")
        self.g_uptime = root.gauge("uptime")
        self.g_version = root.gauge("version")
        self.s_lds_success = self.stats.scope("listener_manager").counter("lds.update_success")
        self.s_lds_rejected = self.stats.scope("listener_manager").counter("lds.update_rejected")
        self.g_listeners_active = self.stats.scope("listener_manager").gauge("total_listeners_active")
        self.g_clusters = self.stats.scope("cluster_manager").gauge("active_clusters")

    # lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the bootstrap's static resources, bind listeners and the admin server."""
        if self._want_admin and self.bootstrap.admin_address is not None:
            from minimesh.proxy.admin import AdminServer

            self.admin = AdminServer(self)
            a = self.bootstrap.admin_address
            await self.admin.start(a.address, a.port_value)
        self.secrets.start()
        await self._install(Resources.from_bootstrap(self.bootstrap))
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        if not self.bootstrap.dynamic_resources:
            self._set_state("LIVE")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.g_live.set(1 if state == "LIVE" else 0)
        self.g_state.set({"LIVE": 0, "DRAINING": 1, "PRE_INITIALIZING": 2}.get(state, 3))

    async def apply(self, snapshot: Snapshot) -> Resources:
        """Validate and apply all-or-nothing; raises ConfigError (nothing changed) on a bad snapshot."""
        async with self._lock:
            try:
                new = self.resources.merge(snapshot)
                await self._install_locked(new)
            except ConfigError:
                self.s_lds_rejected.inc()
                raise
            self.s_lds_success.inc()
            if self.state == "PRE_INITIALIZING" and not self.health_check_failed:
                self._set_state("LIVE")
            return new

    async def _install(self, new: Resources) -> None:
        async with self._lock:
            await self._install_locked(new)

    async def _install_locked(self, new: Resources) -> None:
        # 1. build what changed (errors here change nothing)
        built: dict[str, ListenerRuntime] = {}
        for name, entry in new.listeners.items():
            old = self.listeners.get(name)
            if old is not None and old.cfg == entry.resource:
                built[name] = old
            else:
                built[name] = ListenerRuntime(self, entry.resource)
        for name, entry in new.clusters.items():
            c = entry.resource
            sockets = [(f"clusters[{name!r}].transport_socket", c.transport_socket)]
            sockets += [(f"clusters[{name!r}].transport_socket_matches[{i}]", m.transport_socket)
                        for i, m in enumerate(c.transport_socket_matches)]
            for where, ts in sockets:
                if ts is not None:
                    self.check_transport_socket(ts, where)
        # 2. bind the sockets that are new
        wanted: dict[tuple[str, int], ListenerRuntime] = {}
        for rt in built.values():
            if rt.cfg.bind_to_port:
                wanted[(rt.cfg.address.address, rt.cfg.address.port_value)] = rt
        fresh: dict[tuple[str, int], ListenSocket] = {}
        try:
            for key, rt in wanted.items():
                if key not in self.sockets:
                    sock = ListenSocket(rt)
                    await sock.bind(*key)
                    fresh[key] = sock
        except OSError as e:
            for sock in fresh.values():
                sock.close()
            raise ConfigError(f"listeners[{wanted[key].name!r}].address",
                              f"cannot listen on {key[0]}:{key[1]}: {e.strerror or e}") from None
        # 3. swap (nothing below can fail)
        self.clusters.apply(new)
        for key, sock in list(self.sockets.items()):
            if key in wanted:
                sock.owner = wanted[key]
            else:
                sock.close()
                del self.sockets[key]
        self.sockets.update(fresh)
        for name, rt in self.listeners.items():
            if built.get(name) is not rt:
                rt.start_draining(self.options.drain_time)
                self.retired.append(rt)
        self.listeners = built
        self.resources = new
        self.g_listeners_active.set(len(built))
        self.g_clusters.set(len(self.clusters.clusters))

    def check_transport_socket(self, ts: Any, where: str) -> None:
        """A TLS config must be usable before it is applied: its files load, its SDS source exists (then
        the secrets are asked for; they may arrive after the config)."""
        from minimesh.proxy.secrets import ContextSource

        if ts.common.sds_names:
            for ref in ts.common.sds_names:
                problem = self.secrets.check_source(ref, where)
                if problem:
                    raise ConfigError(where, problem.split(": ", 1)[1])
            self.secrets.subscribe(ts.common.sds_names)
            return
        try:
            ContextSource(ts, None)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise ConfigError(where, f"cannot load the TLS certificate/key/CA: {e}") from None

    def listener_for(self, dest: tuple[str, int], exclude: ListenerRuntime | None = None) -> ListenerRuntime | None:
        """The listener for an original destination: exactly ip:port, else 0.0.0.0:port."""
        exact = wildcard = None
        for rt in self.listeners.values():
            if rt is exclude:
                continue
            a = rt.cfg.address
            if a.port_value != dest[1]:
                continue
            if a.address == dest[0]:
                exact = rt
            elif a.address in ("0.0.0.0", "::"):
                wildcard = rt
        return exact or wildcard

    def listener_port(self, name: str) -> int:
        """The port a listener is bound to (useful when the config says port 0)."""
        rt = self.listeners[name]
        for sock in self.sockets.values():
            if sock.owner is rt:
                return sock.port
        raise KeyError(f"listener {name!r} is not bound to a port")

    def route_config(self, name: str) -> Any:
        return self.resources.route_config(name)

    # background work ------------------------------------------------------------------------------
    async def _sweep(self) -> None:
        """Header timeouts, idle timeouts and drain deadlines, checked a few times a second."""
        last_cleanup = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            self.g_uptime.set(int(time.time() - self.started))
            if now - last_cleanup > 1.0:
                last_cleanup = now
                for rt in self.clusters.clusters.values():
                    rt.close_idle(now)
                    rt.cleanup()
            for d in list(self.downstreams):
                hcm = d.hcm
                if d.in_request or d.closing:
                    continue
                timeout = hcm.cfg.request_headers_timeout
                if d.head_started is not None and timeout and now - d.head_started > timeout:
                    hcm.header_timeout(d)
                elif d.head_started is None and not d.events:
                    owner = hcm.owner
                    if hcm.cfg.idle_timeout and now - d.last_active > hcm.cfg.idle_timeout:
                        hcm.s_cx_idle_timeout.inc()
                        d.closing = True
                        d.chan.close()
                    elif owner.draining and owner.drain_deadline is not None and now > owner.drain_deadline:
                        d.closing = True
                        d.chan.close()
            for rt in list(self.retired):
                if rt.drain_deadline is not None and now > rt.drain_deadline:
                    for task in list(rt.connections):
                        task.cancel()
                if not rt.connections:
                    self.retired.remove(rt)

    async def drain_and_stop(self, drain_time: float | None = None, exit_code: int = 0) -> None:
        """Stop accepting, let requests in flight finish (up to the drain time), then stop."""
        if self.state == "DRAINING" and self.stopped.is_set():
            return
        self.exit_code = exit_code
        self._set_state("DRAINING")
        for sock in self.sockets.values():
            sock.close()
        drain = self.options.drain_time if drain_time is None else drain_time
        for rt in self.listeners.values():
            rt.start_draining(drain)
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline:
            for d in list(self.downstreams):
                if not d.in_request and not d.closing:  # idle keep-alive connections: close now
                    d.closing = True
                    d.chan.close()
            if not any(d.in_request for d in self.downstreams) and not self.tcp_sessions:
                break
            await asyncio.sleep(0.05)
        await self.stop()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        tasks = [t for t in self.connection_tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        self.clusters.close()
        await self.secrets.stop()
        if self.admin is not None:
            await self.admin.stop()
        self.access_log.flush()
        self.stopped.set()

    def quit_soon(self, exit_code: int = 0) -> None:
        asyncio.get_running_loop().create_task(self.drain_and_stop(exit_code=exit_code))

    def server_info(self) -> dict[str, Any]:
        up = int(time.time() - self.started)
        return {"version": VERSION, "state": self.state, "hot_restart_version": "disabled",
                "uptime_current_epoch": f"{up}s", "uptime_all_epochs": f"{up}s", "pid": os.getpid(),
                "command_line_options": {"drain_time": f"{self.options.drain_time}s"},
                "node": self.node.to_dict()}
