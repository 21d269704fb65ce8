"""App probes (MESH_KUBE_APP_PROBERS) run against real servers, and the status server's HTTP side in front of
a real proxy's admin API."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from minimesh.agent import probers
from minimesh.agent.identity import AgentConfigError
from minimesh.agent.proxyproc import Admin
from minimesh.agent.status import StatusServer, parse_prometheus_annotations
from minimesh.proxy.config import parse_bootstrap
from minimesh.proxy.server import Proxy

LOOPBACK = "127.0.0.1"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


# ---- parsing ----------------------------------------------------------------------------------------

def test_parse_the_injectors_probers() -> None:
    text = json.dumps({
        "/app-health/details/readyz": {"httpGet": {"path": "/health", "port": 9080, "httpHeaders": [
            {"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 2},
        "/app-health/db/livez": {"tcpSocket": {"port": "5432"}},
        "/app-health/web/startupz": {"httpGet": {"path": "ready", "port": 8443, "scheme": "HTTPS"}},
    })
    got = probers.parse_probers(text)
    assert got["/app-health/details/readyz"] == probers.HttpProbe(9080, "/health", "HTTP", "", (("X-Probe", "1"),), 2.0)
    assert got["/app-health/db/livez"] == probers.TcpProbe(5432)
    assert got["/app-health/web/startupz"].path == "/ready" and got["/app-health/web/startupz"].scheme == "HTTPS"
    assert probers.parse_probers(None) == {} and probers.parse_probers("") == {}


@pytest.mark.parametrize("text, what", [
    ("{", "not JSON"),
    ("[]", "want a JSON object"),
    ('{"/health": {"tcpSocket": {"port": 1}}}', "key '/health'"),
    ('{"/app-health/a/readyz": {"exec": {"command": ["true"]}}}', "want httpGet or tcpSocket"),
    ('{"/app-health/a/readyz": {"httpGet": {"port": "http"}}}', "/app-health/a/readyz.httpGet.port"),
    ('{"/app-health/a/readyz": {"tcpSocket": {"port": 1}, "timeoutSeconds": 0}}', "timeoutSeconds"),
])
def test_bad_probers_are_named(text: str, what: str) -> None:
    with pytest.raises(AgentConfigError) as e:
        probers.parse_probers(text)
    assert str(e.value).startswith("MESH_KUBE_APP_PROBERS") and what in str(e.value)


def test_prometheus_annotations() -> None:
    assert parse_prometheus_annotations('{"scrape":"true","port":"9090","path":"/m"}') == (9090, "/m")
    assert parse_prometheus_annotations('{"scrape":"false","port":"9090"}') is None
    assert parse_prometheus_annotations(None) is None
    with pytest.raises(AgentConfigError, match="port 'x'"):
        parse_prometheus_annotations('{"scrape":"true","port":"x"}')


# ---- probes against real servers --------------------------------------------------------------------

@contextlib.asynccontextmanager
async def app_server() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.path == "/metrics":
            return web.Response(text="# TYPE app_requests counter\napp_requests 7\n")
        if request.path == "/slow":
            await asyncio.sleep(1.5)
        if request.path == "/moved":
            raise web.HTTPFound("/elsewhere")
        return web.Response(status=int(request.query.get("status", "200")), text="app\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1], seen  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_probes_follow_the_kubelets_rules() -> None:
    async def main() -> None:
        async with app_server() as (port, seen):
            ok = await probers.run_probe(probers.HttpProbe(port, "/health", headers=(("X-Probe", "yes"),)))
            assert ok.ok and "HTTP 200" in ok.detail
            assert seen[-1]["X-Probe"] == "yes" and seen[-1]["User-Agent"].startswith("kube-probe/")
            assert (await probers.run_probe(probers.HttpProbe(port, "/moved"))).ok  # 3xx counts as success
            bad = await probers.run_probe(probers.HttpProbe(port, "/?status=500"))
            assert not bad.ok and "HTTP 500" in bad.detail
            slow = await probers.run_probe(probers.HttpProbe(port, "/slow", timeout=0.2))
            assert not slow.ok and "timed out" in slow.detail
            assert (await probers.run_probe(probers.TcpProbe(port))).ok
        closed = _closed_port()
        refused = await probers.run_probe(probers.TcpProbe(closed))
        assert not refused.ok and "refused" in refused.detail.lower()
        assert not (await probers.run_probe(probers.HttpProbe(closed, "/"))).ok

    run(main())


# ---- the status server in front of a real proxy -------------------------------------------------------

def _proxy_boot(dynamic: bool) -> dict[str, Any]:
    boot: dict[str, Any] = {"node": {"id": "sidecar~10.0.0.1~p.default~default.svc.cluster.local"},
                            "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": 0}}},
                            "minimesh": {"access_log_path": ""}}
    if dynamic:
        boot["static_resources"] = {"clusters": [{"name": "xds-grpc", "type": "STATIC", "load_assignment": {
            "cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": LOOPBACK, "port_value": 1}}}}]}]}}]}
        boot["dynamic_resources"] = {"ads_config": {"grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}}
    return boot


async def _readiness_from(admin: Admin) -> tuple[bool, str]:
    status, body = await admin.get("/ready")
    return status == 200, body.strip() or str(status)


def test_status_server_ready_probes_metrics_and_quit() -> None:
    async def main() -> None:
        async with app_server() as (app_port, _):
            proxy = Proxy(parse_bootstrap(_proxy_boot(dynamic=True)))
            await proxy.start()
            admin = Admin(proxy.admin.port)
            quits: list[bool] = []
            status = StatusServer(admin, probers.parse_probers(json.dumps({
                "/app-health/app/readyz": {"httpGet": {"path": "/health", "port": app_port}},
                "/app-health/app/livez": {"httpGet": {"path": "/?status=503", "port": app_port}}})),
                readiness=lambda: _readiness_from(admin), quit=lambda: quits.append(True),
                app_metrics=(app_port, "/metrics"))
            await status.start(LOOPBACK, 0, 0)
            base, health = f"http://{LOOPBACK}:{status.ports['status']}", f"http://{LOOPBACK}:{status.ports['health']}"
            try:
                async with aiohttp.ClientSession() as s:
                    async def get(url: str) -> tuple[int, str]:
                        async with s.get(url) as r:
                            return r.status, await r.text()

                    assert await get(health + "/healthz/ready") == (503, "PRE_INITIALIZING\n")
                    proxy._set_state("LIVE")  # as the first complete xDS config does
                    assert (await get(health + "/healthz/ready"))[0] == 200
                    assert (await get(base + "/healthz/ready"))[0] == 200
                    code, text = await get(base + "/app-health/app/readyz")
                    assert code == 200 and "/health: HTTP 200" in text
                    assert (await get(base + "/app-health/app/livez"))[0] == 503
                    code, text = await get(base + "/app-health/other/readyz")
                    assert code == 404 and "known: /app-health/app/livez, /app-health/app/readyz" in text
                    code, text = await get(base + "/stats/prometheus")
                    assert code == 200 and "envoy_server_live 1" in text and "app_requests 7" in text
                    async with s.post(base + "/quitquitquit") as r:
                        assert r.status == 200
                    assert quits == [True]
                await proxy.stop()
                await admin.close()  # a proxy process that is gone takes its connections along
                async with aiohttp.ClientSession() as s, s.get(base + "/stats/prometheus") as r:
                    assert r.status == 503 and "not answering" in await r.text()
            finally:
                await status.stop()
                await admin.close()

    run(main())
