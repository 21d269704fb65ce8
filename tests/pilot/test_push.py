"""Debounce (pure and live), and what each kind of change means for a push."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from minimesh.pilot.push import Debouncer, PushRequest
from minimesh.pilot.store import MeshStore
from minimesh.xds import resources as xr


def eds(svc: str, at: float) -> PushRequest:
    return PushRequest(full=False, services=frozenset({svc}), reasons=Counter(endpoint=1), start=at)


def test_debounce_waits_for_quiet_but_not_longer_than_the_maximum() -> None:
    d = Debouncer(quiet=0.1, max_delay=1.0)
    assert d.deadline() is None and d.take(100.0) is None
    d.add(eds("default/a", 0.0), now=0.0)
    assert d.deadline() == pytest.approx(0.1)
    d.add(eds("default/b", 0.05), now=0.05)  # a change within the quiet period extends it
    assert d.take(0.1) is None and d.deadline() == pytest.approx(0.15)
    taken = d.take(0.16)
    assert taken is not None
    request, held = taken
    assert request.services == {"default/a", "default/b"} and not request.full and request.start == 0.0
    assert held == pytest.approx(0.16) and d.deadline() is None
    # A steady stream of changes is pushed after at most max_delay.
    for i in range(30):
        d.add(eds("default/a", i * 0.05), now=i * 0.05)
    assert d.deadline() == pytest.approx(1.0)
    taken = d.take(1.0)
    assert taken is not None and taken[0].reasons == Counter(endpoint=30)


def test_merging_a_full_request_makes_the_push_full() -> None:
    merged = eds("default/a", 2.0).merge(PushRequest(full=True, everything=True, reasons=Counter(config=1), start=1.0))
    assert merged.full and merged.everything and merged.start == 1.0
    assert merged.reasons == Counter(endpoint=1, config=1)


def test_store_tells_eds_only_from_full_changes_and_ignores_no_ops(mm) -> None:
    store = MeshStore(clock=lambda: 42.0)
    r = store.apply("Service", "ADDED", mm.service("details"))
    assert r is not None and r.full and r.services == {"default/details"} and r.start == 42.0
    assert store.apply("Service", "MODIFIED", mm.service("details")) is None  # nothing a proxy sees changed
    r = store.apply("EndpointSlice", "ADDED", mm.endpoint_slice("details"))
    assert r is not None and not r.full and r.services == {"default/details"}
    r = store.apply("Pod", "ADDED", mm.pod("details-1", labels={"app": "details"}))
    assert r is not None and r.full and r.namespaces == {"default"} and not r.services
    r = store.apply("Sidecar", "ADDED", mm.sidecar("default", "default", ["./*"]))
    assert r is not None and r.full and r.everything
    assert store.apply("Service", "BOOKMARK", mm.service("details")) is None


def test_a_bad_object_is_reported_and_skipped(mm) -> None:
    store = MeshStore()
    bad = mm.service("details")
    bad["spec"]["ports"][0]["port"] = 70000
    assert store.apply("Service", "ADDED", bad) is None
    assert store.errors == {("Service", "default/details"): "Service default/details: spec.ports[0].port: 70000 is not a port number (1-65535)"}
    assert store.apply("Service", "MODIFIED", mm.service("details")) is not None
    assert not store.errors
    with pytest.raises(ValueError, match="unknown kind 'Deployment'"):
        store.apply("Deployment", "ADDED", {})


def test_relist_replaces_and_deletes(mm) -> None:
    store = MeshStore()
    store.replace("Service", [mm.service("a"), mm.service("b")])
    r = store.replace("Service", [mm.service("b"), mm.service("c")])
    assert r is not None and r.services == {"default/a", "default/c"}
    assert sorted(store.objects["Service"]) == ["default/b", "default/c"]
    assert store.replace("Service", [mm.service("b"), mm.service("c")]) is None


def test_a_burst_of_changes_becomes_one_push(arun, mm) -> None:
    async def body() -> None:
        async with mm.harness(quiet=0.5, max_delay=5.0) as h:  # generous: CI machines stall
            h.load(("Service", mm.service("details")), ("EndpointSlice", mm.endpoint_slice("details")))
            c, rec = h.client(mm.node("productpage-v1-x"))
            await c.wait_until(lambda c: c.state.acked_version(xr.ROUTE_TYPE) != "", 10)
            pushes = h.ds.pushes
            before = len(rec.updates)
            for i in range(10):  # a rollout: ten endpoint changes 20 ms apart
                h.ds.apply("EndpointSlice", "MODIFIED", mm.endpoint_slice("details", ips=[f"10.244.0.{i + 10}"]))
                await asyncio.sleep(0.02)
            await mm.eventually(lambda: h.ds.pushes > pushes, what="the debounced push")
            await asyncio.sleep(0.6)
            assert h.ds.pushes == pushes + 1
            new = rec.updates[before:]
            assert [t for t, _, _ in new] == [xr.ENDPOINT_TYPE]
            lb = new[0][2][0]["endpoints"][0]["lb_endpoints"]
            assert [e["endpoint"]["address"]["socket_address"]["address"] for e in lb] == ["10.244.0.19"]
            assert h.ds.metrics.debounce._sum.get() >= 0.68  # >= 0.18 s of changes + the 0.5 s quiet period
            assert h.ds.metrics.triggers.labels("endpoint")._value.get() == 11

    arun(body())
