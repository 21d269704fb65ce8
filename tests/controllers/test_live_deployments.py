"""Deployments, ReplicaSets and the garbage collector against a real API server, checked with the
official client and the real kubectl (`rollout status`, `rollout restart`, `scale`)."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client
from mm_controllers_support import Env, FakeKubelet, kubectl, wait_for

from minimesh.cluster.local.controllers import deployment_util as du


def deployment(name: str = "web", replicas: int = 3, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx",
                                                           "resources": {"requests": {"cpu": "10m"}}}]}},
                     **spec}}


def replica_sets(env: Env, ns: str) -> list[Any]:
    return env.apps.list_namespaced_replica_set(ns).items


def condition(obj: Any, ctype: str) -> Any:
    return next((c for c in obj.status.conditions or [] if c.type == ctype), None)


def test_rollout_status_finishes_and_rollout_restart_rolls(env: Env) -> None:
    ns = env.namespace("dep")
    with FakeKubelet(env, ns) as kubelet:
        env.apps.create_namespaced_deployment(ns, deployment(replicas=3))
        out = kubectl(env, "-n", ns, "rollout", "status", "deployment/web", "--timeout=30s")
        assert out.returncode == 0, out.stderr
        assert 'deployment "web" successfully rolled out' in out.stdout
        d = env.apps.read_namespaced_deployment("web", ns)
        assert (d.status.replicas, d.status.updated_replicas, d.status.ready_replicas,
                d.status.available_replicas, d.status.observed_generation) == (3, 3, 3, 3, 1)
        assert condition(d, "Available").status == "True"
        assert condition(d, "Progressing").reason == "NewReplicaSetAvailable"
        assert d.metadata.annotations[du.REVISION] == "1"
        [rs1] = replica_sets(env, ns)
        pods = env.pods(ns)
        assert all(p.metadata.owner_references[0].name == rs1.metadata.name for p in pods)
        assert all(p.metadata.labels["pod-template-hash"] == rs1.metadata.labels["pod-template-hash"] for p in pods)
        assert all(p.spec.node_name for p in pods)

        out = kubectl(env, "-n", ns, "rollout", "restart", "deployment/web")
        assert out.returncode == 0, out.stderr
        out = kubectl(env, "-n", ns, "rollout", "status", "deployment/web", "--timeout=30s")
        assert out.returncode == 0, out.stderr
        rss = {rs.metadata.name: rs for rs in replica_sets(env, ns)}
        assert len(rss) == 2
        new = next(rs for rs in rss.values() if rs.metadata.name != rs1.metadata.name)
        assert new.metadata.annotations[du.REVISION] == "2" and new.spec.replicas == 3
        assert rss[rs1.metadata.name].spec.replicas == 0
        d = env.apps.read_namespaced_deployment("web", ns)
        assert d.metadata.annotations[du.REVISION] == "2" and d.status.updated_replicas == 3
        wait_for("old pods gone", lambda: all(p.metadata.labels["pod-template-hash"] == new.metadata.labels[
            "pod-template-hash"] for p in env.pods(ns)))
        events = env.core.list_namespaced_event(ns, field_selector="involvedObject.name=web").items
        messages = {e.message for e in events if e.reason == "ScalingReplicaSet"}
        assert f"Scaled up replica set {rs1.metadata.name} from 0 to 3" in messages
        assert any(m.startswith(f"Scaled down replica set {rs1.metadata.name} from") for m in messages)
        assert all(e.source.component == "deployment-controller" for e in events if e.reason == "ScalingReplicaSet")
        assert not kubelet.errors


def test_rolling_update_never_exceeds_surge_or_availability(env: Env) -> None:
    ns = env.namespace("roll")
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            pods = [p for p in env.pods(ns) if p.metadata.deletion_timestamp is None]
            ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
            seen.append((len(pods), len(ready)))
            stop.wait(0.02)

    with FakeKubelet(env, ns):
        env.apps.create_namespaced_deployment(ns, deployment(replicas=4, strategy={
            "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}))
        assert kubectl(env, "-n", ns, "rollout", "status", "deployment/web", "--timeout=30s").returncode == 0
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        env.apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:2"}]}}}})
        assert kubectl(env, "-n", ns, "rollout", "status", "deployment/web", "--timeout=30s").returncode == 0
        stop.set()
        t.join()
    assert max(n for n, _ in seen) <= 5, "maxSurge 1 exceeded"
    assert min(r for _, r in seen) >= 4, "maxUnavailable 0 violated"


def test_progress_deadline_makes_rollout_status_fail(env: Env) -> None:
    ns = env.namespace("stuck")
    with FakeKubelet(env, ns, fate=lambda p: "running"):  # never ready
        env.apps.create_namespaced_deployment(ns, deployment(replicas=1, progressDeadlineSeconds=2))
        out = kubectl(env, "-n", ns, "rollout", "status", "deployment/web", "--timeout=30s")
    assert out.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in out.stderr
    d = env.apps.read_namespaced_deployment("web", ns)
    cond = condition(d, "Progressing")
    assert (cond.status, cond.reason) == ("False", "ProgressDeadlineExceeded")
    assert condition(d, "Available").status == "False"


def test_recreate_never_runs_old_and_new_pods_together(env: Env) -> None:
    ns = env.namespace("recreate")
    overlap = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            hashes = {p.metadata.labels.get("pod-template-hash") for p in env.pods(ns)}
            if len(hashes) > 1:
                overlap.set()
            stop.wait(0.02)

    with FakeKubelet(env, ns):
        env.apps.create_namespaced_deployment(ns, deployment(replicas=2, strategy={"type": "Recreate"}))
        assert kubectl(env, "-n", ns, "rollout", "status", "deployment/web", "--timeout=30s").returncode == 0
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        assert kubectl(env, "-n", ns, "rollout", "restart", "deployment/web").returncode == 0
        assert kubectl(env, "-n", ns, "rollout", "status", "deployment/web", "--timeout=30s").returncode == 0
        stop.set()
        t.join()
    assert not overlap.is_set()


def test_scale_down_removes_not_ready_pods_first_and_replaces_deleted_ones(env: Env) -> None:
    ns = env.namespace("scale")
    with FakeKubelet(env, ns, fate=lambda p: "ready" if len(env.pods(ns)) <= 3 else "running") as kubelet:
        env.apps.create_namespaced_deployment(ns, deployment(replicas=3))
        wait_for("3 ready", lambda: env.apps.read_namespaced_deployment("web", ns).status.ready_replicas == 3)
        assert kubectl(env, "-n", ns, "scale", "deployment/web", "--replicas=5").returncode == 0
        wait_for("5 pods", lambda: len([p for p in env.pods(ns) if p.metadata.uid in kubelet.started]) == 5)
        not_ready = {p.metadata.name for p in env.pods(ns)
                     if not any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}
        assert len(not_ready) == 2
        assert kubectl(env, "-n", ns, "scale", "deployment/web", "--replicas=3").returncode == 0
        wait_for("3 pods", lambda: len(env.pods(ns)) == 3)
        assert not_ready.isdisjoint({p.metadata.name for p in env.pods(ns)})
        victim = env.pods(ns)[0].metadata.name
        env.core.delete_namespaced_pod(victim, ns)
        wait_for("replacement", lambda: len(env.pods(ns)) == 3 and victim not in {p.metadata.name for p in env.pods(ns)})
        rs = replica_sets(env, ns)[0]
        wait_for("rs status", lambda: env.apps.read_namespaced_replica_set(rs.metadata.name, ns).status.replicas == 3)


def test_replicaset_adopts_matching_orphans_and_releases_relabelled_pods(env: Env) -> None:
    ns = env.namespace("adopt")
    orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "solo"}},
              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    env.core.create_namespaced_pod(ns, orphan)
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "solo"},
          "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "solo"}},
                   "template": {"metadata": {"labels": {"app": "solo"}},
                                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    env.apps.create_namespaced_replica_set(ns, rs)
    wait_for("adopted", lambda: (env.core.read_namespaced_pod("orphan", ns).metadata.owner_references or [None])[0])
    assert env.core.read_namespaced_pod("orphan", ns).metadata.owner_references[0].kind == "ReplicaSet"
    assert len(env.pods(ns)) == 1  # adopted instead of creating another
    env.core.patch_namespaced_pod("orphan", ns, {"metadata": {"labels": {"app": "elsewhere"}}})
    wait_for("released", lambda: not env.core.read_namespaced_pod("orphan", ns).metadata.owner_references)
    wait_for("replaced", lambda: len(env.pods(ns, "app=solo")) == 1)


def test_garbage_collector_background_foreground_and_orphan(env: Env) -> None:
    ns = env.namespace("gc")
    with FakeKubelet(env, ns):
        for name in ("bg", "fg", "orph"):
            env.apps.create_namespaced_deployment(ns, deployment(name, replicas=2))
        for name in ("bg", "fg", "orph"):
            wait_for(f"{name} ready", lambda n=name: (env.apps.read_namespaced_deployment(n, ns).status.ready_replicas
                                                     or 0) == 2)
        # background: the deployment goes at once, its ReplicaSet and pods follow
        env.apps.delete_namespaced_deployment("bg", ns, propagation_policy="Background")
        wait_for("bg dependents gone", lambda: not env.pods(ns, "app=bg")
                 and not env.apps.list_namespaced_replica_set(ns, label_selector="app=bg").items)
        # foreground: the deployment stays (deletionTimestamp, finalizer) until its dependents are gone
        env.apps.delete_namespaced_deployment("fg", ns, propagation_policy="Foreground")
        d = env.apps.read_namespaced_deployment("fg", ns)
        assert d.metadata.deletion_timestamp is not None and "foregroundDeletion" in d.metadata.finalizers

        def fg_gone() -> bool:
            try:
                env.apps.read_namespaced_deployment("fg", ns)
            except client.ApiException as e:
                return e.status == 404
            return False
        wait_for("fg deployment gone", fg_gone)
        assert not env.apps.list_namespaced_replica_set(ns, label_selector="app=fg").items
        # orphan: the ReplicaSet stays, without its owner reference, and keeps its pods
        env.apps.delete_namespaced_deployment("orph", ns, propagation_policy="Orphan")
        wait_for("orph deployment gone", lambda: not [d for d in env.apps.list_namespaced_deployment(ns).items
                                                     if d.metadata.name == "orph"])
        [rs] = env.apps.list_namespaced_replica_set(ns, label_selector="app=orph").items
        assert not rs.metadata.owner_references
        assert len(env.pods(ns, "app=orph")) == 2
