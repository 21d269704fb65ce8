"""ADS end to end: the real push server (grpcio) and the proxy's xDS client (h2) on loopback."""

from __future__ import annotations

import asyncio

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from minimesh.pilot.server import serve_grpc
from minimesh.xds import resources as xr
from minimesh.xds.client import ADS_PATH
from minimesh.xds.transport import GrpcStream


def load_bookinfo(h, mm) -> None:
    h.load(
        ("Service", mm.service("details", ip="10.96.0.20")),
        ("EndpointSlice", mm.endpoint_slice("details", ips=["10.244.0.5"])),
        ("Service", mm.service("reviews", ip="10.96.0.30")),
        ("EndpointSlice", mm.endpoint_slice("reviews", ips=["10.244.0.6", "10.244.0.7"])),
    )


def names(resources):
    return sorted(r.get("name") or r.get("cluster_name") for r in resources)


def test_initial_sync_delivers_every_type_in_push_order(arun, mm) -> None:
    async def body() -> None:
        async with mm.harness() as h:
            load_bookinfo(h, mm)
            c, rec = h.client(mm.node("productpage-v1-abc"))
            await c.wait_until(lambda c: c.state.acked_version(xr.ROUTE_TYPE) != "", 10)
            order = [t for t, _, _ in rec.updates]
            # Warming order: endpoints after their clusters, routes after their listeners.
            assert order.index(xr.CLUSTER_TYPE) < order.index(xr.ENDPOINT_TYPE)
            assert order.index(xr.LISTENER_TYPE) < order.index(xr.ROUTE_TYPE)
            assert names(rec.latest(xr.CLUSTER_TYPE)) == [
                "BlackHoleCluster", "InboundPassthroughClusterIpv4", "PassthroughCluster",
                "outbound|9080||details.default.svc.cluster.local",
                "outbound|9080||reviews.default.svc.cluster.local",
            ]
            eds = {r["cluster_name"]: r for r in rec.latest(xr.ENDPOINT_TYPE)}
            reviews = eds["outbound|9080||reviews.default.svc.cluster.local"]
            ips = [e["endpoint"]["address"]["socket_address"]["address"] for e in reviews["endpoints"][0]["lb_endpoints"]]
            assert ips == ["10.244.0.6", "10.244.0.7"]
            assert names(rec.latest(xr.LISTENER_TYPE)) == ["0.0.0.0_9080", "virtualInbound", "virtualOutbound"]
            assert names(rec.latest(xr.ROUTE_TYPE)) == ["9080"]
            # Every type is ACKed on the server with the version it sent.
            conn = next(iter(h.ds.connections.values()))
            await mm.eventually(lambda: all(w.nonce_acked == w.nonce_sent for w in conn.watched.values()),
                                what="the server to see every ACK")
            for t in xr.PUSH_ORDER:
                w = conn.watched[t]
                assert w.version_acked == w.version_sent == h.ds.ctx.version

    arun(body())


def test_endpoint_change_is_an_eds_only_push(arun, mm) -> None:
    async def body() -> None:
        async with mm.harness(quiet=0.02, max_delay=0.2) as h:
            load_bookinfo(h, mm)
            c, rec = h.client(mm.node("productpage-v1-abc"))
            await c.wait_until(lambda c: c.state.acked_version(xr.ROUTE_TYPE) != "", 10)
            # Pushes queued by loading bookinfo may still be on their way: start counting once it is quiet.
            await mm.eventually(lambda: h.ds.debouncer.deadline() is None
                                and all(cn.pending_push is None for cn in h.ds.connections.values()),
                                what="a quiet push server")
            await asyncio.sleep(0.05)
            before = len(rec.updates)
            pushes_before = {t: h.ds.metrics.pushes.labels(xr.short_name(t))._value.get() for t in xr.PUSH_ORDER}
            h.ds.apply("EndpointSlice", "MODIFIED", mm.endpoint_slice("details", ips=["10.244.0.5", "10.244.0.8"]))
            await mm.eventually(lambda: len(rec.updates) > before, what="the EDS push")
            await asyncio.sleep(0.1)
            new = rec.updates[before:]
            assert [t for t, _, _ in new] == [xr.ENDPOINT_TYPE]
            # The client merges the incremental EDS response: both clusters are still there.
            eds = {r["cluster_name"]: r for r in new[0][2]}
            assert len(eds) == 2
            lb = eds["outbound|9080||details.default.svc.cluster.local"]["endpoints"][0]["lb_endpoints"]
            assert [e["endpoint"]["address"]["socket_address"]["address"] for e in lb] == ["10.244.0.5", "10.244.0.8"]
            def pushed() -> dict[str, float]:  # counted once the server's write completes
                return {t: h.ds.metrics.pushes.labels(xr.short_name(t))._value.get() - pushes_before[t]
                        for t in xr.PUSH_ORDER}

            await mm.eventually(lambda: pushed()[xr.ENDPOINT_TYPE] == 1, what="the EDS push to be counted")
            assert pushed() == {xr.CLUSTER_TYPE: 0, xr.ENDPOINT_TYPE: 1, xr.LISTENER_TYPE: 0, xr.ROUTE_TYPE: 0}
            await mm.eventually(lambda: h.ds.metrics.convergence._sum.get() > 0,
                                what="convergence (change seen -> ACK) to be measured")

    arun(body())


def test_nack_keeps_last_good_config_and_is_recorded(arun, mm) -> None:
    async def body() -> None:
        async with mm.harness(quiet=0.02, max_delay=0.2) as h:
            load_bookinfo(h, mm)
            rec = mm.Recorder()
            c, _ = h.client(mm.node("productpage-v1-abc"), rec)
            await c.wait_until(lambda c: c.state.acked_version(xr.ROUTE_TYPE) != "", 10)
            good = c.state.acked_version(xr.CLUSTER_TYPE)
            # The proxy rejects any CDS that contains a "ratings" cluster.
            rec.reject = lambda t, v, res: ("cluster ratings: refused by the test"
                                            if t == xr.CLUSTER_TYPE and any("ratings" in r["name"] for r in res) else None)
            h.ds.apply("Service", "ADDED", mm.service("ratings", ip="10.96.0.40"))
            conn = next(iter(h.ds.connections.values()))
            await mm.eventually(lambda: conn.watched[xr.CLUSTER_TYPE].last_error is not None, what="the NACK")
            w = conn.watched[xr.CLUSTER_TYPE]
            assert w.last_error == "cluster ratings: refused by the test"
            assert w.version_acked == good != w.version_sent
            assert c.state.acked_version(xr.CLUSTER_TYPE) == good
            assert not any("ratings" in m.name for m in c.state.accepted(xr.CLUSTER_TYPE))
            assert h.ds.metrics.rejects.labels("cds")._value.get() == 1
            # The next good config is accepted again and clears the error.
            rec.reject = None
            h.ds.apply("Service", "MODIFIED", mm.service("ratings", ip="10.96.0.41"))
            await mm.eventually(lambda: w.last_error is None and w.nonce_acked == w.nonce_sent, what="the ACK")
            assert any(m.name == "outbound|9080||ratings.default.svc.cluster.local"
                       for m in c.state.accepted(xr.CLUSTER_TYPE))

    arun(body())


def test_stale_nonce_is_ignored(arun, mm) -> None:
    """A request carrying an old nonce neither changes the ACK state nor gets a response."""
    async def body() -> None:
        async with mm.harness() as h:
            load_bookinfo(h, mm)
            stream = await GrpcStream.open("127.0.0.1", h.port, ADS_PATH)
            try:
                req = discovery_pb2.DiscoveryRequest(type_url=xr.CLUSTER_TYPE)
                json_format.ParseDict(mm.node("sleep-1"), req.node)
                await stream.send(req.SerializeToString())
                first = discovery_pb2.DiscoveryResponse.FromString(await stream.recv())
                assert first.type_url == xr.CLUSTER_TYPE and first.nonce
                conn = next(iter(h.ds.connections.values()))
                # A NACK with a nonce we never sent: stale, not a NACK.
                stale = discovery_pb2.DiscoveryRequest(type_url=xr.CLUSTER_TYPE, response_nonce="not-a-nonce",
                                                       version_info="")
                stale.error_detail.message = "should be ignored"
                await stream.send(stale.SerializeToString())
                ack = discovery_pb2.DiscoveryRequest(type_url=xr.CLUSTER_TYPE, response_nonce=first.nonce,
                                                     version_info=first.version_info)
                await stream.send(ack.SerializeToString())
                await mm.eventually(lambda: conn.watched[xr.CLUSTER_TYPE].nonce_acked == first.nonce, what="the ACK")
                w = conn.watched[xr.CLUSTER_TYPE]
                assert w.last_error is None and w.nacks == 0
                assert h.ds.metrics.expired_nonce.labels("cds")._value.get() == 1
                assert h.ds.metrics.rejects.labels("cds")._value.get() == 0
                # No response to either request: nothing more arrives.
                try:
                    extra = await asyncio.wait_for(stream.recv(), 0.3)
                    raise AssertionError(f"unexpected response {discovery_pb2.DiscoveryResponse.FromString(extra)}")
                except TimeoutError:
                    pass
            finally:
                await stream.close()

    arun(body())


def test_bad_node_is_refused_with_a_clear_status(arun, mm) -> None:
    async def body() -> None:
        async with mm.harness() as h:
            stream = await GrpcStream.open("127.0.0.1", h.port, ADS_PATH)
            try:
                req = discovery_pb2.DiscoveryRequest(type_url=xr.CLUSTER_TYPE)
                req.node.id = "sidecar~not-an-ip~x.default~default.svc.cluster.local"
                await stream.send(req.SerializeToString())
                try:
                    await stream.recv()
                    raise AssertionError("the server answered a request with a bad node id")
                except Exception as e:
                    assert "INVALID_ARGUMENT" in str(e) and "not an IP address" in str(e)
            finally:
                await stream.close()
            assert not h.ds.connections

    arun(body())


def test_reconnect_rerequests_with_acked_versions_and_keeps_config_meanwhile(arun, mm) -> None:
    async def body() -> None:
        async with mm.harness() as h:
            load_bookinfo(h, mm)
            c, rec = h.client(mm.node("productpage-v1-abc"))
            await c.wait_until(lambda c: c.state.acked_version(xr.ROUTE_TYPE) != "", 10)
            held = {t: c.state.acked_version(t) for t in xr.PUSH_ORDER}
            delivered = len(rec.updates)
            port = h.port
            await h.grpc.stop(0)  # the push server goes away
            await c.wait_until(lambda c: not c.connected, 5)
            await asyncio.sleep(0.3)  # several failed reconnects
            assert len(rec.updates) == delivered  # nothing delivered: the proxy keeps its config
            assert {t: c.state.acked_version(t) for t in xr.PUSH_ORDER} == held
            assert len(c.state.accepted(xr.CLUSTER_TYPE)) == 5
            # It comes back on the same port; the client reconnects and says what it holds.
            h.grpc, _ = await serve_grpc(h.ds, "127.0.0.1", port)
            def resubscribed() -> bool:
                conns = list(h.ds.connections.values())
                return len(conns) == 1 and all(t in conns[0].subscribed_with for t in xr.PUSH_ORDER)

            await mm.eventually(resubscribed, 10, "the client to reconnect and subscribe to every type")
            conn = next(iter(h.ds.connections.values()))
            assert {t: conn.subscribed_with[t][0] for t in xr.PUSH_ORDER} == held
            assert all(conn.subscribed_with[t][1] == "" for t in xr.PUSH_ORDER)  # no nonce on a new stream

    arun(body())
