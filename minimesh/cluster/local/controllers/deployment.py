"""The Deployment controller (pkg/controller/deployment): Deployment → ReplicaSets.

`DeploymentSync` is one `syncDeployment`, pure: given the deployment, the ReplicaSets it owns, their pods
and the time, it walks the same path as the Go code (paused/scaling/Recreate/RollingUpdate, revisions,
proportional scaling, cleanup, rollout conditions) and returns the writes it would make, in order, plus
when to look again. `DeploymentController` feeds it from the informers and performs the writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from minimesh.cluster.local.controllers import actions as act
from minimesh.cluster.local.controllers import deployment_util as du
from minimesh.cluster.local.controllers.objects import (
    Obj,
    annotations_of,
    controller_ref,
    deepcopy,
    fmt_time,
    generation_of,
    get_condition,
    is_deleting,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    new_controller_ref,
    parse_time,
    pod_phase,
    seconds,
    split_key,
    uid_of,
)
from minimesh.cluster.local.controllers.podcontrol import claim, claim_orphans
from minimesh.cluster.local.controllers.runner import Context, Controller
from minimesh.k8s.aclient import resource_path
from minimesh.k8s.selectors import SelectorError, matches, selector_from_spec

log = logging.getLogger(__name__)

API_VERSION = "apps/v1"
KIND = "Deployment"


def deploy_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    return resource_path(API_VERSION, "deployments", namespace, name, sub)


def rs_path(namespace: str, name: str | None = None) -> str:
    return resource_path(API_VERSION, "replicasets", namespace, name)


class _Abort(Exception):
    """The Go code returns an error here: stop, perform what was decided so far, requeue with back-off."""


@dataclass
class SyncResult:
    actions: list[act.Action] = field(default_factory=list)
    events: list[act.EventSpec] = field(default_factory=list)  # recorded whatever the writes do
    requeue_after: float | None = None
    error: str | None = None


class DeploymentSync:
    def __init__(self, deployment: Obj, replica_sets: list[Obj], pod_map: dict[str, list[Obj]], now: datetime,
                 *, namespace_rs_names: dict[str, Obj] | None = None):
        self.original = deployment
        self.d = du.with_defaults(deepcopy(deployment))
        self.d.setdefault("status", {})
        self.rss = [deepcopy(rs) for rs in replica_sets]
        self.pod_map = pod_map
        self.now = now
        self.ns = namespace_of(deployment)
        self.name = name_of(deployment)
        self.namespace_rs = namespace_rs_names or {name_of(rs): rs for rs in replica_sets}
        self.result = SyncResult()
        self._revision_written: str | None = None

    # ---- writes ------------------------------------------------------------------------------------
    def _event(self, etype: str, reason: str, message: str) -> act.EventSpec:
        return act.EventSpec(self.original, API_VERSION, KIND, etype, reason, message)

    def _update_rs(self, rs: Obj, event: act.EventSpec | None = None) -> None:
        self.result.actions.append(act.replace(rs_path(self.ns, name_of(rs)), deepcopy(rs), event=event))

    def _update_status(self) -> None:
        revision = annotations_of(self.d).get(du.REVISION)
        if revision is not None and revision != annotations_of(self.original).get(du.REVISION) \
                and self._revision_written != revision:
            # The Go controller sends the annotation along with the status update (the real status
            # strategy keeps annotations); a metadata patch works with any API server.
            self.result.actions.append(act.patch(deploy_path(self.ns, self.name),
                                                 {"metadata": {"annotations": {du.REVISION: revision}}}))
            self._revision_written = revision
        body = {k: v for k, v in self.d.items() if k != "status"}
        body["status"] = du.wire_status(self.d["status"])
        self.result.actions.append(act.replace(deploy_path(self.ns, self.name, "status"), deepcopy(body)))

    # ---- entry -------------------------------------------------------------------------------------
    def run(self) -> SyncResult:
        try:
            self._sync()
        except _Abort as e:
            self.result.error = str(e)
        return self.result

    def _sync(self) -> None:
        d = self.d
        selector = d["spec"].get("selector")
        if selector is not None and not selector.get("matchLabels") and not selector.get("matchExpressions"):
            self.result.events.append(self._event(
                "Warning", "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required."))
            if int(d["status"].get("observedGeneration") or 0) < generation_of(d):
                d["status"]["observedGeneration"] = generation_of(d)
                self._update_status()
            return
        if is_deleting(d):
            new_rs, old_rss = self._all_rss(create=False)
            self._sync_deployment_status([*old_rss, new_rs], new_rs)
            return
        self._check_paused_conditions()
        if d["spec"].get("paused"):
            self._sync_paused_or_scaled()
            return
        if self._is_scaling_event():
            self._sync_paused_or_scaled()
            return
        strategy = d["spec"]["strategy"].get("type")
        if strategy == "Recreate":
            self._rollout_recreate()
        elif strategy == "RollingUpdate":
            self._rollout_rolling()
        else:
            raise _Abort(f"unexpected deployment strategy type: {strategy}")

    # ---- revisions and the new ReplicaSet ------------------------------------------------------------
    def _find_new(self) -> Obj | None:
        template = self.d["spec"].get("template") or {}
        for rs in du.by_creation(self.rss):
            if du.equal_ignore_hash((rs.get("spec") or {}).get("template") or {}, template):
                return rs
        return None

    def _replace_cached(self, rs: Obj) -> None:
        self.rss = [rs if uid_of(x) == uid_of(rs) and name_of(x) == name_of(rs) else x for x in self.rss]

    def _all_rss(self, create: bool) -> tuple[Obj | None, list[Obj]]:
        """getAllReplicaSetsAndSyncRevision."""
        existing = self._find_new()
        old_rss = [rs for rs in self.rss if existing is None or rs is not existing]
        return self._new_rs(old_rss, existing, create), old_rss

    def _set_revision(self, revision: str) -> bool:
        ann = self.d.setdefault("metadata", {}).setdefault("annotations", {})
        if ann.get(du.REVISION) == revision:
            return False
        ann[du.REVISION] = revision
        return True

    def _new_rs(self, old_rss: list[Obj], existing: Obj | None, create: bool) -> Obj | None:
        d = self.d
        new_revision = du.max_revision(old_rss) + 1
        if existing is not None:
            rs_copy = deepcopy(existing)
            updated = du.set_new_rs_annotations(d, rs_copy, new_revision, exists=True)
            want_mrs = int(d["spec"].get("minReadySeconds") or 0)
            if updated or int(rs_copy["spec"].get("minReadySeconds") or 0) != want_mrs:
                rs_copy["spec"]["minReadySeconds"] = want_mrs
                self._update_rs(rs_copy)
                self._replace_cached(rs_copy)
                return rs_copy
            needs_update = self._set_revision(annotations_of(rs_copy).get(du.REVISION, ""))
            if du.has_progress_deadline(d) and get_condition(d["status"], "Progressing") is None:
                du.set_condition(d["status"], du.new_condition(
                    "Progressing", "True", du.FOUND_NEW_RS, f'Found new replica set "{name_of(rs_copy)}"', self.now))
                needs_update = True
            if needs_update:
                self._update_status()
            return rs_copy
        if not create:
            return None

        template = deepcopy(d["spec"].get("template") or {})
        pth = du.compute_hash(template, d["status"].get("collisionCount"))
        template.setdefault("metadata", {})["labels"] = {**(template["metadata"].get("labels") or {}),
                                                         du.HASH_LABEL: pth}
        selector = deepcopy(d["spec"].get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), du.HASH_LABEL: pth}
        rs_name = f"{self.name}-{pth}"
        new_rs: Obj = {
            "apiVersion": API_VERSION,
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": self.ns,
                "ownerReferences": [new_controller_ref(self.original, API_VERSION, KIND)],
                "labels": dict(template["metadata"]["labels"]),
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        if d["spec"].get("minReadySeconds"):
            new_rs["spec"]["minReadySeconds"] = int(d["spec"]["minReadySeconds"])
        count = du.new_rs_new_replicas(d, [*old_rss, new_rs], new_rs)
        new_rs["spec"]["replicas"] = count
        du.set_new_rs_annotations(d, new_rs, new_revision, exists=False)

        already = self.namespace_rs.get(rs_name)
        if already is not None:
            ref = controller_ref(already)
            if ref is not None and ref.get("uid") == uid_of(d) and du.equal_ignore_hash(
                    template, (already.get("spec") or {}).get("template") or {}):
                created = already
            else:
                # Hash collision: bump collisionCount so the next sync computes another hash.
                d["status"]["collisionCount"] = int(d["status"].get("collisionCount") or 0) + 1
                self._update_status()
                raise _Abort(f'replicasets.apps "{rs_name}" already exists (hash collision)')
        else:
            event = self._event("Normal", "ScalingReplicaSet",
                                f"Scaled up replica set {rs_name} from 0 to {count}") if count > 0 else None
            self.result.actions.append(act.create(rs_path(self.ns), new_rs, event=event))
            created = deepcopy(new_rs)
            created["metadata"]["creationTimestamp"] = fmt_time(self.now)
            created["metadata"]["generation"] = 1
            self.rss.append(created)
        needs_update = self._set_revision(str(new_revision))
        if already is None and du.has_progress_deadline(d):
            du.set_condition(d["status"], du.new_condition(
                "Progressing", "True", du.NEW_RS_CREATED, f'Created new replica set "{rs_name}"', self.now))
            needs_update = True
        if needs_update:
            self._update_status()
        return created

    # ---- scaling -----------------------------------------------------------------------------------
    def _scale_rs(self, rs: Obj, new_scale: int, operation: str) -> tuple[bool, Obj]:
        d = self.d
        desired, max_total = du.replicas(d), du.replicas(d) + du.max_surge(d)
        size_needs = du.replicas(rs) != new_scale
        if not (size_needs or du.replicas_annotations_need_update(rs, desired, max_total)):
            return False, rs
        old_scale = du.replicas(rs)
        rs_copy = deepcopy(rs)
        rs_copy["spec"]["replicas"] = new_scale
        du.set_replicas_annotations(rs_copy, desired, max_total)
        event = None
        if size_needs:
            event = self._event("Normal", "ScalingReplicaSet",
                                f"Scaled {operation} replica set {name_of(rs)} from {old_scale} to {new_scale}")
        self._update_rs(rs_copy, event)
        if size_needs:
            rs_copy["metadata"]["generation"] = generation_of(rs_copy) + 1
        return size_needs, rs_copy

    def _scale_and_record(self, rs: Obj, new_scale: int) -> tuple[bool, Obj]:
        if du.replicas(rs) == new_scale:
            return False, rs
        return self._scale_rs(rs, new_scale, "up" if du.replicas(rs) < new_scale else "down")

    def _is_scaling_event(self) -> bool:
        new_rs, old_rss = self._all_rss(create=False)
        for rs in du.filter_active([*old_rss, new_rs]):
            desired = du.desired_replicas_annotation(rs)
            if desired is not None and desired != du.replicas(self.d):
                return True
        return False

    def _scale(self, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        d = self.d
        latest = du.find_active_or_latest(new_rs, old_rss)
        if latest is not None:
            if du.replicas(latest) != du.replicas(d):
                self._scale_and_record(latest, du.replicas(d))
            return
        if du.is_saturated(d, new_rs):
            for old in du.filter_active(old_rss):
                self._scale_and_record(old, 0)
            return
        if not du.is_rolling_update(d):
            return
        active = du.filter_active([*old_rss, new_rs])
        allowed = du.replicas(d) + du.max_surge(d) if du.replicas(d) > 0 else 0
        to_add = allowed - du.replica_count(active)
        operation = ""
        if to_add > 0:
            active, operation = du.by_size_newer(active), "up"
        elif to_add < 0:
            active, operation = du.by_size_older(active), "down"
        added = 0
        sizes: dict[str, int] = {}
        for rs in active:
            if to_add != 0:
                prop = du.rs_proportion(rs, d, to_add, added)
                sizes[name_of(rs)] = du.replicas(rs) + prop
                added += prop
            else:
                sizes[name_of(rs)] = du.replicas(rs)
        for i, rs in enumerate(active):
            if i == 0 and to_add != 0:
                sizes[name_of(rs)] = max(0, sizes[name_of(rs)] + to_add - added)
            self._scale_rs(rs, sizes[name_of(rs)], operation)

    def _sync_paused_or_scaled(self) -> None:
        """DeploymentController.sync: scale, clean up when paused, update status."""
        new_rs, old_rss = self._all_rss(create=False)
        self._scale(new_rs, old_rss)
        if self.d["spec"].get("paused"):
            self._cleanup(old_rss)
        self._sync_deployment_status([*old_rss, new_rs], new_rs)

    def _check_paused_conditions(self) -> None:
        d = self.d
        if not du.has_progress_deadline(d):
            return
        cond = get_condition(d["status"], "Progressing")
        if cond is not None and cond.get("reason") == du.TIMED_OUT:
            return
        paused_cond = cond is not None and cond.get("reason") == du.PAUSED
        if d["spec"].get("paused") and not paused_cond:
            du.set_condition(d["status"], du.new_condition("Progressing", "Unknown", du.PAUSED,
                                                           "Deployment is paused", self.now))
        elif not d["spec"].get("paused") and paused_cond:
            du.set_condition(d["status"], du.new_condition("Progressing", "Unknown", du.RESUMED,
                                                           "Deployment is resumed", self.now))
        else:
            return
        self._update_status()

    # ---- rolling update ----------------------------------------------------------------------------
    def _rollout_rolling(self) -> None:
        new_rs, old_rss = self._all_rss(create=True)
        assert new_rs is not None
        all_rss: list[Obj | None] = [*old_rss, new_rs]
        if self._reconcile_new_rs(all_rss, new_rs):
            self._sync_rollout_status(all_rss, new_rs)
            return
        if self._reconcile_old_rss(all_rss, du.filter_active(old_rss), new_rs):
            self._sync_rollout_status(all_rss, new_rs)
            return
        if du.deployment_complete(self.d, self.d["status"]):
            self._cleanup(old_rss)
        self._sync_rollout_status(all_rss, new_rs)

    def _reconcile_new_rs(self, all_rss: list[Obj | None], new_rs: Obj) -> bool:
        want = du.replicas(self.d)
        if du.replicas(new_rs) == want:
            return False
        if du.replicas(new_rs) > want:
            return self._scale_and_record(new_rs, want)[0]
        return self._scale_and_record(new_rs, du.new_rs_new_replicas(self.d, all_rss, new_rs))[0]

    def _reconcile_old_rss(self, all_rss: list[Obj | None], old_rss: list[Obj], new_rs: Obj) -> bool:
        d = self.d
        if du.replica_count(old_rss) == 0:
            return False
        all_count = du.replica_count(all_rss)
        min_available = du.replicas(d) - du.max_unavailable(d)
        new_unavailable = du.replicas(new_rs) - du.status_int(new_rs, "availableReplicas")
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        old_rss, cleaned = self._cleanup_unhealthy(old_rss, max_scaled_down)
        scaled = self._scale_down_old_for_rolling([*old_rss, new_rs], old_rss)
        return cleaned + scaled > 0

    def _cleanup_unhealthy(self, old_rss: list[Obj], max_cleanup: int) -> tuple[list[Obj], int]:
        old_rss = du.by_creation(old_rss)
        total = 0
        for i, rs in enumerate(old_rss):
            if total >= max_cleanup:
                break
            if du.replicas(rs) == 0 or du.replicas(rs) == du.status_int(rs, "availableReplicas"):
                continue
            count = min(max_cleanup - total, du.replicas(rs) - du.status_int(rs, "availableReplicas"))
            _, old_rss[i] = self._scale_and_record(rs, du.replicas(rs) - count)
            total += count
        return old_rss, total

    def _scale_down_old_for_rolling(self, all_rss: list[Obj | None], old_rss: list[Obj]) -> int:
        d = self.d
        min_available = du.replicas(d) - du.max_unavailable(d)
        available = du.available_replica_count(all_rss)
        if available <= min_available:
            return 0
        total, target = 0, available - min_available
        for rs in du.by_creation(old_rss):
            if total >= target:
                break
            if du.replicas(rs) == 0:
                continue
            count = min(du.replicas(rs), target - total)
            self._scale_and_record(rs, du.replicas(rs) - count)
            total += count
        return total

    # ---- recreate ----------------------------------------------------------------------------------
    def _rollout_recreate(self) -> None:
        new_rs, old_rss = self._all_rss(create=False)
        all_rss: list[Obj | None] = [*old_rss, new_rs]
        scaled_down = False
        for rs in du.filter_active(old_rss):
            if du.replicas(rs) != 0 and self._scale_and_record(rs, 0)[0]:
                scaled_down = True
        if scaled_down:
            self._sync_rollout_status(all_rss, new_rs)
            return
        if self._old_pods_running(new_rs, old_rss):
            self._sync_rollout_status(all_rss, new_rs)
            return
        if new_rs is None:
            new_rs, old_rss = self._all_rss(create=True)
            all_rss = [*old_rss, new_rs]
        assert new_rs is not None
        self._scale_and_record(new_rs, du.replicas(self.d))
        if du.deployment_complete(self.d, self.d["status"]):
            self._cleanup(old_rss)
        self._sync_rollout_status(all_rss, new_rs)

    def _old_pods_running(self, new_rs: Obj | None, old_rss: list[Obj]) -> bool:
        if du.actual_replica_count(old_rss) > 0:
            return True
        new_uid = uid_of(new_rs) if new_rs is not None else None
        for rs_uid, pods in self.pod_map.items():
            if rs_uid == new_uid:
                continue
            if any(pod_phase(p) not in ("Failed", "Succeeded") for p in pods):
                return True
        return False

    # ---- history -----------------------------------------------------------------------------------
    def _cleanup(self, old_rss: list[Obj]) -> None:
        d = self.d
        if not du.has_revision_history_limit(d):
            return
        alive = [rs for rs in old_rss if not is_deleting(rs)]
        diff = len(alive) - int(d["spec"]["revisionHistoryLimit"])
        if diff <= 0:
            return
        for rs in du.by_revision(alive)[:diff]:
            st = rs.get("status") or {}
            if int(st.get("replicas") or 0) != 0 or du.replicas(rs) != 0 \
                    or generation_of(rs) > int(st.get("observedGeneration") or 0):
                continue
            self.result.actions.append(act.delete(rs_path(self.ns, name_of(rs))))

    # ---- status ------------------------------------------------------------------------------------
    def _calculate_status(self, all_rss: list[Obj | None], new_rs: Obj | None) -> dict[str, Any]:
        d = self.d
        available = du.available_replica_count(all_rss)
        total = du.replica_count(all_rss)
        status: dict[str, Any] = {
            "observedGeneration": generation_of(d),
            "replicas": du.actual_replica_count(all_rss),
            "updatedReplicas": du.actual_replica_count([new_rs]),
            "readyReplicas": du.ready_replica_count(all_rss),
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
        }
        if d["status"].get("collisionCount") is not None:
            status["collisionCount"] = d["status"]["collisionCount"]
        if d["status"].get("conditions"):
            status["conditions"] = [dict(c) for c in d["status"]["conditions"]]
        if available >= du.replicas(d) - du.max_unavailable(d):
            du.set_condition(status, du.new_condition("Available", "True", du.MIN_AVAILABLE,
                                                      "Deployment has minimum availability.", self.now))
        else:
            du.set_condition(status, du.new_condition("Available", "False", du.MIN_UNAVAILABLE,
                                                      "Deployment does not have minimum availability.", self.now))
        return status

    def _sync_deployment_status(self, all_rss: list[Obj | None], new_rs: Obj | None) -> None:
        new_status = self._calculate_status(all_rss, new_rs)
        if du.wire_status(self.d["status"]) == du.wire_status(new_status):
            return
        self.d["status"] = new_status
        self._update_status()

    def _sync_rollout_status(self, all_rss: list[Obj | None], new_rs: Obj | None) -> None:
        d = self.d
        new_status = self._calculate_status(all_rss, new_rs)
        if not du.has_progress_deadline(d):
            du.remove_condition(new_status, "Progressing")
        current = get_condition(d["status"], "Progressing")
        is_complete = (int(new_status.get("replicas") or 0) == int(new_status.get("updatedReplicas") or 0)
                       and current is not None and current.get("reason") == du.NEW_RS_AVAILABLE)
        if du.has_progress_deadline(d) and not is_complete:
            rs_name = name_of(new_rs) if new_rs is not None else None
            if du.deployment_complete(d, new_status):
                msg = f'ReplicaSet "{rs_name}" has successfully progressed.' if rs_name \
                    else f'Deployment "{self.name}" has successfully progressed.'
                du.set_condition(new_status, du.new_condition("Progressing", "True", du.NEW_RS_AVAILABLE, msg,
                                                              self.now))
            elif du.deployment_progressing(d, new_status):
                msg = f'ReplicaSet "{rs_name}" is progressing.' if rs_name \
                    else f'Deployment "{self.name}" is progressing.'
                cond = du.new_condition("Progressing", "True", du.RS_UPDATED, msg, self.now)
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime")
                    du.remove_condition(new_status, "Progressing")
                new_status["conditions"] = [*new_status.get("conditions", []), cond]
            elif du.deployment_timed_out(d, new_status, self.now):
                msg = f'ReplicaSet "{rs_name}" has timed out progressing.' if rs_name \
                    else f'Deployment "{self.name}" has timed out progressing.'
                du.set_condition(new_status, du.new_condition("Progressing", "False", du.TIMED_OUT, msg, self.now))
        failures = [c for rs in all_rss if rs is not None
                    for c in (rs.get("status") or {}).get("conditions") or [] if c.get("type") == "ReplicaFailure"]
        if failures:
            f = failures[0]
            du.set_condition(new_status, {"type": "ReplicaFailure", "status": f.get("status"),
                                          "lastUpdateTime": f.get("lastTransitionTime"),
                                          "lastTransitionTime": f.get("lastTransitionTime"),
                                          "reason": f.get("reason"), "message": f.get("message")})
        else:
            du.remove_condition(new_status, "ReplicaFailure")
        if du.wire_status(d["status"]) == du.wire_status(new_status):
            self._requeue_stuck(new_status)
            return
        d["status"] = new_status
        self._update_status()

    def _requeue_stuck(self, new_status: dict[str, Any]) -> None:
        d = self.d
        current = get_condition(d["status"], "Progressing")
        if not du.has_progress_deadline(d) or current is None:
            return
        if du.deployment_complete(d, new_status) or current.get("reason") == du.TIMED_OUT:
            return
        since = parse_time(current.get("lastUpdateTime"))
        if since is None:
            return
        after = (since + seconds(int(d["spec"]["progressDeadlineSeconds"])) - self.now).total_seconds()
        self.result.requeue_after = max(after, 0.0) + 1.0 if after >= 1 else 1.0


# ---- the controller ------------------------------------------------------------------------------


class DeploymentController(Controller):
    name = "deployment-controller"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.d_store = ctx.informers.store(API_VERSION, "deployments")
        self.rs_store = ctx.informers.store(API_VERSION, "replicasets")
        self.pod_store = ctx.informers.store("v1", "pods")
        self.recorder = ctx.recorder(self.name)
        self.d_store.add_handler(self._on_deployment)
        self.rs_store.add_handler(self._on_rs)
        self.pod_store.add_handler(self._on_pod)

    def resync_keys(self) -> list[str]:
        return [key_of(o) for o in self.d_store.list()]

    def stores(self) -> list[Any]:
        return [self.d_store, self.rs_store, self.pod_store]

    async def _on_deployment(self, typ: str, obj: Obj, old: Obj | None) -> None:
        self.queue.add(key_of(obj))

    def _owner_of(self, rs: Obj) -> Obj | None:
        ref = controller_ref(rs)
        if ref is None or ref.get("kind") != KIND:
            return None
        d = self.d_store.get(namespace_of(rs), ref.get("name", ""))
        return d if d is not None and uid_of(d) == ref.get("uid") else None

    def _matching(self, rs: Obj) -> list[Obj]:
        out = []
        for d in self.d_store.list(namespace_of(rs)):
            try:
                sel = selector_from_spec((d.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if sel and matches(sel, labels_of(rs)):
                out.append(d)
        return out

    async def _on_rs(self, typ: str, rs: Obj, old: Obj | None) -> None:
        if typ == "MODIFIED" and old is not None:
            if meta(rs).get("resourceVersion") == meta(old).get("resourceVersion"):
                return
            old_ref = controller_ref(old)
            if old_ref != controller_ref(rs) and (od := self._owner_of(old)):
                self.queue.add(key_of(od))
        owner = self._owner_of(rs)
        if owner is not None:
            self.queue.add(key_of(owner))
            return
        if typ != "DELETED" and controller_ref(rs) is None:
            for d in self._matching(rs):
                self.queue.add(key_of(d))

    async def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        # Only Recreate deployments wait for old pods to be gone.
        if typ != "DELETED":
            return
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.rs_store.get(namespace_of(pod), ref.get("name", ""))
        d = self._owner_of(rs) if rs is not None else None
        if d is not None and ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
            self.queue.add(key_of(d))

    async def sync(self, key: str) -> float | None:
        ns, name = split_key(key)
        d = self.d_store.get(ns, name)
        if d is None:
            return None
        try:
            selector = selector_from_spec((d.get("spec") or {}).get("selector"))
        except SelectorError as e:
            log.warning("deployment %s has an invalid selector: %s", key, e)
            return None
        namespace_rs = self.rs_store.list(ns)
        rs_list = await self._claim_rss(d, selector, namespace_rs)
        pod_map: dict[str, list[Obj]] = {}
        if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
            uids = {uid_of(rs) for rs in rs_list}
            for pod in self.pod_store.list(ns):
                ref = controller_ref(pod)
                if selector and matches(selector, labels_of(pod)) and ref and ref.get("uid") in uids:
                    pod_map.setdefault(ref["uid"], []).append(pod)
        result = DeploymentSync(d, rs_list, pod_map, self.now(),
                                namespace_rs_names={name_of(rs): rs for rs in namespace_rs}).run()
        for ev in result.events:
            self.recorder.event(ev.obj, ev.api_version, ev.kind, ev.type, ev.reason, ev.message)
        await act.execute(self.kube, result.actions, self.recorder)
        if result.error:
            raise RuntimeError(f"deployment {key}: {result.error}")
        return result.requeue_after

    async def _claim_rss(self, d: Obj, selector: Any, candidates: list[Obj]) -> list[Obj]:
        ref = new_controller_ref(d, API_VERSION, KIND)
        claimed, releases, orphans = claim(
            d, candidates, lambda rs: bool(selector) and matches(selector, labels_of(rs)),
            lambda rs: rs_path(namespace_of(rs), name_of(rs)),
        )
        claimed += await claim_orphans(self.kube, d, deploy_path(namespace_of(d), name_of(d)), orphans, ref,
                                       lambda rs: rs_path(namespace_of(rs), name_of(rs)), releases)
        return claimed
