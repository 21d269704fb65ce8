"""The admin API, Istio metrics between two proxies, and the proxy as a process (`python -m minimesh.proxy`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from proxy_helpers import (
    LOOPBACK,
    addr,
    bootstrap,
    hcm,
    http_listener,
    raw_exchange,
    route_config,
    running_proxy,
    static_cluster,
    status_of,
    upstreams,
)

from minimesh.proxy.config import Snapshot


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def admin_get(p: Any, path: str, method: str = "GET") -> tuple[int, str]:
    raw = await raw_exchange(p.admin.port, f"{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    return status_of(raw), raw.split(b"\r\n\r\n", 1)[1].decode()


def boot_for(port: int, **extra: Any) -> dict[str, Any]:
    return bootstrap([http_listener("ingress", hcm(route_config([{"match": {"prefix": "/"}, "route": {"cluster": "c"}}])))],
                     [static_cluster("c", [port])], **extra)


def test_config_dump_stats_clusters_listeners_ready() -> None:
    async def main() -> None:
        async with upstreams("a") as (a,), running_proxy(boot_for(a.port)) as p:
            async with aiohttp.ClientSession() as s:
                for _ in range(3):
                    async with s.get(f"http://{LOOPBACK}:{p.listener_port('ingress')}/") as r:
                        assert r.status == 200
            status, body = await admin_get(p, "/config_dump")
            dump = json.loads(body)
            types = [c["@type"].rsplit(".", 1)[1] for c in dump["configs"]]
            assert types == ["BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump",
                             "EndpointsConfigDump"]
            clusters = dump["configs"][1]["static_clusters"]
            assert clusters[0]["cluster"]["name"] == "c" and clusters[0]["cluster"]["connect_timeout"] == "1s"
            assert dump["configs"][2]["static_listeners"][0]["listener"]["name"] == "ingress"
            assert dump["configs"][3]["static_route_configs"][0]["route_config"]["name"] == "local"
            assert dump["configs"][0]["bootstrap"]["node"]["id"] == "test"

            status, text = await admin_get(p, "/stats")
            assert status == 200 and "cluster.c.upstream_rq_total: 3" in text and "server.live: 1" in text
            status, body = await admin_get(p, "/stats?format=json&filter=upstream_rq_2xx")
            assert json.loads(body)["stats"] == [{"name": "cluster.c.upstream_rq_2xx", "value": 3}]
            status, prom = await admin_get(p, "/stats/prometheus")
            assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="c"} 3' in prom
            assert 'envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress"} 3' in prom
            status, text = await admin_get(p, "/clusters")
            assert f"c::127.0.0.1:{a.port}::rq_success::3" in text
            assert f"c::127.0.0.1:{a.port}::health_flags::healthy" in text
            assert "c::default_priority::max_retries::3" in text
            status, text = await admin_get(p, "/listeners")
            assert text == f"ingress::127.0.0.1:{p.listener_port('ingress')}\n"
            assert await admin_get(p, "/ready") == (200, "LIVE\n")
            status, body = await admin_get(p, "/server_info")
            assert json.loads(body)["state"] == "LIVE"
            status, text = await admin_get(p, "/access_log")
            assert text.count("\n") == 3 and '"GET / HTTP/1.1" 200 -' in text
            # POST-only endpoints refuse GET, like Envoy
            assert (await admin_get(p, "/quitquitquit"))[0] == 405
            assert (await admin_get(p, "/healthcheck/fail", "POST"))[0] == 200
            assert await admin_get(p, "/ready") == (503, "DRAINING\n")
            assert (await admin_get(p, "/healthcheck/ok", "POST"))[0] == 200
            status, text = await admin_get(p, "/logging?level=debug", "POST")
            assert status == 200 and "minimesh" in text
            assert (await admin_get(p, "/logging?level=loud", "POST"))[0] == 400
            assert (await admin_get(p, "/nope"))[0] == 404
    run(main())


def test_ready_waits_for_dynamic_config() -> None:
    async def main() -> None:
        async with upstreams("a") as (a,):
            boot = boot_for(a.port, dynamic_resources={"ads_config": {"api_type": "GRPC"}})
            async with running_proxy(boot) as p:
                assert await admin_get(p, "/ready") == (503, "PRE_INITIALIZING\n")
                await p.apply(Snapshot(routes=(), version_info={"routes": "1"}))
                assert await admin_get(p, "/ready") == (200, "LIVE\n")
                dump = json.loads((await admin_get(p, "/config_dump"))[1])
                assert dump["configs"][3]["dynamic_route_configs"] == []
    run(main())


def test_istio_metrics_and_peer_metadata_between_two_proxies() -> None:
    """client -> outbound proxy (productpage) -> inbound proxy (details) -> app."""
    async def main() -> None:
        async with upstreams("details-app") as (app,):
            inbound = bootstrap(
                [http_listener("virtualInbound", hcm(route_config([{"match": {"prefix": "/"}, "route": {"cluster": "inbound|9080||"}}]),
                                                      stat_prefix="inbound_0.0.0.0_9080"), traffic_direction="INBOUND")],
                [static_cluster("inbound|9080||", [app.port], upstream_bind_config={"source_address": {"address": "127.0.0.6", "port_value": 0}})])
            inbound["node"]["metadata"] = {"WORKLOAD_NAME": "details-v1", "NAMESPACE": "default", "LABELS": {"app": "details", "version": "v1"}}
            async with running_proxy(inbound) as pin:
                outbound = bootstrap(
                    [http_listener("0.0.0.0_9080", hcm(route_config([{"match": {"prefix": "/"}, "route": {
                        "cluster": "outbound|9080||details.default.svc.cluster.local"}}]), stat_prefix="outbound_0.0.0.0_9080"),
                        traffic_direction="OUTBOUND")],
                    [static_cluster("outbound|9080||details.default.svc.cluster.local", [pin.listener_port("virtualInbound")],
                                    metadata={"filter_metadata": {"istio": {"services": [{"host": "details.default.svc.cluster.local"}]}}})])
                outbound["node"]["metadata"] = {"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default",
                                                "LABELS": {"app": "productpage", "version": "v1"}}
                async with running_proxy(outbound) as pout, aiohttp.ClientSession() as s:
                    async with s.get(f"http://{LOOPBACK}:{pout.listener_port('0.0.0.0_9080')}/details/0",
                                     headers={"host": "details:9080"}) as r:
                        assert r.status == 200
                        echoed = await r.json()
                        assert "x-envoy-peer-metadata" not in r.headers  # the outbound proxy took it
                    assert "x-envoy-peer-metadata" not in echoed["headers"]  # the inbound proxy took it
                    assert echoed["peer"][0] == "127.0.0.6"  # inbound passthrough source address
                    prom_in = (await admin_get(pin, "/stats/prometheus"))[1]
                    prom_out = (await admin_get(pout, "/stats/prometheus"))[1]
        line_in = next(x for x in prom_in.splitlines() if x.startswith("istio_requests_total{"))
        line_out = next(x for x in prom_out.splitlines() if x.startswith("istio_requests_total{"))
        for want in ('reporter="destination"', 'source_workload="productpage-v1"', 'destination_workload="details-v1"',
                     'destination_app="details"', 'response_code="200"', 'response_flags="-"'):
            assert want in line_in, line_in
        for want in ('reporter="source"', 'source_workload="productpage-v1"', 'destination_workload="details-v1"',
                     'destination_service="details.default.svc.cluster.local"', 'destination_service_name="details"',
                     'destination_service_namespace="default"'):
            assert want in line_out, line_out
        assert line_out.endswith(" 1")
    run(main())


def _start_process(tmp_path: Path, boot: dict[str, Any]) -> tuple[subprocess.Popen[str], dict[str, int]]:
    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(boot))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "minimesh.proxy", "--bootstrap", str(path), "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 20
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"admin on [\d.]+:(\d+);.*listeners: (.*)$", line)
        if m:
            ports = {"admin": int(m.group(1))}
            for part in m.group(2).split():
                name, _, port = part.partition("=")
                ports[name] = int(port)
            return proc, ports
    proc.kill()
    raise AssertionError(f"the proxy did not start: {proc.stderr.read()}")


def test_process_logs_to_stdout_and_quits_cleanly(tmp_path: Path) -> None:
    async def main() -> None:
        async with upstreams("a") as (a,):
            boot = boot_for(a.port)
            boot["minimesh"]["access_log_path"] = "/dev/stdout"
            proc, ports = await asyncio.to_thread(_start_process, tmp_path, boot)
            try:
                raw = await raw_exchange(ports["ingress"], b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert status_of(raw) == 200
                raw = await raw_exchange(ports["admin"], b"POST /quitquitquit HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                assert status_of(raw) == 200
                code = await asyncio.to_thread(proc.wait, 15)
                out = proc.stdout.read() if proc.stdout else ""
                assert code == 0
                assert re.search(r'^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] "GET /hello HTTP/1.1" 200 - via_upstream - "-" 0 \d+ \d+ \d+ "-" "-" "[0-9a-f-]{36}" "x" '
                                 rf'"127.0.0.1:{a.port}" c ', out, re.M), out
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    run(main())


def test_process_rejects_a_bad_bootstrap_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    boot = boot_for(1)
    boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["name"] = "envoy.filters.network.foo"
    path.write_text(yaml.safe_dump(boot))
    r = subprocess.run([sys.executable, "-m", "minimesh.proxy", "--bootstrap", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert 'static_resources.listeners[0].filter_chains[0].filters[0]: unknown filter "envoy.filters.network.foo"' in r.stderr
    assert "Traceback" not in r.stderr


def test_process_reports_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        s.listen()
        port = s.getsockname()[1]
        boot = boot_for(1)
        boot["static_resources"]["listeners"][0]["address"] = addr(LOOPBACK, port)
        path = tmp_path / "b.yaml"
        path.write_text(yaml.safe_dump(boot))
        r = subprocess.run([sys.executable, "-m", "minimesh.proxy", "--bootstrap", str(path)], capture_output=True,
                           text=True, timeout=30)
    assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
