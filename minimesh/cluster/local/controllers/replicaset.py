"""The ReplicaSet controller (pkg/controller/replicaset): keep `spec.replicas` pods of the template alive.

Pure parts: `calculate_status`, `status_changed`, `replicas_diff`, `availability_requeue`. The I/O around
them claims pods (adopt/release), creates pods in slow-start batches (1, 2, 4, ...) guarded by
expectations, deletes the surplus in the real order, and writes the status.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from minimesh.cluster.local.controllers.expectations import Expectations
from minimesh.cluster.local.controllers.objects import (
    Obj,
    available_at,
    controller_ref,
    deepcopy,
    filter_active_pods,
    fmt_time,
    generation_of,
    get_condition,
    is_deleting,
    is_pod_available,
    is_pod_ready,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    new_controller_ref,
    remove_condition,
    split_key,
    uid_of,
)
from minimesh.cluster.local.controllers.podcontrol import (
    claim,
    claim_orphans,
    pod_from_template,
    pods_to_delete,
    template_labels_match,
)
from minimesh.cluster.local.controllers.runner import Context, Controller
from minimesh.k8s.aclient import ApiError, resource_path
from minimesh.k8s.selectors import SelectorError, matches, selector_from_spec

log = logging.getLogger(__name__)

API_VERSION = "apps/v1"
KIND = "ReplicaSet"
BURST_REPLICAS = 500
SLOW_START_INITIAL_BATCH = 1


def rs_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    return resource_path(API_VERSION, "replicasets", namespace, name, sub)


def pod_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "pods", namespace, name)


def spec_replicas(obj: Obj) -> int:
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


# ---- pure decisions --------------------------------------------------------------------------------


def replicas_diff(rs: Obj, filtered_pods: list[Obj]) -> int:
    """Negative: pods to create; positive: pods to delete (both capped at the burst size)."""
    diff = len(filtered_pods) - spec_replicas(rs)
    return max(-BURST_REPLICAS, min(BURST_REPLICAS, diff))


def calculate_status(rs: Obj, filtered_pods: list[Obj], manage_error: str | None, now: datetime) -> dict[str, Any]:
    """replicaset.calculateStatus: counts over the claimed active pods, plus ReplicaFailure."""
    spec = rs.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template = spec.get("template") or {}
    status = deepcopy(rs.get("status") or {})
    fully = ready = available = 0
    for pod in filtered_pods:
        if template_labels_match(template, pod):
            fully += 1
        if is_pod_ready(pod):
            ready += 1
            if is_pod_available(pod, min_ready, now):
                available += 1
    failure = get_condition(status, "ReplicaFailure")
    if manage_error is not None and failure is None:
        diff = len(filtered_pods) - spec_replicas(rs)
        reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
        status.setdefault("conditions", []).append({
            "type": "ReplicaFailure", "status": "True", "lastTransitionTime": fmt_time(now),
            "reason": reason, "message": manage_error,
        })
    elif manage_error is None and failure is not None:
        remove_condition(status, "ReplicaFailure")
    status["replicas"] = len(filtered_pods)
    status["fullyLabeledReplicas"] = fully
    status["readyReplicas"] = ready
    status["availableReplicas"] = available
    return status


_COUNTERS = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")


def status_changed(rs: Obj, new_status: dict[str, Any]) -> bool:
    old = rs.get("status") or {}
    if any(int(old.get(k) or 0) != int(new_status.get(k) or 0) for k in _COUNTERS):
        return True
    if generation_of(rs) != int(old.get("observedGeneration") or 0):
        return True
    return (old.get("conditions") or []) != (new_status.get("conditions") or [])


def wire_status(status: dict[str, Any], generation: int) -> dict[str, Any]:
    """The status as Go serialises it: replicas always, other counters omitted when zero."""
    out: dict[str, Any] = {"replicas": int(status.get("replicas") or 0)}
    for k in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        if status.get(k):
            out[k] = int(status[k])
    if generation:
        out["observedGeneration"] = generation
    if status.get("conditions"):
        out["conditions"] = status["conditions"]
    return out


def availability_requeue(rs: Obj, pods: list[Obj], now: datetime) -> float | None:
    """Seconds until the next ready pod becomes available (minReadySeconds), if any is pending."""
    min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
    if min_ready <= 0:
        return None
    waits = [(t - now).total_seconds() for p in pods if (t := available_at(p, min_ready)) is not None and t >= now]
    return min(waits) + 0.05 if waits else None


def related_pods(rs: Obj, all_rs: list[Obj], pods: list[Obj]) -> list[Obj]:
    """Pods of every ReplicaSet that shares this one's controller (a Deployment's other revisions)."""
    owner = controller_ref(rs)
    if owner is None:
        return []
    sibling_uids = {uid_of(r) for r in all_rs if (c := controller_ref(r)) and c.get("uid") == owner.get("uid")}
    return [p for p in pods if (c := controller_ref(p)) and c.get("uid") in sibling_uids]


# ---- the controller ------------------------------------------------------------------------------


def _error_message(e: Exception) -> str:
    if isinstance(e, ApiError):
        return str(e.status.get("message") or e)
    return str(e)


def _namespace_terminating(e: Exception) -> bool:
    if not isinstance(e, ApiError):
        return False
    causes = (e.status.get("details") or {}).get("causes") or []
    return any(c.get("type") == "NamespaceTerminating" for c in causes) or (
        e.code == 403 and "because it is being terminated" in str(e.status.get("message", "")))


class ReplicaSetController(Controller):
    name = "replicaset-controller"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.rs_store = ctx.informers.store(API_VERSION, "replicasets")
        self.pod_store = ctx.informers.store("v1", "pods")
        self.expectations = Expectations()
        self.recorder = ctx.recorder(self.name)
        self.rs_store.add_handler(self._on_rs)
        self.pod_store.add_handler(self._on_pod)

    def resync_keys(self) -> list[str]:
        return [key_of(o) for o in self.rs_store.list()]

    def stores(self) -> list[Any]:
        return [self.rs_store, self.pod_store]

    # ---- event handlers: only enqueue and keep expectations --------------------------------------
    async def _on_rs(self, typ: str, obj: Obj, old: Obj | None) -> None:
        if typ == "DELETED":
            self.expectations.delete(key_of(obj))
        self.queue.add(key_of(obj))

    def _resolve(self, namespace: str, ref: dict[str, Any] | None) -> Obj | None:
        if ref is None or ref.get("kind") != KIND:
            return None
        rs = self.rs_store.get(namespace, ref.get("name", ""))
        return rs if rs is not None and uid_of(rs) == ref.get("uid") else None

    def _matching(self, pod: Obj) -> list[Obj]:
        out = []
        for rs in self.rs_store.list(namespace_of(pod)):
            try:
                sel = selector_from_spec((rs.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if sel and matches(sel, labels_of(pod)):
                out.append(rs)
        return out

    def _pod_gone(self, pod: Obj) -> None:
        rs = self._resolve(namespace_of(pod), controller_ref(pod))
        if rs is not None:
            self.expectations.deletion_observed(key_of(rs), key_of(pod))
            self.queue.add(key_of(rs))

    async def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        if typ == "DELETED":
            self._pod_gone(pod)
            return
        if typ == "ADDED" or old is None:
            if is_deleting(pod):
                self._pod_gone(pod)
                return
            ref = controller_ref(pod)
            if ref is not None:
                rs = self._resolve(namespace_of(pod), ref)
                if rs is not None:
                    self.expectations.creation_observed(key_of(rs))
                    self.queue.add(key_of(rs))
                return
            for rs in self._matching(pod):
                self.queue.add(key_of(rs))
            return
        # MODIFIED
        if meta(pod).get("resourceVersion") == meta(old).get("resourceVersion"):
            return
        label_changed = labels_of(pod) != labels_of(old)
        if is_deleting(pod):
            self._pod_gone(pod)
            if label_changed:
                self._pod_gone(old)
            return
        cur_ref, old_ref = controller_ref(pod), controller_ref(old)
        if cur_ref != old_ref and old_ref is not None and (rs := self._resolve(namespace_of(old), old_ref)):
            self.queue.add(key_of(rs))
        if cur_ref is not None:
            if rs := self._resolve(namespace_of(pod), cur_ref):
                self.queue.add(key_of(rs))
            return
        if label_changed or cur_ref != old_ref:
            for rs in self._matching(pod):
                self.queue.add(key_of(rs))

    # ---- sync -----------------------------------------------------------------------------------------
    async def sync(self, key: str) -> float | None:
        ns, name = split_key(key)
        rs = self.rs_store.get(ns, name)
        if rs is None:
            self.expectations.delete(key)
            return None
        needs_sync = self.expectations.satisfied(key)
        try:
            selector = selector_from_spec((rs.get("spec") or {}).get("selector"))
        except SelectorError as e:
            log.warning("replicaset %s has an invalid selector: %s", key, e)
            return None

        filtered = filter_active_pods(self.pod_store.list(ns))
        filtered = await self._claim(rs, selector, filtered)

        manage_error: str | None = None
        if needs_sync and not is_deleting(rs):
            manage_error = await self._manage(rs, filtered)

        now = self.now()
        status = calculate_status(rs, filtered, manage_error, now)
        if status_changed(rs, status):
            await self._write_status(rs, status)
        if manage_error is not None:
            raise RuntimeError(f"managing replicas of {key}: {manage_error}")
        return availability_requeue(rs, filtered, now)

    async def _claim(self, rs: Obj, selector: Any, pods: list[Obj]) -> list[Obj]:
        ref = new_controller_ref(rs, API_VERSION, KIND)
        claimed, releases, orphans = claim(
            rs, pods, lambda p: bool(selector) and matches(selector, labels_of(p)),
            lambda p: pod_path(namespace_of(p), name_of(p)),
        )
        claimed += await claim_orphans(self.kube, rs, rs_path(namespace_of(rs), name_of(rs)), orphans, ref,
                                       lambda p: pod_path(namespace_of(p), name_of(p)), releases)
        return claimed

    async def _manage(self, rs: Obj, filtered: list[Obj]) -> str | None:
        key = key_of(rs)
        diff = replicas_diff(rs, filtered)
        if diff < 0:
            return await self._create(rs, -diff)
        if diff > 0:
            related = related_pods(rs, self.rs_store.list(namespace_of(rs)), self.pod_store.list(namespace_of(rs)))
            victims = pods_to_delete(filtered, related, diff, self.now())
            self.expectations.expect_deletions(key, [key_of(p) for p in victims])
            results = await asyncio.gather(*(self._delete_pod(rs, p) for p in victims))
            errors = [r for r in results if r]
            return errors[0] if errors else None
        return None

    async def _create(self, rs: Obj, count: int) -> str | None:
        key = key_of(rs)
        ns = namespace_of(rs)
        body = pod_from_template((rs.get("spec") or {}).get("template") or {}, name_of(rs),
                                 new_controller_ref(rs, API_VERSION, KIND))
        self.expectations.expect_creations(key, count)
        error: str | None = None
        remaining = count
        batch = min(remaining, SLOW_START_INITIAL_BATCH)
        while remaining > 0:
            results = await asyncio.gather(*(self._create_pod(rs, ns, body) for _ in range(batch)))
            failures = [r for r in results if r is not None]
            remaining -= batch
            if failures:
                error = failures[0]
                for _ in range(remaining):  # never attempted: not expected either
                    self.expectations.creation_observed(key)
                break
            batch = min(2 * batch, remaining)
        return error

    async def _create_pod(self, rs: Obj, ns: str, body: Obj) -> str | None:
        try:
            pod = await self.kube.create(pod_path(ns), body)
        except Exception as e:
            self.expectations.creation_observed(key_of(rs))
            if _namespace_terminating(e):
                return None
            msg = _error_message(e)
            self.recorder.event(rs, API_VERSION, KIND, "Warning", "FailedCreate", f"Error creating: {msg}")
            return msg
        self.recorder.event(rs, API_VERSION, KIND, "Normal", "SuccessfulCreate", f"Created pod: {name_of(pod)}")
        return None

    async def _delete_pod(self, rs: Obj, pod: Obj) -> str | None:
        try:
            await self.kube.delete(pod_path(namespace_of(pod), name_of(pod)))
        except Exception as e:
            self.expectations.deletion_observed(key_of(rs), key_of(pod))
            if isinstance(e, ApiError) and e.code == 404:
                return None
            msg = _error_message(e)
            self.recorder.event(rs, API_VERSION, KIND, "Warning", "FailedDelete", f"Error deleting: {msg}")
            return msg
        self.recorder.event(rs, API_VERSION, KIND, "Normal", "SuccessfulDelete", f"Deleted pod: {name_of(pod)}")
        return None

    async def _write_status(self, rs: Obj, status: dict[str, Any]) -> None:
        generation = generation_of(rs)
        target = rs
        for attempt in range(2):
            body = {**target, "status": wire_status(status, generation)}
            try:
                await self.kube.replace(rs_path(namespace_of(rs), name_of(rs), "status"), body)
                return
            except ApiError as e:
                if e.code != 409 or attempt == 1:
                    raise
                fresh = await self.kube.get_or_none(rs_path(namespace_of(rs), name_of(rs)))
                if fresh is None or uid_of(fresh) != uid_of(rs):
                    return
                target = fresh
