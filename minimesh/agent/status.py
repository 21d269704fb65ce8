"""The agent's HTTP side (Istio's status server), plain HTTP so the kubelet and Prometheus can use it:

    :15021  GET /healthz/ready                   200 when the proxy is LIVE (has its first complete config
                                                  from the push server), 503 otherwise or while draining
    :15020  GET /healthz/ready                   the same
            GET /app-health/<container>/<probe>  the app's original probe, run from inside the pod
            GET /stats/prometheus                the proxy's stats (+ the app's own metrics, if it had
                                                  prometheus.io annotations the injector moved here)
            POST /quitquitquit                   stop the proxy and the agent (the Job/CronJob escape hatch)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from minimesh.agent import probers
from minimesh.agent.identity import AgentConfigError

if TYPE_CHECKING:
    from minimesh.agent.proxyproc import Admin

log = logging.getLogger("minimesh.agent")
PROMETHEUS_ENV = "MESH_PROMETHEUS_ANNOTATIONS"


def parse_prometheus_annotations(text: str | None) -> tuple[int, str] | None:
    """MESH_PROMETHEUS_ANNOTATIONS (the app's original prometheus.io/* annotations) → (port, path) to
    scrape, or None when the app did not ask to be scraped."""
    if not text or not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AgentConfigError(f"{PROMETHEUS_ENV}: not JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise AgentConfigError(f"{PROMETHEUS_ENV}: want an object like {{\"scrape\":\"true\",\"port\":\"9090\"}}")
    if str(data.get("scrape", "")).lower() not in ("true", "1"):
        return None
    port = str(data.get("port", "80"))
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise AgentConfigError(f"{PROMETHEUS_ENV}: port {port!r} is not a port number")
    path = str(data.get("path") or "/metrics")
    return int(port), path if path.startswith("/") else "/" + path


class StatusServer:
    """Both ports' handlers. `readiness()` and `quit()` come from the agent."""

    def __init__(self, admin: Admin, app_probers: Mapping[str, probers.Probe], *,
                 readiness: Callable[[], Awaitable[tuple[bool, str]]], quit: Callable[[], None],
                 app_metrics: tuple[int, str] | None = None, probe_host: str = "127.0.0.1") -> None:
        self.admin = admin
        self.probers = dict(app_probers)
        self.readiness = readiness
        self.quit = quit
        self.app_metrics = app_metrics
        self.probe_host = probe_host
        self._runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}

    # handlers -------------------------------------------------------------------------------------
    async def ready(self, _: web.Request) -> web.Response:
        ok, why = await self.readiness()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def app_health(self, request: web.Request) -> web.Response:
        path = request.path
        probe = probers.probe_for(self.probers, path)
        if probe is None:
            known = ", ".join(sorted(self.probers)) or "none"
            return web.Response(status=404, text=f"no app probe for {path} (known: {known})\n")
        result = await probers.run_probe(probe, self.probe_host)
        if not result.ok:
            log.info("agent: app probe %s failed: %s", path, result.detail)
        return web.Response(status=200 if result.ok else 503, text=result.detail + "\n")

    async def prometheus(self, _: web.Request) -> web.Response:
        status, body = await self.admin.get("/stats/prometheus")
        if status != 200:
            return web.Response(status=503, text=f"cannot read the proxy's stats: {body}\n")
        if self.app_metrics is not None:
            port, path = self.app_metrics
            import aiohttp

            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, \
                        s.get(f"http://{self.probe_host}:{port}{path}") as r:
                    if r.status == 200:
                        body = body.rstrip("\n") + "\n" + (await r.text())
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                log.info("agent: app metrics %s:%d%s: %s", self.probe_host, port, path, e)
        return web.Response(text=body, content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Exposition": "text/plain; version=0.0.4"})

    async def quitquitquit(self, request: web.Request) -> web.Response:
        log.info("agent: POST /quitquitquit from %s: stopping the proxy and the agent", request.remote)
        self.quit()
        return web.Response(text="OK\n")

    # servers --------------------------------------------------------------------------------------
    def health_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz/ready", self.ready)
        return app

    def status_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz/ready", self.ready)
        app.router.add_get("/app-health/{container}/{probe}", self.app_health)
        app.router.add_get("/stats/prometheus", self.prometheus)
        app.router.add_post("/quitquitquit", self.quitquitquit)
        return app

    async def start(self, host: str, status_port: int, health_port: int) -> None:
        for name, app, port in (("status", self.status_app(), status_port), ("health", self.health_app(), health_port)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, host, port, reuse_address=True)
            try:
                await site.start()
            except OSError as e:
                await runner.cleanup()
                raise AgentConfigError(f"cannot listen on {host}:{port} ({name} port): {e.strerror or e}") from None
            self._runners.append(runner)
            server = site._server
            self.ports[name] = server.sockets[0].getsockname()[1] if server and server.sockets else port  # type: ignore[union-attr]

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
