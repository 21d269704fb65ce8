"""What the workload controllers share about pods: building a pod from a template, the order in which
surplus pods are deleted, and claiming (adopting/releasing) objects by controller reference.

Ported from k8s.io/kubernetes/pkg/controller (controller_utils.go, controller_ref_manager.go).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from minimesh.cluster.local.controllers import actions as act
from minimesh.cluster.local.controllers.objects import (
    Obj,
    annotations_of,
    controller_ref,
    creation_time,
    deepcopy,
    is_deleting,
    is_native_sidecar,
    is_pod_active,
    is_pod_ready,
    labels_of,
    meta,
    namespace_of,
    owner_refs,
    pod_phase,
    pod_ready_since,
    uid_of,
)
from minimesh.k8s.aclient import ApiError

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


# ---- pods from templates -------------------------------------------------------------------------


def pod_from_template(template: Mapping[str, Any], owner_name: str, owner_ref: dict[str, Any] | None,
                      *, extra_finalizers: Iterable[str] = ()) -> Obj:
    """controller.GetPodFromTemplate: labels, annotations, finalizers and spec of the template,
    `generateName: <owner>-`, and the controller reference."""
    tmeta = template.get("metadata") or {}
    pod_meta: dict[str, Any] = {"generateName": f"{owner_name}-"}
    if tmeta.get("labels"):
        pod_meta["labels"] = dict(tmeta["labels"])
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    finalizers = list(tmeta.get("finalizers") or [])
    for f in extra_finalizers:
        if f not in finalizers:
            finalizers.append(f)
    if finalizers:
        pod_meta["finalizers"] = finalizers
    if owner_ref is not None:
        pod_meta["ownerReferences"] = [dict(owner_ref)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": deepcopy(template.get("spec") or {})}


# ---- which pods go first -------------------------------------------------------------------------


def _deletion_cost(pod: Obj) -> int:
    try:
        return int(annotations_of(pod).get(DELETION_COST_ANNOTATION, "0"))
    except ValueError:
        return 0


def _max_restarts(pod: Obj) -> tuple[int, int]:
    """(max restarts of regular containers, max restarts of native sidecars)."""
    status = pod.get("status") or {}
    regular = max((int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or []), default=0)
    sidecar_names = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or [] if is_native_sidecar(c)}
    sidecar = max((int(c.get("restartCount", 0)) for c in status.get("initContainerStatuses") or []
                   if c.get("name") in sidecar_names), default=0)
    return regular, sidecar


def _after_or_zero(t1: datetime | None, t2: datetime | None) -> bool:
    """t1 after t2, where a missing time counts as after everything."""
    if t1 is None or t2 is None:
        return t1 is None
    return t1 > t2


def _log_rank(t: datetime, now: datetime) -> int:
    d = (now - t).total_seconds() * 1e9  # Go compares durations in nanoseconds
    return int(math.log2(d)) if d > 0 else -1


def _cmp(less: Callable[[Obj, Obj], bool]) -> Callable[[Obj, Obj], int]:
    def compare(a: Obj, b: Obj) -> int:
        if less(a, b):
            return -1
        if less(b, a):
            return 1
        return 0
    return compare


def _less_active(a: Obj, b: Obj) -> bool | None:
    """Rules 1-3 shared by both orders; None when they do not decide."""
    na, nb = (a.get("spec") or {}).get("nodeName", ""), (b.get("spec") or {}).get("nodeName", "")
    if na != nb and (not na or not nb):
        return not na  # unassigned first
    pa, pb = _PHASE_ORDINAL.get(pod_phase(a), 0), _PHASE_ORDINAL.get(pod_phase(b), 0)
    if pa != pb:
        return pa < pb  # Pending < Unknown < Running
    ra, rb = is_pod_ready(a), is_pod_ready(b)
    if ra != rb:
        return not ra  # not ready first
    return None


def _restarts_less(a: Obj, b: Obj) -> bool | None:
    ra, rb = _max_restarts(a), _max_restarts(b)
    if ra[0] != rb[0]:
        return ra[0] > rb[0]
    if ra[1] != rb[1]:
        return ra[1] > rb[1]
    return None


def active_pods_less(a: Obj, b: Obj) -> bool:
    """controller.ActivePods.Less (used by the Job controller)."""
    decided = _less_active(a, b)
    if decided is not None:
        return decided
    if is_pod_ready(a) and is_pod_ready(b):
        ta, tb = pod_ready_since(a), pod_ready_since(b)
        if ta != tb:
            return _after_or_zero(ta, tb)
    decided = _restarts_less(a, b)
    if decided is not None:
        return decided
    ca, cb = creation_time(a), creation_time(b)
    if ca != cb:
        return _after_or_zero(ca, cb)
    return False


def sort_active_pods(pods: list[Obj]) -> list[Obj]:
    return sorted(pods, key=functools.cmp_to_key(_cmp(active_pods_less)))


def ranked_pods_less(a: Obj, b: Obj, rank_a: int, rank_b: int, now: datetime) -> bool:
    """controller.ActivePodsWithRanks.Less with PodDeletionCost and LogarithmicScaleDown (GA)."""
    decided = _less_active(a, b)
    if decided is not None:
        return decided
    ca_, cb_ = _deletion_cost(a), _deletion_cost(b)
    if ca_ != cb_:
        return ca_ < cb_
    if rank_a != rank_b:
        return rank_a > rank_b  # more co-located pods first
    if is_pod_ready(a) and is_pod_ready(b):
        ta, tb = pod_ready_since(a), pod_ready_since(b)
        if ta != tb:
            if ta is None or tb is None:
                return _after_or_zero(ta, tb)
            diff = _log_rank(ta, now) - _log_rank(tb, now)
            return uid_of(a) < uid_of(b) if diff == 0 else diff < 0
    decided = _restarts_less(a, b)
    if decided is not None:
        return decided
    ta, tb = creation_time(a), creation_time(b)
    if ta != tb:
        if ta is None or tb is None:
            return _after_or_zero(ta, tb)
        diff = _log_rank(ta, now) - _log_rank(tb, now)
        return uid_of(a) < uid_of(b) if diff == 0 else diff < 0
    return False


def pods_to_delete(filtered: list[Obj], related: list[Obj], diff: int, now: datetime) -> list[Obj]:
    """replicaset.getPodsToDelete: rank by co-located related active pods, then the rules above."""
    if diff >= len(filtered):
        return list(filtered[:diff])
    on_node: dict[str, int] = {}
    for p in related:
        if is_pod_active(p):
            node = (p.get("spec") or {}).get("nodeName", "")
            on_node[node] = on_node.get(node, 0) + 1
    ranked = [(p, on_node.get((p.get("spec") or {}).get("nodeName", ""), 0)) for p in filtered]

    def compare(x: tuple[Obj, int], y: tuple[Obj, int]) -> int:
        if ranked_pods_less(x[0], y[0], x[1], y[1], now):
            return -1
        if ranked_pods_less(y[0], x[0], y[1], x[1], now):
            return 1
        return 0

    ranked.sort(key=functools.cmp_to_key(compare))
    return [p for p, _ in ranked[:diff]]


# ---- claiming by controller reference ------------------------------------------------------------


def adopt_patch(obj: Obj, ref: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON patch adding our controller reference; the `test`s make it fail if the object changed owner."""
    current = owner_refs(obj)
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid_of(obj)}]
    if current:
        ops.append({"op": "test", "path": "/metadata/ownerReferences", "value": current})
    ops.append({"op": "add", "path": "/metadata/ownerReferences", "value": [*current, ref]})
    return ops


def release_patch(obj: Obj, owner_uid: str) -> list[dict[str, Any]]:
    """JSON patch removing the references to `owner_uid`."""
    current = owner_refs(obj)
    keep = [r for r in current if r.get("uid") != owner_uid]
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": uid_of(obj)},
        {"op": "test", "path": "/metadata/ownerReferences", "value": current},
    ]
    ops.append({"op": "replace", "path": "/metadata/ownerReferences", "value": keep} if keep
               else {"op": "remove", "path": "/metadata/ownerReferences"})
    return ops


def claim(owner: Obj, candidates: Iterable[Obj], match: Callable[[Obj], bool],
          path_of: Callable[[Obj], str]) -> tuple[list[Obj], list[act.Action], list[Obj]]:
    """ControllerRefManager.ClaimObject over many objects.

    Returns (objects we own that match, release patches for those we own that no longer match,
    orphans to adopt). Orphans count as claimed only once their adoption patch succeeded.
    """
    owner_uid = uid_of(owner)
    owner_deleting = is_deleting(owner)
    claimed: list[Obj] = []
    releases: list[act.Action] = []
    orphans: list[Obj] = []
    for obj in candidates:
        cref = controller_ref(obj)
        if cref is not None:
            if cref.get("uid") != owner_uid:
                continue  # someone else's
            if match(obj):
                claimed.append(obj)
            elif not owner_deleting:
                releases.append(act.patch(path_of(obj), release_patch(obj, owner_uid), "json", ok_codes=(404,)))
            continue
        if owner_deleting or not match(obj) or is_deleting(obj):
            continue
        if namespace_of(owner) and namespace_of(owner) != namespace_of(obj):
            continue
        orphans.append(obj)
    return claimed, releases, orphans


def adopt_action(obj: Obj, ref: dict[str, Any], path: str) -> act.Action:
    return act.patch(path, adopt_patch(obj, ref), "json")


def with_owner(obj: Obj, ref: dict[str, Any]) -> Obj:
    """The object as it looks after adoption (for the rest of this sync)."""
    out = dict(obj)
    out["metadata"] = {**meta(obj), "ownerReferences": [*owner_refs(obj), ref]}
    return out


def template_labels_match(template: Mapping[str, Any], pod: Obj) -> bool:
    """calculateStatus' fullyLabeledReplicas: every template label present on the pod."""
    want = (template.get("metadata") or {}).get("labels") or {}
    have = labels_of(pod)
    return all(have.get(k) == v for k, v in want.items())


async def claim_orphans(kube: Any, owner: Obj, owner_path: str, orphans: list[Obj], ref: dict[str, Any],
                        path_of: Callable[[Obj], str], releases: list[act.Action]) -> list[Obj]:
    """Run the release patches, then adopt orphans after re-reading the owner from the API server
    (RecheckDeletionTimestamp: never adopt for an owner that is being deleted or was replaced).
    Returns the adopted objects; raises the first real error after trying everything."""
    errors: list[Exception] = []
    for release in releases:
        try:
            await act.perform(kube, release)
        except ApiError as e:
            if e.code != 404:
                errors.append(e)
    adopted: list[Obj] = []
    if orphans:
        fresh = await kube.get_or_none(owner_path)
        if fresh is not None and uid_of(fresh) == uid_of(owner) and not is_deleting(fresh):
            for obj in orphans:
                try:
                    await act.perform(kube, adopt_action(obj, ref, path_of(obj)))
                except ApiError as e:
                    if e.code != 404:
                        errors.append(e)
                    continue
                adopted.append(with_owner(obj, ref))
    if errors:
        raise errors[0]
    return adopted
