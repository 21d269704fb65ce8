"""The controller machinery: work queue guarantees, expectations, actions, pod ordering, claiming."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from minimesh.cluster.local.controllers import actions as act
from minimesh.cluster.local.controllers.expectations import Expectations
from minimesh.cluster.local.controllers.objects import fmt_time, parse_time
from minimesh.cluster.local.controllers.podcontrol import (
    claim,
    pod_from_template,
    pods_to_delete,
    sort_active_pods,
)
from minimesh.cluster.local.controllers.workqueue import ShutDown, WorkQueue

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---- work queue ------------------------------------------------------------------------------------


def test_a_key_waits_once_and_is_never_handed_to_two_workers() -> None:
    async def go() -> list[str]:
        q = WorkQueue("t")
        q.add("a")
        q.add("a")
        q.add("b")
        assert len(q) == 2
        k = await q.get()
        q.add(k)  # changed while being processed: not handed out again yet
        other = await q.get()
        assert other == "b" and len(q) == 0
        q.done(k)  # ... but right after done
        again = await asyncio.wait_for(q.get(), 1)
        return [k, other, again]
    assert run(go()) == ["a", "b", "a"]


def test_add_after_keeps_the_earliest_wakeup_and_rate_limit_backs_off() -> None:
    async def go() -> None:
        q = WorkQueue("t", base_delay=0.01, max_delay=0.04)
        q.add_after("a", 5)
        q.add_after("a", 0.02)
        q.add_after("a", 10)
        assert q.pending_timers() == 1
        assert await asyncio.wait_for(q.get(), 1) == "a"
        assert [q.add_rate_limited("x") for _ in range(4)] == [0.01, 0.02, 0.04, 0.04]
        q.forget("x")
        assert q.add_rate_limited("x") == 0.01
        q.shutdown()
    run(go())


def test_shutdown_releases_waiting_workers() -> None:
    async def go() -> bool:
        q = WorkQueue("t")
        waiter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        q.shutdown()
        try:
            await asyncio.wait_for(waiter, 1)
        except ShutDown:
            return True
        return False
    assert run(go())


def test_expectations() -> None:
    t = [0.0]
    e = Expectations(clock=lambda: t[0], timeout=10)
    assert e.satisfied("rs")
    e.expect_creations("rs", 2)
    assert not e.satisfied("rs")
    e.creation_observed("rs")
    e.creation_observed("rs")
    assert e.satisfied("rs")
    e.expect_deletions("rs", ["ns/p1"])
    assert not e.satisfied("rs")
    t[0] = 11
    assert e.satisfied("rs")  # expired: a lost event must not wedge the controller


# ---- actions ---------------------------------------------------------------------------------------


class FakeKube:
    """Records requests; answers like the API server would (resourceVersions grow)."""

    def __init__(self, fail: dict[str, int] | None = None):
        self.calls: list[tuple[str, str, Any]] = []
        self.rv = 100
        self.fail = fail or {}

    async def _answer(self, verb: str, path: str, body: Any) -> Any:
        from minimesh.k8s.aclient import ApiError

        self.calls.append((verb, path, body))
        if path in self.fail:
            raise ApiError(self.fail[path], {"reason": "X", "message": "nope"})
        self.rv += 1
        name = (body or {}).get("metadata", {}).get("name") or path.rsplit("/", 1)[1]
        return {"metadata": {"name": name, "resourceVersion": str(self.rv)}}

    async def create(self, path: str, body: Any, **_: Any) -> Any:
        return await self._answer("create", path, body)

    async def replace(self, path: str, body: Any) -> Any:
        return await self._answer("replace", path, body)

    async def patch(self, path: str, body: Any, patch_type: str = "merge", **_: Any) -> Any:
        return await self._answer("patch", path, body)

    async def delete(self, path: str, body: Any = None, **_: Any) -> Any:
        return await self._answer("delete", path, body)


def test_execute_chains_resource_versions_and_stops_at_the_first_error() -> None:
    kube = FakeKube(fail={"/x/gone": 404, "/x/bad": 500})
    plan = [
        act.patch("/x/d", {"metadata": {"annotations": {"a": "1"}}}),
        act.replace("/x/d/status", {"metadata": {"name": "d", "resourceVersion": "1"}, "status": {}}),
        act.delete("/x/gone"),  # 404 is fine for a delete
        act.create("/x/bad", {"metadata": {"name": "bad"}}),
        act.create("/x/never", {"metadata": {"name": "never"}}),
    ]
    try:
        run(act.execute(kube, plan))  # type: ignore[arg-type]
    except Exception as e:
        assert "500" in str(e)
    else:
        raise AssertionError("the 500 must surface")
    assert [c[1] for c in kube.calls] == ["/x/d", "/x/d/status", "/x/gone", "/x/bad"]
    assert kube.calls[1][2]["metadata"]["resourceVersion"] == "101"  # the patch's answer, not the stale "1"


def test_delete_options() -> None:
    a = act.delete("/p", uid="u1", propagation="Foreground")
    assert a.body == {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "u1"},
                      "propagationPolicy": "Foreground"}


# ---- pods ------------------------------------------------------------------------------------------


def mkpod(name: str, *, node: str = "n1", phase: str = "Running", ready: bool = True,
          ready_since: timedelta = timedelta(hours=1), created: timedelta = timedelta(hours=2), restarts: int = 0,
          cost: int | None = None, uid: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}",
                     "creationTimestamp": fmt_time(NOW - created), "labels": {"app": "x"}},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "containerStatuses": [{"name": "c", "restartCount": restarts}],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "lastTransitionTime": fmt_time(NOW - ready_since)}]},
    }
    if cost is not None:
        p["metadata"]["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": str(cost)}
    return p


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def test_deletion_order_unscheduled_pending_notready_first() -> None:
    pods = [mkpod("running"), mkpod("notready", ready=False), mkpod("pending", phase="Pending", ready=False),
            mkpod("unscheduled", node="", phase="Pending", ready=False)]
    assert names(sort_active_pods(pods)) == ["unscheduled", "pending", "notready", "running"]
    assert names(pods_to_delete(pods, pods, 3, NOW)) == ["unscheduled", "pending", "notready"]


def test_deletion_order_cost_colocation_readiness_age_restarts_creation() -> None:
    a = mkpod("cheap", cost=-10)
    b = mkpod("plain")
    assert names(pods_to_delete([b, a], [a, b], 1, NOW)) == ["cheap"]
    # more active related pods on the same node go first
    crowded = [mkpod("c1", node="n2"), mkpod("c2", node="n2")]
    alone = mkpod("alone", node="n3")
    assert names(pods_to_delete([alone, crowded[0]], [alone, *crowded], 1, NOW))[0] == "c1"
    # ready more recently (in another log2 bucket) goes first
    young = mkpod("young", ready_since=timedelta(seconds=10))
    old = mkpod("old", ready_since=timedelta(days=3))
    assert names(pods_to_delete([old, young], [], 1, NOW)) == ["young"]
    # same readiness bucket: more restarts first
    r1 = mkpod("restarted", restarts=5, ready_since=timedelta(hours=1, seconds=1))
    r0 = mkpod("stable")
    assert names(pods_to_delete([r0, r1], [], 1, NOW)) == ["restarted"]
    # the plain ActivePods order uses exact times
    assert names(sort_active_pods([old, young])) == ["young", "old"]


def test_pod_from_template() -> None:
    t = {"metadata": {"labels": {"app": "x"}, "annotations": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u", "controller": True,
           "blockOwnerDeletion": True}
    p = pod_from_template(t, "web-1", ref, extra_finalizers=["f"])
    assert p["metadata"] == {"generateName": "web-1-", "labels": {"app": "x"}, "annotations": {"a": "b"},
                             "finalizers": ["f"], "ownerReferences": [ref]}
    assert p["spec"] == t["spec"] and p["spec"] is not t["spec"]


def test_claim_adopts_orphans_releases_mismatches_and_ignores_others() -> None:
    owner = {"metadata": {"name": "rs", "namespace": "ns", "uid": "me"}}
    mine = mkpod("mine")
    mine["metadata"]["ownerReferences"] = [{"uid": "me", "controller": True, "kind": "ReplicaSet", "name": "rs"}]
    stray = mkpod("stray")
    stray["metadata"]["labels"] = {"app": "other"}
    stray["metadata"]["ownerReferences"] = [{"uid": "me", "controller": True, "kind": "ReplicaSet", "name": "rs"}]
    orphan = mkpod("orphan")
    theirs = mkpod("theirs")
    theirs["metadata"]["ownerReferences"] = [{"uid": "other", "controller": True}]
    claimed, releases, orphans = claim(owner, [mine, stray, orphan, theirs],
                                       lambda p: p["metadata"]["labels"].get("app") == "x", lambda p: f"/p/{p['metadata']['name']}")
    assert names(claimed) == ["mine"] and names(orphans) == ["orphan"]
    assert [r.path for r in releases] == ["/p/stray"]
    assert releases[0].body[-1] == {"op": "remove", "path": "/metadata/ownerReferences"}


def test_time_round_trip() -> None:
    assert fmt_time(parse_time("2024-05-01T10:00:00.123456789Z")) == "2024-05-01T10:00:00Z"
    assert parse_time("2024-05-01T10:00:00+02:00") == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
