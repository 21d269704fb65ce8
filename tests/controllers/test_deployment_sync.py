"""DeploymentSync (pure): whole rollouts in a small in-memory world.

The world applies the actions a sync returns (create/replace ReplicaSets, status and annotation writes,
deletes) and plays the ReplicaSet controller and kubelet: pods appear for spec.replicas and become ready
one tick later. At every tick of a rolling update the real guarantees must hold: never more than
replicas + maxSurge pods, never fewer than replicas - maxUnavailable available.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimesh.cluster.local.controllers import deployment_util as du
from minimesh.cluster.local.controllers.deployment import DeploymentSync
from minimesh.cluster.local.controllers.objects import fmt_time, get_condition

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def deployment(replicas: int = 3, surge: Any = "25%", unavailable: Any = "25%", strategy: str = "RollingUpdate",
               image: str = "nginx:1", **spec: Any) -> dict[str, Any]:
    st_: dict[str, Any] = {"type": strategy}
    if strategy == "RollingUpdate":
        st_["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "uid": "dep-uid", "generation": 1, "resourceVersion": "1",
                     "creationTimestamp": fmt_time(T0)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": st_,
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": image}]}}, **spec},
    }


class World:
    """Just enough of a cluster for the Deployment controller: ReplicaSets and their pods' readiness."""

    def __init__(self, d: dict[str, Any]):
        self.d = d
        self.rs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, list[int]] = {}  # rs name → ticks each pod has existed
        self.now = T0
        self.uids = itertools.count(1)
        self.rv = itertools.count(10)
        self.events: list[str] = []
        self.deleted: list[str] = []

    def sync(self) -> Any:
        result = DeploymentSync(copy.deepcopy(self.d), [copy.deepcopy(r) for r in self.rs.values()], {},
                                self.now).run()
        for a in result.actions:
            self.apply(a)
            if a.event:
                self.events.append(a.event.message)
        return result

    def apply(self, a: Any) -> None:
        if a.path.startswith("/apis/apps/v1/namespaces/ns/replicasets"):
            if a.verb == "create":
                body = copy.deepcopy(a.body)
                name = body["metadata"]["name"]
                assert name not in self.rs, f"created {name} twice"
                body["metadata"].update(uid=f"rs-{next(self.uids)}", creationTimestamp=fmt_time(self.now),
                                        generation=1, resourceVersion=str(next(self.rv)))
                body["status"] = {"replicas": 0}
                self.rs[name] = body
                self.pods[name] = []
            elif a.verb == "replace":
                name = a.path.rsplit("/", 1)[1]
                old = self.rs[name]
                new = copy.deepcopy(a.body)
                new["status"] = old["status"]
                if new["spec"] != old["spec"]:
                    new["metadata"]["generation"] = old["metadata"]["generation"] + 1
                self.rs[name] = new
            elif a.verb == "delete":
                name = a.path.rsplit("/", 1)[1]
                self.deleted.append(name)
                del self.rs[name]
                del self.pods[name]
            else:
                raise AssertionError(a)
        elif a.path.endswith("/deployments/web/status"):
            assert a.verb == "replace"
            self.d["status"] = copy.deepcopy(a.body["status"])
        elif a.path.endswith("/deployments/web"):
            assert a.verb == "patch"
            self.d["metadata"].setdefault("annotations", {}).update(a.body["metadata"]["annotations"])
        else:
            raise AssertionError(a)

    def tick(self, ready_after: int = 1, min_ready_ticks: int = 0) -> None:
        """ReplicaSet controller + kubelet: converge pods to spec.replicas; pods age; status follows."""
        self.now += timedelta(seconds=1)
        for name, rs in self.rs.items():
            pods = self.pods[name]
            want = du.replicas(rs)
            while len(pods) < want:
                pods.append(0)
            if len(pods) > want:
                pods.sort()  # youngest (least ready) first, as the real deletion order
                del pods[: len(pods) - want]
            self.pods[name] = [age + 1 for age in pods]
            ready = sum(1 for age in self.pods[name] if age > ready_after)
            available = sum(1 for age in self.pods[name] if age > ready_after + min_ready_ticks)
            rs["status"] = {"replicas": len(self.pods[name]), "readyReplicas": ready, "availableReplicas": available,
                            "fullyLabeledReplicas": len(self.pods[name]),
                            "observedGeneration": rs["metadata"]["generation"]}

    def total_pods(self) -> int:
        return sum(len(p) for p in self.pods.values())

    def available(self) -> int:
        return sum(int(r["status"].get("availableReplicas") or 0) for r in self.rs.values())

    def new_rs(self) -> dict[str, Any]:
        return next(r for r in self.rs.values()
                    if du.equal_ignore_hash(r["spec"]["template"], self.d["spec"]["template"]))

    def run_until_complete(self, check: Any = None, limit: int = 200, **tick: Any) -> int:
        for i in range(limit):
            self.sync()
            if check:
                check(self)
            cond = get_condition(self.d.get("status"), "Progressing")
            if cond and cond["reason"] == du.NEW_RS_AVAILABLE and du.deployment_complete(self.d, self.d["status"]):
                return i
            self.tick(**tick)
            if check:
                check(self)
        raise AssertionError(f"rollout did not complete: {self.d['status']}")

    def change_template(self, image: str) -> None:
        self.d["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.d["metadata"]["generation"] += 1


def test_first_rollout_creates_one_replicaset_with_revision_1_and_completes() -> None:
    w = World(deployment(replicas=3))
    w.run_until_complete()
    assert len(w.rs) == 1
    rs = next(iter(w.rs.values()))
    assert rs["metadata"]["name"] == f"web-{rs['metadata']['labels']['pod-template-hash']}"
    assert rs["spec"]["selector"]["matchLabels"]["pod-template-hash"] == rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["annotations"][du.REVISION] == "1"
    assert rs["metadata"]["annotations"][du.DESIRED_REPLICAS] == "3"
    assert rs["metadata"]["annotations"][du.MAX_REPLICAS] == "4"
    ref = rs["metadata"]["ownerReferences"][0]
    assert ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "dep-uid",
                   "controller": True, "blockOwnerDeletion": True}
    assert w.d["metadata"]["annotations"][du.REVISION] == "1"
    st_ = w.d["status"]
    assert (st_["replicas"], st_["updatedReplicas"], st_["readyReplicas"], st_["availableReplicas"]) == (3, 3, 3, 3)
    assert "unavailableReplicas" not in st_  # omitempty, as Go writes it
    assert st_["observedGeneration"] == 1
    assert get_condition(st_, "Available")["reason"] == "MinimumReplicasAvailable"
    assert get_condition(st_, "Progressing")["message"] == f'ReplicaSet "{rs["metadata"]["name"]}" has successfully progressed.'
    assert w.events[0] == f"Scaled up replica set {rs['metadata']['name']} from 0 to 3"


def _rolling_invariants(replicas: int, surge: Any, unavailable: Any) -> Any:
    s, u = du.resolve_fenceposts(surge, unavailable, replicas)
    u = min(u, replicas)

    def check(w: World) -> None:
        assert sum(du.replicas(r) for r in w.rs.values()) <= replicas + s, "surge exceeded"
        assert w.total_pods() <= replicas + s
        assert w.available() >= replicas - u, f"availability dropped to {w.available()}"
    return check


@settings(max_examples=60, deadline=None)
@given(replicas=st.integers(1, 12),
       surge=st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"])),
       unavailable=st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%"])),
       ready_after=st.integers(0, 3))
def test_rolling_update_keeps_surge_and_availability_bounds(replicas: int, surge: Any, unavailable: Any,
                                                            ready_after: int) -> None:
    w = World(deployment(replicas, surge, unavailable))
    w.run_until_complete(ready_after=ready_after)
    w.change_template("nginx:2")
    w.run_until_complete(_rolling_invariants(replicas, surge, unavailable), ready_after=ready_after)
    new = w.new_rs()
    assert du.replicas(new) == replicas
    assert all(du.replicas(r) == 0 for r in w.rs.values() if r is not new)
    assert new["metadata"]["annotations"][du.REVISION] == "2"
    assert w.d["metadata"]["annotations"][du.REVISION] == "2"


def test_rollout_restart_annotation_rolls_and_old_revision_is_kept_within_history_limit() -> None:
    w = World(deployment(replicas=2, revisionHistoryLimit=1))
    w.run_until_complete()
    for i in range(3):
        w.d["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": f"2024-05-01T10:0{i}:00Z"}
        w.d["metadata"]["generation"] += 1
        w.run_until_complete()
        w.sync()  # the sync after completion cleans up history
    assert len(w.rs) == 2  # the new one + revisionHistoryLimit old ones
    revisions = sorted(int(r["metadata"]["annotations"][du.REVISION]) for r in w.rs.values())
    assert revisions == [3, 4]
    assert len(w.deleted) == 2


def test_rollback_to_an_old_template_reuses_its_replicaset_and_records_revision_history() -> None:
    w = World(deployment(replicas=2))
    w.run_until_complete()
    first = w.new_rs()["metadata"]["name"]
    w.change_template("nginx:2")
    w.run_until_complete()
    w.change_template("nginx:1")  # what `kubectl rollout undo` does
    w.run_until_complete()
    assert w.new_rs()["metadata"]["name"] == first
    ann = w.new_rs()["metadata"]["annotations"]
    assert ann[du.REVISION] == "3" and ann[du.REVISION_HISTORY] == "1"
    assert len(w.rs) == 2


def test_recreate_scales_old_to_zero_before_creating_the_new_replicaset() -> None:
    w = World(deployment(replicas=3, strategy="Recreate"))
    w.run_until_complete()
    w.change_template("nginx:2")
    seen_both_running = False

    def check(world: World) -> None:
        nonlocal seen_both_running
        running = [n for n, p in world.pods.items() if p]
        seen_both_running |= len(running) > 1
    w.run_until_complete(check)
    assert not seen_both_running
    assert du.replicas(w.new_rs()) == 3


def test_scaling_during_a_rollout_is_proportional() -> None:
    w = World(deployment(replicas=10, surge=3, unavailable=2))
    w.run_until_complete()
    w.change_template("nginx:2")
    w.sync()
    w.tick(ready_after=5)
    w.sync()
    sizes_before = {n: du.replicas(r) for n, r in w.rs.items()}
    assert len([s for s in sizes_before.values() if s]) == 2
    w.d["spec"]["replicas"] = 20
    w.d["metadata"]["generation"] += 1
    w.sync()
    sizes_after = {n: du.replicas(r) for n, r in w.rs.items()}
    assert sum(sizes_after.values()) == 20 + 3  # the new total allowed size, split between both
    for n in sizes_before:
        if sizes_before[n]:
            assert sizes_after[n] > sizes_before[n]
    assert any("Scaled up replica set" in e for e in w.events[-2:])


def test_progress_deadline_exceeded_when_pods_never_become_ready() -> None:
    w = World(deployment(replicas=2, progressDeadlineSeconds=5))
    for _ in range(3):
        w.sync()
        w.tick(ready_after=1000)
    w.now += timedelta(seconds=10)
    result = w.sync()
    cond = get_condition(w.d["status"], "Progressing")
    assert cond["status"] == "False" and cond["reason"] == "ProgressDeadlineExceeded"
    assert cond["message"].endswith("has timed out progressing.")
    assert result.requeue_after is None


def test_a_stuck_rollout_requeues_for_its_deadline() -> None:
    w = World(deployment(replicas=2, progressDeadlineSeconds=600))
    w.sync()
    w.tick(ready_after=1000)
    w.sync()
    result = w.sync()  # nothing changes any more
    assert result.actions == []
    assert 590 < (result.requeue_after or 0) <= 602


def test_paused_deployment_does_not_roll_and_reports_paused() -> None:
    w = World(deployment(replicas=2))
    w.run_until_complete()
    w.d["spec"]["paused"] = True
    w.change_template("nginx:2")
    for _ in range(5):
        w.sync()
        w.tick()
    assert len(w.rs) == 1
    cond = get_condition(w.d["status"], "Progressing")
    assert (cond["status"], cond["reason"], cond["message"]) == ("Unknown", "DeploymentPaused", "Deployment is paused")
    w.d["spec"]["paused"] = False
    w.run_until_complete()
    assert len(w.rs) == 2


def test_hash_collision_bumps_collision_count() -> None:
    w = World(deployment(replicas=1))
    d = w.d
    h = du.compute_hash(d["spec"]["template"], None)
    squatter = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"web-{h}", "namespace": "ns", "uid": "other", "creationTimestamp": fmt_time(T0)},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"x": "y"}},
                         "template": {"metadata": {"labels": {"x": "y"}}, "spec": {"containers": []}}}}
    result = DeploymentSync(d, [], {}, T0, namespace_rs_names={squatter["metadata"]["name"]: squatter}).run()
    assert result.error and "already exists" in result.error
    assert result.actions[-1].body["status"]["collisionCount"] == 1
    assert du.compute_hash(d["spec"]["template"], 1) != h


def test_empty_selector_is_refused_with_an_event() -> None:
    d = deployment()
    d["spec"]["selector"] = {}
    result = DeploymentSync(d, [], {}, T0).run()
    assert [e.reason for e in result.events] == ["SelectingAll"]
    assert [a.path for a in result.actions] == ["/apis/apps/v1/namespaces/ns/deployments/web/status"]


@pytest.mark.parametrize("value,total,up,want", [
    ("25%", 10, True, 3), ("25%", 10, False, 2), ("25%", 1, True, 1), ("25%", 1, False, 0), (2, 10, True, 2),
    ("0%", 5, True, 0), ("100%", 3, False, 3), ("33%", 3, True, 1), ("33%", 3, False, 0),
])
def test_int_or_percent_rounding(value: Any, total: int, up: bool, want: int) -> None:
    assert du.scaled_value(value, total, up) == want


def test_fenceposts_never_both_zero() -> None:
    assert du.resolve_fenceposts("25%", "25%", 1) == (1, 0)
    assert du.resolve_fenceposts("0%", "25%", 1) == (0, 1)
    with pytest.raises(du.IntOrStringError, match="not a percentage"):
        du.scaled_value("5", 10, True)


def test_pod_template_hash_is_stable_and_looks_real() -> None:
    t = deployment()["spec"]["template"]
    h = du.compute_hash(t, None)
    assert h == du.compute_hash(copy.deepcopy(t), None)
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 6 <= len(h) <= 10
    assert du.compute_hash(t, 1) != h


def test_equal_ignore_hash() -> None:
    t = deployment()["spec"]["template"]
    t2 = copy.deepcopy(t)
    t2["metadata"]["labels"]["pod-template-hash"] = "abc"
    assert du.equal_ignore_hash(t, t2)
    t2["spec"]["containers"][0]["image"] = "other"
    assert not du.equal_ignore_hash(t, t2)
