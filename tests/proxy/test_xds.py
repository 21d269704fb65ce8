"""The proxy's xDS wiring (minimesh/proxy/xds.py): the bootstrap's ADS section, Envoy's warming rules, and
ADS updates applied to a real proxy serving real traffic (NACK keeps the last good config).

End to end against the real push server over gRPC, in network namespaces: tests/agent/test_agent_netns.py.
"""

from __future__ import annotations

import asyncio
import json
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
    upstreams,
)

from minimesh.agent.bootstrap import BootstrapOptions, build_bootstrap
from minimesh.agent.identity import PodIdentity
from minimesh.proxy.config import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ConfigError,
    Resources,
    parse_bootstrap,
)
from minimesh.proxy.xds import Warming, XdsPlan, XdsRuntime, parse_update


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


# ---- resources as the push server sends them (Envoy-shaped dicts) -----------------------------------

def cluster_d(name: str) -> dict[str, Any]:
    return {"name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"ads": {}}, "service_name": name}}


def cla_d(name: str, ports: list[int]) -> dict[str, Any]:
    eps = [{"endpoint": {"address": addr(LOOPBACK, p)}} for p in ports]
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}] if eps else []}


def listener_d(name: str, rds: str) -> dict[str, Any]:
    return http_listener(name, hcm(rds=rds, stat_prefix=name))


def routes_d(name: str, cluster: str, match: dict[str, Any] | None = None) -> dict[str, Any]:
    return route_config([{"match": match or {"prefix": "/"}, "route": {"cluster": cluster}}], name=name)


# ---- XdsPlan: the bootstrap's ADS section ---------------------------------------------------------------

def agent_bootstrap(address: str = "minimeshd.mesh-system.svc:15010") -> dict[str, Any]:
    ident = PodIdentity(pod="sleep-1", namespace="default", ip="10.244.0.5", service_account="sleep")
    return build_bootstrap(ident, BootstrapOptions(address))


def test_plan_reads_the_push_server_from_the_xds_cluster() -> None:
    plan = XdsPlan.from_bootstrap(parse_bootstrap(agent_bootstrap()))
    assert plan is not None
    assert (plan.host, plan.port, plan.cluster, plan.address) == ("minimeshd.mesh-system.svc", 15010, "xds-grpc",
                                                                  "minimeshd.mesh-system.svc:15010")
    assert XdsPlan.from_bootstrap(parse_bootstrap(bootstrap([], []))) is None  # static config: no ADS


@pytest.mark.parametrize("change, where, what", [
    (lambda b: b["dynamic_resources"]["ads_config"].update(api_type="DELTA_GRPC"),
     "dynamic_resources.ads_config.api_type", "not supported"),
    (lambda b: b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"].update(cluster_name="nope"),
     "envoy_grpc.cluster_name", "no static cluster 'nope'"),
    (lambda b: b["dynamic_resources"].update(lds_config={"path": "/etc/lds.yaml"}),
     "dynamic_resources.lds_config", "only ADS"),
    (lambda b: b["dynamic_resources"].pop("ads_config"), "dynamic_resources.ads_config", "required"),
    (lambda b: b["dynamic_resources"]["ads_config"].update(grpc_services=[]),
     "dynamic_resources.ads_config.grpc_services", "exactly one"),
])
def test_plan_errors_name_the_field(change: Any, where: str, what: str) -> None:
    boot = agent_bootstrap()
    change(boot)
    with pytest.raises(ConfigError) as e:
        XdsPlan.from_bootstrap(parse_bootstrap(boot))
    assert where in str(e.value) and what in str(e.value)


# ---- Warming (pure) ---------------------------------------------------------------------------------------

def parsed(type_url: str, *items: dict[str, Any]) -> tuple[Any, ...]:
    return parse_update(type_url, list(items))[1]


def test_first_config_waits_for_a_complete_set() -> None:
    w = Warming(timeout=15)
    empty = Resources()
    w.offer("clusters", parsed(CLUSTER_TYPE, cluster_d("c")), "v1", 0)
    assert w.ready(empty, 0) is None  # no listeners yet
    w.offer("listeners", parsed(LISTENER_TYPE, listener_d("l", "r")), "v1", 0)
    assert w.ready(empty, 0) is None
    assert w.missing(empty) == {"endpoints": ["c"], "routes": ["r"]}
    w.offer("endpoints", parsed(ENDPOINT_TYPE, cla_d("c", [1])), "v1", 0)
    assert w.ready(empty, 0) is None  # clusters warm, listeners still wait for RDS
    w.offer("routes", parsed(ROUTE_TYPE, routes_d("r", "c")), "v1", 0)
    snap = w.ready(empty, 0)
    assert snap is not None and all(getattr(snap, k) for k in ("clusters", "listeners", "endpoints", "routes"))
    assert dict(snap.version_info) == {"clusters": "v1", "listeners": "v1", "endpoints": "v1", "routes": "v1"}
    w.applied(snap)
    assert w.initialized and not w.pending


def test_after_init_each_kind_applies_when_warm_and_the_timeout_forces_it() -> None:
    w = Warming(timeout=15, initialized=True)
    applied = Resources().merge(_snapshot(w, clusters=[cluster_d("a")], endpoints=[cla_d("a", [1])]))
    w.offer("endpoints", parsed(ENDPOINT_TYPE, cla_d("a", [2])), "v2", 0)
    assert w.ready(applied, 0).endpoints  # endpoints never wait
    w.pending.clear()
    w.offer("clusters", parsed(CLUSTER_TYPE, cluster_d("a"), cluster_d("b")), "v2", 10)
    assert w.ready(applied, 10) is None  # b has no assignment yet
    assert w.deadline() == 25
    w.offer("clusters", parsed(CLUSTER_TYPE, cluster_d("a"), cluster_d("b"), cluster_d("c")), "v3", 20)
    assert w.deadline() == 25  # a newer version keeps waiting from the first one's start
    assert w.ready(applied, 24.9) is None
    forced = w.ready(applied, 25)
    assert forced is not None and [c.name for c in forced.clusters] == ["a", "b", "c"]
    assert forced.version_info["clusters"] == "v3"


def _snapshot(w: Warming, **kinds: list[dict[str, Any]]) -> Any:
    from minimesh.proxy.config import Snapshot

    types = {"clusters": CLUSTER_TYPE, "endpoints": ENDPOINT_TYPE, "listeners": LISTENER_TYPE, "routes": ROUTE_TYPE}
    return Snapshot(**{k: parsed(types[k], *v) for k, v in kinds.items()})


def test_parse_errors_name_the_resource() -> None:
    with pytest.raises(ConfigError) as e:
        parse_update(ROUTE_TYPE, [routes_d("9080", "c", {"safe_regex": {"regex": "/a/(b"}})])
    assert str(e.value).startswith("routes['9080'].virtual_hosts[0].routes[0].match.safe_regex.regex: bad regex")
    with pytest.raises(ConfigError, match="does not use"):
        parse_update("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", [])


# ---- XdsRuntime on a real proxy --------------------------------------------------------------------------

def dynamic_bootstrap() -> dict[str, Any]:
    boot = bootstrap([], [{"name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
                           "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
                               {"endpoint": {"address": addr(LOOPBACK, 1)}}]}]}}])
    boot["dynamic_resources"] = {"ads_config": {"api_type": "GRPC", "grpc_services": [
        {"envoy_grpc": {"cluster_name": "xds-grpc"}}]}}
    return boot


async def _get(port: int, path: str = "/") -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://{LOOPBACK}:{port}{path}") as r:
        return r.status, await r.text()


async def _admin(proxy: Any, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(f"http://{LOOPBACK}:{proxy.admin.port}{path}") as r:
        return r.status, (await r.json() if r.content_type == "application/json" else await r.text())


def test_updates_apply_as_a_set_and_a_bad_one_is_rejected_with_the_last_good_config_kept() -> None:
    async def main() -> None:
        async with upstreams("one", "two") as (one, two), running_proxy(dynamic_bootstrap()) as proxy:
            plan = XdsPlan.from_bootstrap(proxy.bootstrap)
            assert plan is not None
            xds = XdsRuntime(proxy, plan)  # not started: the test plays the ADS client's part
            assert (await _admin(proxy, "/ready"))[0] == 503

            await xds.on_update(CLUSTER_TYPE, "1", [cluster_d("svc")])
            await xds.on_update(LISTENER_TYPE, "1", [listener_d("http", "r")])
            await xds.on_update(ENDPOINT_TYPE, "1", [cla_d("svc", [one.port])])
            assert proxy.state == "PRE_INITIALIZING" and "http" not in proxy.listeners  # warming: no RDS yet
            await xds.on_update(ROUTE_TYPE, "1", [routes_d("r", "svc")])
            assert proxy.state == "LIVE"
            port = proxy.listener_port("http")
            status, body = await _get(port)
            assert status == 200 and json.loads(body)["upstream"] == "one"

            # NACK: the bad route configuration is refused, traffic and versions stay as they were
            with pytest.raises(ConfigError, match="bad regex"):
                await xds.on_update(ROUTE_TYPE, "2", [routes_d("r", "svc", {"safe_regex": {"regex": "(("}})])
            assert (await _get(port))[0] == 200
            _, dump = await _admin(proxy, "/config_dump?resource=dynamic_route_configs")
            assert [c["version_info"] for c in dump["configs"]] == ["1"]

            # a new EDS endpoint set moves traffic at once
            await xds.on_update(ENDPOINT_TYPE, "2", [cla_d("svc", [two.port])])
            assert json.loads((await _get(port))[1])["upstream"] == "two"
            _, stats = await _admin(proxy, "/stats?filter=control_plane")
            assert "control_plane.rds.update_rejected: 1" in stats and "control_plane.eds.update_success: 2" in stats

            # config_dump shows the version per resource, as Envoy's does
            _, dump = await _admin(proxy, "/config_dump")
            clusters = next(c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump"))
            assert [(c["cluster"]["name"], c["version_info"]) for c in clusters["dynamic_active_clusters"]] == [("svc", "1")]
            assert clusters["version_info"] == "1"
            eps = next(c for c in dump["configs"] if c["@type"].endswith("EndpointsConfigDump"))
            assert [e["version_info"] for e in eps["dynamic_endpoint_configs"]] == ["2"]

    run(main())


def test_a_new_cluster_warms_until_its_endpoints_arrive_or_the_timeout() -> None:
    async def main() -> None:
        async with upstreams("one") as (one,), running_proxy(dynamic_bootstrap()) as proxy:
            plan = XdsPlan.from_bootstrap(proxy.bootstrap)
            assert plan is not None
            xds = XdsRuntime(proxy, plan, warm_timeout=0.3)
            for t, items in ((CLUSTER_TYPE, [cluster_d("a")]), (ENDPOINT_TYPE, [cla_d("a", [one.port])]),
                             (LISTENER_TYPE, [listener_d("http", "r")]), (ROUTE_TYPE, [routes_d("r", "a")])):
                await xds.on_update(t, "1", items)
            assert proxy.state == "LIVE"
            await xds.on_update(CLUSTER_TYPE, "2", [cluster_d("a"), cluster_d("b")])
            assert sorted(proxy.resources.clusters) == ["a", "xds-grpc"]  # b waits for EDS
            await xds.on_update(ENDPOINT_TYPE, "2", [cla_d("a", [one.port]), cla_d("b", [one.port])])
            assert sorted(proxy.resources.clusters) == ["a", "b", "xds-grpc"]

            await xds.on_update(CLUSTER_TYPE, "3", [cluster_d("a"), cluster_d("b"), cluster_d("c")])
            assert "c" not in proxy.resources.clusters
            for _ in range(100):  # EDS for c never comes: after the warm timeout c is applied without endpoints
                if "c" in proxy.resources.clusters:
                    break
                await asyncio.sleep(0.02)
            assert "c" in proxy.resources.clusters and proxy.resources.version_info["clusters"] == "3"
            assert (await _get(proxy.listener_port("http")))[0] == 200
            await xds.stop()

    run(main())


def test_an_update_that_cannot_be_installed_is_rejected_and_forgotten() -> None:
    async def main() -> None:
        async with upstreams("one") as (one,), running_proxy(dynamic_bootstrap()) as proxy:
            plan = XdsPlan.from_bootstrap(proxy.bootstrap)
            assert plan is not None
            xds = XdsRuntime(proxy, plan)
            for t, items in ((CLUSTER_TYPE, [cluster_d("a")]), (ENDPOINT_TYPE, [cla_d("a", [one.port])]),
                             (LISTENER_TYPE, [listener_d("http", "r")]), (ROUTE_TYPE, [routes_d("r", "a")])):
                await xds.on_update(t, "1", items)
            # a listener on a port another socket holds: validation passes, binding fails -> NACK, nothing changes
            holder = await asyncio.start_server(lambda r, w: None, LOOPBACK, 0)
            taken = holder.sockets[0].getsockname()[1]
            clash = {**listener_d("clash", "r"), "address": addr(LOOPBACK, taken)}
            with pytest.raises(ConfigError, match="cannot listen"):
                await xds.on_update(LISTENER_TYPE, "2", [listener_d("http", "r"), clash])
            holder.close()
            assert sorted(proxy.listeners) == ["http"] and not xds.warming.pending
            assert proxy.resources.version_info["listeners"] == "1"

    run(main())
