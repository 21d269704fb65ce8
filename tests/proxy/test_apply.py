"""Proxy.apply: validated, all-or-nothing config swaps, also under load."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import aiohttp
import pytest
from proxy_helpers import (
    LOOPBACK,
    addr,
    bootstrap,
    hcm,
    http_listener,
    route_config,
    running_proxy,
    static_cluster,
    upstreams,
)

from minimesh.proxy.config import ConfigError, Snapshot, parse_resource
from minimesh.proxy.config.snapshot import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def eds_cluster(name: str) -> Any:
    return parse_resource(CLUSTER_TYPE, {"name": name, "type": "EDS", "connect_timeout": "1s",
                                         "eds_cluster_config": {"eds_config": {"ads": {}}}})


def endpoints(name: str, ports: list[int]) -> Any:
    return parse_resource(ENDPOINT_TYPE, {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": addr(LOOPBACK, p)}} for p in ports]}]})


def routes(cluster: str, name: str = "r") -> Any:
    return parse_resource(ROUTE_TYPE, route_config([{"match": {"prefix": "/"}, "route": {"cluster": cluster}}], name=name))


def rds_listener(port: int = 0) -> Any:
    return parse_resource(LISTENER_TYPE, http_listener("dyn", hcm(rds="r", stat_prefix="dyn"), port=port))


def test_dynamic_resources_route_traffic_and_update() -> None:
    async def main() -> None:
        async with upstreams("a", "b") as (a, b), running_proxy(bootstrap([], [])) as p:
            await p.apply(Snapshot(clusters=(eds_cluster("svc"),), endpoints=(endpoints("svc", [a.port]),),
                                   listeners=(rds_listener(),), routes=(routes("svc"),),
                                   version_info={"clusters": "1", "endpoints": "1", "listeners": "1", "routes": "1"}))
            port = p.listener_port("dyn")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
                async def who() -> str:
                    async with s.get(f"http://{LOOPBACK}:{port}/") as r:
                        assert r.status == 200
                        return (await r.json())["upstream"]

                assert await who() == "a"
                # EDS update: the same keep-alive connection now reaches b
                await p.apply(Snapshot(endpoints=(endpoints("svc", [b.port]),), version_info={"endpoints": "2"}))
                assert await who() == "b"
                # RDS update to a cluster that does not exist yet: 503 NC, then CDS adds it
                await p.apply(Snapshot(routes=(routes("later"),), version_info={"routes": "2"}))
                async with s.get(f"http://{LOOPBACK}:{port}/") as r:
                    assert r.status == 503
                assert p.access_log.recent()[-1].flags_text() == "NC"
                await p.apply(Snapshot(clusters=(eds_cluster("svc"), parse_resource(CLUSTER_TYPE, static_cluster("later", [a.port]))),
                                       version_info={"clusters": "2"}))
                assert await who() == "a"
            assert p.resources.version_info == {"clusters": "2", "endpoints": "2", "listeners": "1", "routes": "2"}
            assert p.resources.listeners["dyn"].version_info == "1"
    run(main())


def test_a_bad_snapshot_changes_nothing() -> None:
    async def main() -> None:
        async with upstreams("a") as (a,), running_proxy(bootstrap([], [])) as p:
            good = Snapshot(clusters=(parse_resource(CLUSTER_TYPE, static_cluster("c", [a.port])),),
                            listeners=(rds_listener(),), routes=(routes("c"),),
                            version_info={"clusters": "1", "listeners": "1", "routes": "1"})
            await p.apply(good)
            before = p.resources
            port = p.listener_port("dyn")
            busy = socket.socket()
            busy.bind((LOOPBACK, 0))
            busy.listen()
            try:
                second = parse_resource(LISTENER_TYPE, http_listener("second", hcm(rds="r"), port=busy.getsockname()[1]))
                with pytest.raises(ConfigError, match="cannot listen on"):
                    await p.apply(Snapshot(listeners=(rds_listener(), second), clusters=(), version_info={"listeners": "2", "clusters": "2"}))
            finally:
                busy.close()
            with pytest.raises(ConfigError, match="duplicate name"):
                await p.apply(Snapshot(routes=(routes("c"), routes("c")), version_info={"routes": "9"}))
            assert p.resources is before and set(p.listeners) == {"dyn"} and "c" in p.clusters.clusters
            assert p.resources.version_info["listeners"] == "1"
            assert p.stats.get("listener_manager.lds.update_rejected") == 2
            async with aiohttp.ClientSession() as s, s.get(f"http://{LOOPBACK}:{port}/") as r:
                assert r.status == 200
    run(main())


def test_config_swap_under_load_fails_no_request() -> None:
    """Clients keep sending while routes, clusters, endpoints and the listener itself change."""
    async def main() -> None:
        async with upstreams("a", "b") as (a, b), running_proxy(bootstrap([], [], minimesh={"drain_time": "2s"})) as p:
            port_probe = socket.socket()
            port_probe.bind((LOOPBACK, 0))
            port = port_probe.getsockname()[1]
            port_probe.close()
            ca = parse_resource(CLUSTER_TYPE, static_cluster("ca", [a.port]))
            cb = parse_resource(CLUSTER_TYPE, static_cluster("cb", [b.port]))
            await p.apply(Snapshot(clusters=(ca, cb), listeners=(rds_listener(port),), routes=(routes("ca"),)))
            stop = asyncio.Event()
            statuses: Counter[int] = Counter()
            seen: Counter[str] = Counter()
            errors: list[str] = []

            async def client() -> None:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2)) as s:
                    while not stop.is_set():
                        try:
                            async with s.post(f"http://{LOOPBACK}:{port}/", data=b"z" * 512) as r:
                                statuses[r.status] += 1
                                seen[(await r.json())["upstream"]] += 1
                        except aiohttp.ClientError as e:
                            errors.append(repr(e))

            clients = [asyncio.create_task(client()) for _ in range(6)]
            for i in range(12):
                done = sum(statuses.values())
                while sum(statuses.values()) < done + 10 and not errors:  # requests overlap every swap
                    await asyncio.sleep(0.01)
                target = "cb" if i % 2 == 0 else "ca"
                listener = parse_resource(LISTENER_TYPE, http_listener(
                    "dyn", hcm(rds="r", stat_prefix="dyn", request_headers_timeout=f"{10 + i}s"), port=port))
                ca = parse_resource(CLUSTER_TYPE, static_cluster("ca", [a.port], connect_timeout=f"{1 + i}s"))
                await p.apply(Snapshot(clusters=(ca, cb), listeners=(listener,), routes=(routes(target),),
                                       version_info={"listeners": str(i), "routes": str(i), "clusters": str(i)}))
            done = sum(statuses.values())
            while sum(statuses.values()) < done + 10 and not errors:
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*clients)
            assert errors == [] and set(statuses) == {200}, (errors[:3], statuses)
            assert seen["a"] >= 10 and seen["b"] >= 10
            assert p.stats.get("listener_manager.lds.update_success") == 13
    run(main())
