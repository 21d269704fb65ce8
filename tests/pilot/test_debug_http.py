"""The push server's HTTP side: /ready, /metrics, /debug/syncz, /debug/config_dump, /debug/connections."""

from __future__ import annotations

import json

import aiohttp

from minimesh.xds import resources as xr


async def get(h, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{h.http_port}{path}") as r:
        return r.status, await r.text()


def test_debug_endpoints(arun, mm) -> None:
    async def body() -> None:
        async with mm.harness(quiet=0.02, max_delay=0.2) as h:
            assert (await get(h, "/ready"))[0] == 503
            h.ds.synced = True
            assert await get(h, "/ready") == (200, "ok\n")
            h.load(("Service", mm.service("details", ip="10.96.0.20")),
                   ("EndpointSlice", mm.endpoint_slice("details", ips=["10.244.0.5"])))
            rec = mm.Recorder(reject=lambda t, v, res: "no routes today" if t == xr.ROUTE_TYPE else None)
            h.client(mm.node("productpage-v1-abc", labels={"app": "productpage"}), rec)
            conn_ready = lambda: h.ds.connections and all(  # noqa: E731
                t in next(iter(h.ds.connections.values())).watched for t in xr.PUSH_ORDER)
            await mm.eventually(conn_ready, what="all four subscriptions")
            conn = next(iter(h.ds.connections.values()))
            await mm.eventually(lambda: conn.watched[xr.ROUTE_TYPE].last_error is not None
                                and conn.watched[xr.LISTENER_TYPE].nonce_acked, what="the RDS NACK")

            status, text = await get(h, "/debug/syncz")
            (row,) = json.loads(text)
            assert row["proxy"] == "sidecar~10.244.0.9~productpage-v1-abc.default~default.svc.cluster.local"
            assert row["cluster_synced"] and row["cluster_sent"] == row["cluster_acked"]
            assert row["cluster_version_acked"] == h.ds.ctx.version
            assert row["route_error"] == "no routes today" and not row["route_synced"] and row["route_nacks"] == 1

            status, text = await get(h, "/debug/config_dump?proxyID=productpage-v1-abc.default")
            assert status == 200
            dump = json.loads(text)
            kinds = [cfg["@type"].rsplit(".", 1)[-1] for cfg in dump["configs"]]
            assert kinds == ["ClustersConfigDump", "EndpointsConfigDump", "ListenersConfigDump", "RoutesConfigDump"]
            clusters = [c["cluster"]["name"] for c in dump["configs"][0]["dynamic_active_clusters"]]
            assert "outbound|9080||details.default.svc.cluster.local" in clusters
            listener = dump["configs"][2]["dynamic_listeners"][0]
            assert listener["active_state"]["listener"]["@type"] == xr.LISTENER_TYPE
            assert (await get(h, "/debug/config_dump?proxyID=nobody.default"))[0] == 404
            assert (await get(h, "/debug/config_dump"))[0] == 400

            status, text = await get(h, "/debug/connections")
            (c0,) = json.loads(text)
            assert c0["labels"] == {"app": "productpage"} and c0["watched"]["eds"] == [
                "outbound|9080||details.default.svc.cluster.local"]

            status, text = await get(h, "/metrics")
            assert status == 200
            for line in ['pilot_xds_pushes_total{type="cds"}', 'pilot_total_xds_rejects_total{type="rds"} 1.0',
                         "pilot_xds 1.0", "pilot_proxy_convergence_time_bucket", 'pilot_xds_config_size_bytes_bucket',
                         'pilot_push_triggers_total{type="service"} 1.0', "pilot_debounce_time_count"]:
                assert line in text, line

    arun(body())
