"""The Job controller (pkg/controller/job, Kubernetes 1.32 behaviour, NonIndexed completion mode).

Pods are created with the `batch.kubernetes.io/job-tracking` finalizer; a finished pod is first recorded
in `status.uncountedTerminatedPods`, then its finalizer is removed, then it moves into the
succeeded/failed counters, so no pod is counted twice or lost, even across restarts. Terminal
conditions are preceded by the interim SuccessCriteriaMet / FailureTarget conditions and only set once
no pod is terminating. Failed pods are replaced after an exponential back-off (10 s · 2^n, capped).

The decisions are pure functions below (counting, conditions, back-off, deadlines, which pods go);
`JobController.sync` follows the Go `syncJob` around them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from minimesh.cluster.local.controllers.expectations import Expectations, UIDTracking
from minimesh.cluster.local.controllers.objects import (
    Obj,
    controller_ref,
    creation_time,
    deepcopy,
    filter_active_pods,
    finalizers_of,
    fmt_time,
    get_condition,
    is_deleting,
    is_pod_ready,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    new_controller_ref,
    owner_refs,
    parse_time,
    pod_phase,
    split_key,
    uid_of,
)
from minimesh.cluster.local.controllers.podcontrol import (
    adopt_patch,
    claim,
    pod_from_template,
    sort_active_pods,
)
from minimesh.cluster.local.controllers.runner import Context, Controller
from minimesh.k8s.aclient import ApiError, resource_path
from minimesh.k8s.selectors import SelectorError, matches, selector_from_spec

log = logging.getLogger(__name__)

API_VERSION = "batch/v1"
KIND = "Job"
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MAX_UNCOUNTED_PODS = 500
MAX_POD_CREATE_DELETE_PER_SYNC = 500
SYNC_BATCH_PERIOD = 1.0  # pod events are batched like the real controller's syncJobBatchPeriod
ORPHAN_PREFIX = "orphan-pod:"

REASON_BACKOFF_LIMIT = "BackoffLimitExceeded"
REASON_DEADLINE = "DeadlineExceeded"
REASON_COMPLETIONS = "CompletionsReached"


def job_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    return resource_path(API_VERSION, "jobs", namespace, name, sub)


def pod_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "pods", namespace, name)


# ---- pure helpers ------------------------------------------------------------------------------------


def with_defaults(job: Obj) -> Obj:
    """The API server's Job defaults on a copy, and a selector on the job's uid if it has none."""
    spec = job.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podReplacementPolicy") is None and spec.get("podFailurePolicy") is None:
        spec["podReplacementPolicy"] = "TerminatingOrFailed"
    if not spec.get("selector"):
        spec["selector"] = {"matchLabels": {CONTROLLER_UID_LABEL: uid_of(job)}}
    return job


def finished_condition(job: Obj) -> dict[str, Any] | None:
    """jobutil.FinishedCondition: Complete or Failed, True."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c
    return None


def is_job_finished(job: Obj) -> bool:
    return finished_condition(job) is not None


def has_tracking_finalizer(pod: Obj) -> bool:
    return TRACKING_FINALIZER in finalizers_of(pod)


def only_replace_failed_pods(job: Obj) -> bool:
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def is_pod_failed(pod: Obj, job: Obj) -> bool:
    """Failed, or (unless only failed pods are replaced) deleted before it succeeded."""
    if pod_phase(pod) == "Failed":
        return True
    if only_replace_failed_pods(job):
        return False
    return is_deleting(pod) and pod_phase(pod) != "Succeeded"


def count_terminating(pods: list[Obj]) -> int:
    """controller.CountTerminatingPods: being deleted and not terminal yet."""
    return sum(1 for p in pods if is_deleting(p) and pod_phase(p) not in ("Succeeded", "Failed"))


def new_condition(ctype: str, status: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    ts = fmt_time(now)
    return {"type": ctype, "status": status, "lastProbeTime": ts, "lastTransitionTime": ts,
            "reason": reason, "message": message}


def ensure_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
                     now: datetime) -> tuple[list[dict[str, Any]], bool]:
    """ensureJobConditionStatus: update in place, or append unless the new status is False."""
    for i, c in enumerate(conditions):
        if c.get("type") == ctype:
            if c.get("status") != status or c.get("reason", "") != reason or c.get("message", "") != message:
                conditions[i] = new_condition(ctype, status, reason, message, now)
                return conditions, True
            return conditions, False
    if status != "False":
        return [*conditions, new_condition(ctype, status, reason, message, now)], True
    return conditions, False


def past_backoff_limit_on_failure(job: Obj, pods: list[Obj]) -> bool:
    """restartPolicy OnFailure: container restarts of running/pending pods count against backoffLimit."""
    spec = job.get("spec") or {}
    if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
        return False
    total = 0
    for p in pods:
        if pod_phase(p) in ("Running", "Pending"):
            st = p.get("status") or {}
            for c in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
                total += int(c.get("restartCount") or 0)
    limit = int(spec.get("backoffLimit") or 0)
    return total > 0 if limit == 0 else total >= limit


def past_active_deadline(job: Obj, now: datetime) -> bool:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    if spec.get("activeDeadlineSeconds") is None or not status.get("startTime") or spec.get("suspend"):
        return False
    start = parse_time(status["startTime"])
    return start is not None and (now - start).total_seconds() >= int(spec["activeDeadlineSeconds"])


def finished_time(pod: Obj) -> datetime:
    """getFinishedTime: latest container finish, else Ready=False transition, else deletion, else creation."""
    st = pod.get("status") or {}
    latest: datetime | None = None
    statuses = st.get("containerStatuses") or []
    for cs in statuses:
        term = (cs.get("state") or {}).get("terminated")
        t = parse_time(term.get("finishedAt")) if term else None
        if t is None:
            latest = None
            break
        latest = t if latest is None or t > latest else latest
    if statuses and latest is not None:
        return latest
    ready = get_condition(st, "Ready")
    if ready is not None and ready.get("status") == "False" and ready.get("lastTransitionTime"):
        t = parse_time(ready["lastTransitionTime"])
        if t is not None:
            return t
    m = meta(pod)
    if m.get("deletionTimestamp"):
        t = parse_time(m["deletionTimestamp"])
        if t is not None:
            return t - timedelta(seconds=int(m.get("deletionGracePeriodSeconds") or 0))
    return creation_time(pod) or datetime.fromtimestamp(0, UTC)


@dataclass
class Backoff:
    failures_after_last_success: int = 0
    last_failure: datetime | None = None


def next_backoff(prev: Backoff, new_succeeded: list[Obj], new_failed: list[Obj]) -> Backoff:
    """backoffStore.newBackoffRecord: failures since the last success, and when the last one happened."""
    succ = sorted(new_succeeded, key=finished_time)
    fail = sorted(new_failed, key=finished_time)
    if not succ:
        if not fail:
            return Backoff(prev.failures_after_last_success, prev.last_failure)
        return Backoff(prev.failures_after_last_success + len(fail), finished_time(fail[-1]))
    out = Backoff(0, None)
    last_success = finished_time(succ[-1])
    for p in reversed(fail):
        t = finished_time(p)
        if t <= last_success:
            break
        if out.last_failure is None:
            out.last_failure = t
        out.failures_after_last_success += 1
    return out


def backoff_remaining(rec: Backoff, now: datetime, base: float, cap: float) -> float:
    """Seconds left before a replacement pod may be created (0 when it may be now)."""
    if rec.failures_after_last_success == 0 or rec.last_failure is None:
        return 0.0
    delay = base
    for _ in range(1, rec.failures_after_last_success):
        delay *= 2
        if delay >= cap:
            delay = cap
            break
    elapsed = (now - rec.last_failure).total_seconds()
    return 0.0 if delay < elapsed else delay - elapsed


def want_active(job: Obj, active: int, succeeded: int) -> int:
    spec = job["spec"]
    parallelism = int(spec.get("parallelism") or 0)
    if spec.get("completions") is None:
        # Work-queue job: once one pod succeeded, leave whatever runs running.
        return active if succeeded > 0 else parallelism
    return max(0, min(int(spec["completions"]) - succeeded, parallelism))


def wire_status(status: dict[str, Any]) -> dict[str, Any]:
    """JobStatus as Go serialises it (active/succeeded/failed omitempty; ready/terminating pointers)."""
    out: dict[str, Any] = {}
    for k in ("conditions", "startTime", "completionTime"):
        if status.get(k):
            out[k] = status[k]
    for k in ("active", "succeeded", "failed"):
        if status.get(k):
            out[k] = int(status[k])
    if status.get("terminating") is not None:
        out["terminating"] = int(status["terminating"])
    uncounted = status.get("uncountedTerminatedPods") or {}
    out["uncountedTerminatedPods"] = {k: list(v) for k, v in uncounted.items() if v}
    if status.get("ready") is not None:
        out["ready"] = int(status["ready"])
    return out


# ---- one sync ------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    job: Obj
    pods: list[Obj]
    active_pods: list[Obj]
    ready: int
    terminating: int
    uncounted_succeeded: set[str]
    uncounted_failed: set[str]
    expected_rm: set[str]
    succeeded: int = 0
    failed: int = 0
    finished: dict[str, Any] | None = None
    new_backoff: Backoff = field(default_factory=Backoff)


class JobController(Controller):
    name = "job-controller"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.job_store = ctx.informers.store(API_VERSION, "jobs")
        self.pod_store = ctx.informers.store("v1", "pods")
        self.expectations = Expectations()
        self.finalizer_expectations = UIDTracking()
        self.backoffs: dict[str, Backoff] = {}
        self.recorder = ctx.recorder(self.name)
        self.job_store.add_handler(self._on_job)
        self.pod_store.add_handler(self._on_pod)

    def resync_keys(self) -> list[str]:
        return [key_of(o) for o in self.job_store.list()]

    def stores(self) -> list[Any]:
        return [self.job_store, self.pod_store]

    # ---- handlers ----------------------------------------------------------------------------------
    async def _on_job(self, typ: str, job: Obj, old: Obj | None) -> None:
        key = key_of(job)
        if typ == "DELETED":
            self.expectations.delete(key)
            self.finalizer_expectations.delete(key)
            for pod in self.pod_store.list(namespace_of(job)):
                ref = controller_ref(pod)
                if ref and ref.get("uid") == uid_of(job) and has_tracking_finalizer(pod):
                    self.queue.add(ORPHAN_PREFIX + key_of(pod))
        self.queue.add(key)

    def _resolve(self, namespace: str, ref: dict[str, Any] | None) -> Obj | None:
        if ref is None or ref.get("kind") != KIND:
            return None
        job = self.job_store.get(namespace, ref.get("name", ""))
        return job if job is not None and uid_of(job) == ref.get("uid") else None

    def _matching(self, pod: Obj) -> list[Obj]:
        out = []
        for job in self.job_store.list(namespace_of(pod)):
            try:
                sel = selector_from_spec(with_defaults(deepcopy(job))["spec"]["selector"])
            except SelectorError:
                continue
            if sel and matches(sel, labels_of(pod)):
                out.append(job)
        return out

    def _batched(self, job: Obj) -> None:
        self.queue.add_after(key_of(job), SYNC_BATCH_PERIOD)

    def _pod_deleted(self, pod: Obj, final: bool) -> None:
        ref = controller_ref(pod)
        job = self._resolve(namespace_of(pod), ref)
        if ref is None or job is None:
            if has_tracking_finalizer(pod):
                self.queue.add(ORPHAN_PREFIX + key_of(pod))
            return
        key = key_of(job)
        self.expectations.deletion_observed(key, key_of(pod))
        if final and has_tracking_finalizer(pod):
            self.finalizer_expectations.observed(key, uid_of(pod))
        self._batched(job)

    async def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        if typ == "DELETED":
            self._pod_deleted(pod, True)
            return
        if typ == "ADDED" or old is None:
            if is_deleting(pod):
                self._pod_deleted(pod, False)
                return
            ref = controller_ref(pod)
            if ref is not None:
                job = self._resolve(namespace_of(pod), ref)
                if job is not None:
                    self.expectations.creation_observed(key_of(job))
                    self._batched(job)
                elif has_tracking_finalizer(pod):
                    self.queue.add(ORPHAN_PREFIX + key_of(pod))
                return
            if has_tracking_finalizer(pod):
                self.queue.add(ORPHAN_PREFIX + key_of(pod))
            for job in self._matching(pod):
                self._batched(job)
            return
        if meta(pod).get("resourceVersion") == meta(old).get("resourceVersion"):
            return
        if is_deleting(pod):
            self._pod_deleted(pod, False)
            return
        removed = not has_tracking_finalizer(pod)
        cur_ref, old_ref = controller_ref(pod), controller_ref(old)
        if cur_ref != old_ref and old_ref is not None and (job := self._resolve(namespace_of(old), old_ref)):
            if removed:
                self.finalizer_expectations.observed(key_of(job), uid_of(pod))
            self._batched(job)
        if cur_ref is not None:
            job = self._resolve(namespace_of(pod), cur_ref)
            if job is None:
                if has_tracking_finalizer(pod):
                    self.queue.add(ORPHAN_PREFIX + key_of(pod))
                return
            if removed:
                self.finalizer_expectations.observed(key_of(job), uid_of(pod))
            self._batched(job)
            return
        if has_tracking_finalizer(pod):
            self.queue.add(ORPHAN_PREFIX + key_of(pod))
        if labels_of(pod) != labels_of(old) or cur_ref != old_ref:
            for job in self._matching(pod):
                self._batched(job)

    # ---- orphans -------------------------------------------------------------------------------------
    async def _sync_orphan(self, pod_key: str) -> None:
        ns, name = split_key(pod_key)
        pod = self.pod_store.get(ns, name)
        if pod is None or not has_tracking_finalizer(pod):
            return
        ref = controller_ref(pod)
        if ref is not None:
            if ref.get("kind") != KIND or ref.get("apiVersion") != API_VERSION:
                return
            job = self._resolve(ns, ref)
            if job is not None and not is_job_finished(job):
                return  # adopted meanwhile
        await self._remove_finalizer(pod)

    async def _remove_finalizer(self, pod: Obj) -> None:
        fins = finalizers_of(pod)
        if TRACKING_FINALIZER not in fins:
            return
        ops = [{"op": "test", "path": "/metadata/uid", "value": uid_of(pod)},
               {"op": "test", "path": "/metadata/finalizers", "value": fins},
               {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in fins if f != TRACKING_FINALIZER]}]
        try:
            await self.kube.patch(pod_path(namespace_of(pod), name_of(pod)), ops, "json")
        except ApiError as e:
            if e.code != 404:
                raise

    # ---- sync ----------------------------------------------------------------------------------------
    async def sync(self, key: str) -> float | None:
        if key.startswith(ORPHAN_PREFIX):
            await self._sync_orphan(key[len(ORPHAN_PREFIX):])
            return None
        ns, name = split_key(key)
        shared = self.job_store.get(ns, name)
        if shared is None:
            self.expectations.delete(key)
            self.finalizer_expectations.delete(key)
            self.backoffs.pop(key, None)
            return None
        managed_by = (shared.get("spec") or {}).get("managedBy")
        if managed_by and managed_by != "kubernetes.io/job-controller":
            return None
        job = with_defaults(deepcopy(shared))
        if is_job_finished(job):
            self.backoffs.pop(key, None)
            return None
        if job["spec"].get("completionMode") != "NonIndexed":
            self.recorder.event(shared, API_VERSION, KIND, "Warning", "UnknownCompletionMode",
                                "Skipped Job sync because completion mode is unknown (minimesh runs NonIndexed jobs)")
            return None
        status = job.setdefault("status", {})
        status.setdefault("uncountedTerminatedPods", {})
        now = self.now()
        satisfied = self.expectations.satisfied(key)
        pods = await self._pods_for_job(job)
        active_pods = filter_active_pods(pods)
        uncounted = status["uncountedTerminatedPods"]
        c = _Ctx(job=job, pods=pods, active_pods=active_pods, ready=sum(1 for p in active_pods if is_pod_ready(p)),
                 terminating=count_terminating(pods), uncounted_succeeded=set(uncounted.get("succeeded") or []),
                 uncounted_failed=set(uncounted.get("failed") or []),
                 expected_rm=self.finalizer_expectations.expected(key))
        active = len(active_pods)
        new_succeeded, new_failed = self._new_finished(c)
        c.succeeded = int(status.get("succeeded") or 0) + len(new_succeeded) + len(c.uncounted_succeeded)
        c.failed = int(status.get("failed") or 0) + len(new_failed) + len(c.uncounted_failed)
        if not status.get("startTime") and not job["spec"].get("suspend"):
            status["startTime"] = fmt_time(now)
        c.new_backoff = next_backoff(self.backoffs.get(key, Backoff()), new_succeeded, new_failed)

        requeue: float | None = None
        manage_error: Exception | None = None
        exceeds_backoff = c.failed > int(job["spec"]["backoffLimit"])
        target = get_condition(status, "SuccessCriteriaMet")
        c.finished = target if target is not None and target.get("status") == "True" else None
        if c.finished is None:
            ft = get_condition(status, "FailureTarget")
            if ft is not None and ft.get("status") == "True":
                c.finished = new_condition("Failed", "True", ft.get("reason", ""), ft.get("message", ""), now)
        if c.finished is None:
            if exceeds_backoff or past_backoff_limit_on_failure(job, pods):
                c.finished = new_condition("FailureTarget", "True", REASON_BACKOFF_LIMIT,
                                           "Job has reached the specified backoff limit", now)
            elif past_active_deadline(job, now):
                c.finished = new_condition("FailureTarget", "True", REASON_DEADLINE,
                                           "Job was active longer than specified deadline", now)
            elif job["spec"].get("activeDeadlineSeconds") is not None and not job["spec"].get("suspend"):
                start = parse_time(status.get("startTime"))
                if start is not None:
                    requeue = int(job["spec"]["activeDeadlineSeconds"]) - (now - start).total_seconds()

        suspend_changed = False
        if c.finished is not None:
            deleted_ready, deleted, manage_error = await self._delete_active(shared, c.active_pods)
            if deleted != active or not satisfied:
                c.finished = None  # finalizers or uncached pods may remain
            active -= deleted
            c.terminating += deleted
            c.ready -= deleted_ready
        else:
            manage_called = False
            if satisfied and not is_deleting(job):
                active, manage_error, wait = await self._manage(shared, job, c, now)
                manage_called = True
                if wait is not None:
                    requeue = wait if requeue is None else min(requeue, wait)
            completions = job["spec"].get("completions")
            complete = (c.succeeded > 0 and active == 0) if completions is None \
                else (c.succeeded >= int(completions) and active == 0)
            if complete:
                c.finished = new_condition("SuccessCriteriaMet", "True", REASON_COMPLETIONS,
                                           "Reached expected number of succeeded pods", now)
            elif manage_called:
                conds = status.get("conditions") or []
                if job["spec"].get("suspend"):
                    conds, changed = ensure_condition(conds, "Suspended", "True", "JobSuspended", "Job suspended", now)
                    if changed:
                        suspend_changed = True
                        self.recorder.event(shared, API_VERSION, KIND, "Normal", "Suspended", "Job suspended")
                else:
                    conds, changed = ensure_condition(conds, "Suspended", "False", "JobResumed", "Job resumed", now)
                    if changed:
                        suspend_changed = True
                        self.recorder.event(shared, API_VERSION, KIND, "Normal", "Resumed", "Job resumed")
                        status["startTime"] = fmt_time(now)  # activeDeadlineSeconds counts from resumption
                if conds:
                    status["conditions"] = conds

        needs_update = (suspend_changed or active != int((shared.get("status") or {}).get("active") or 0)
                        or (shared.get("status") or {}).get("ready") != c.ready
                        or (shared.get("status") or {}).get("terminating") != c.terminating)
        status["active"] = active
        status["ready"] = c.ready
        status["terminating"] = c.terminating
        await self._track_status(shared, key, c, needs_update, now)
        if manage_error is not None:
            raise manage_error
        return requeue

    def _new_finished(self, c: _Ctx) -> tuple[list[Obj], list[Obj]]:
        succ, fail = [], []
        for p in c.pods:
            uid = uid_of(p)
            if not has_tracking_finalizer(p) or uid in c.expected_rm:
                continue
            if pod_phase(p) == "Succeeded" and uid not in c.uncounted_succeeded:
                succ.append(p)
            elif is_pod_failed(p, c.job) and uid not in c.uncounted_failed:
                fail.append(p)
        return succ, fail

    async def _pods_for_job(self, job: Obj) -> list[Obj]:
        """getPodsForJob: claim matching pods; adoption adds the tracking finalizer too."""
        selector = selector_from_spec(job["spec"]["selector"])
        ns = namespace_of(job)
        claimed, releases, orphans = claim(job, self.pod_store.list(ns),
                                           lambda p: bool(selector) and matches(selector, labels_of(p)),
                                           lambda p: pod_path(namespace_of(p), name_of(p)))
        for r in releases:
            try:
                await self.kube.patch(r.path, r.body, "json")
            except ApiError as e:
                if e.code != 404:
                    raise
        if orphans:
            fresh = await self.kube.get_or_none(job_path(ns, name_of(job)))
            if fresh is not None and uid_of(fresh) == uid_of(job) and not is_deleting(fresh):
                ref = new_controller_ref(job, API_VERSION, KIND)
                for pod in orphans:
                    ops = adopt_patch(pod, ref)
                    finalizers = finalizers_of(pod)
                    if TRACKING_FINALIZER not in finalizers:
                        finalizers.append(TRACKING_FINALIZER)
                        ops.append({"op": "add", "path": "/metadata/finalizers", "value": finalizers})
                    try:
                        await self.kube.patch(pod_path(ns, name_of(pod)), ops, "json")
                    except ApiError as e:
                        if e.code != 404:
                            raise
                        continue
                    adopted = deepcopy(pod)
                    adopted["metadata"]["ownerReferences"] = [*owner_refs(pod), ref]
                    adopted["metadata"]["finalizers"] = finalizers
                    claimed.append(adopted)
        return claimed

    async def _delete_active(self, job: Obj, pods: list[Obj]) -> tuple[int, int, Exception | None]:
        """deleteActivePods: DELETE keeps the finalizers; tracking removes them afterwards."""
        async def one(pod: Obj) -> Exception | None:
            try:
                await self.kube.delete(pod_path(namespace_of(pod), name_of(pod)))
            except ApiError as e:
                return None if e.code == 404 else e
            self.recorder.event(job, API_VERSION, KIND, "Normal", "SuccessfulDelete", f"Deleted pod: {name_of(pod)}")
            return None

        results = await asyncio.gather(*(one(p) for p in pods))
        errors = [e for e in results if e is not None]
        ready = sum(1 for p, e in zip(pods, results, strict=True) if e is None and is_pod_ready(p))
        return ready, len(pods) - len(errors), errors[0] if errors else None

    async def _delete_job_pods(self, job: Obj, key: str, pods: list[Obj]) -> tuple[int, int, Exception | None]:
        """deleteJobPods: remove the finalizer first (the pod is not counted), then delete."""
        async def one(pod: Obj) -> Exception | None:
            try:
                await self._remove_finalizer(pod)
                await self.kube.delete(pod_path(namespace_of(pod), name_of(pod)))
            except ApiError as e:
                self.expectations.deletion_observed(key, key_of(pod))
                return None if e.code == 404 else e
            self.recorder.event(job, API_VERSION, KIND, "Normal", "SuccessfulDelete", f"Deleted pod: {name_of(pod)}")
            return None

        results = await asyncio.gather(*(one(p) for p in pods))
        errors = [e for e in results if e is not None]
        ready = sum(1 for p, e in zip(pods, results, strict=True) if e is None and is_pod_ready(p))
        return ready, len(pods) - len(errors), errors[0] if errors else None

    async def _manage(self, shared: Obj, job: Obj, c: _Ctx, now: datetime) -> tuple[int, Exception | None, float | None]:
        """manageJob: returns (active, error, seconds until the back-off allows creating pods)."""
        key = key_of(job)
        active = len(c.active_pods)
        if job["spec"].get("suspend"):
            victims = sort_active_pods(c.active_pods)
            self.expectations.expect_deletions(key, [key_of(p) for p in victims])
            ready, removed, err = await self._delete_job_pods(shared, key, victims)
            c.terminating += removed
            c.ready -= ready
            return active - removed, err, None
        want = want_active(job, active, c.succeeded)
        rm = max(active - want, 0)
        if rm > 0:
            victims = sort_active_pods(c.active_pods)[:min(rm, MAX_POD_CREATE_DELETE_PER_SYNC)]
            self.expectations.expect_deletions(key, [key_of(p) for p in victims])
            ready, removed, err = await self._delete_job_pods(shared, key, victims)
            c.terminating += removed
            c.ready -= ready
            return active - removed, err, None
        terminating = c.terminating if only_replace_failed_pods(job) else 0
        diff = want - terminating - active
        if diff <= 0:
            return active, None, None
        opts = self.ctx.options
        remaining = backoff_remaining(c.new_backoff, now, opts.job_backoff_base, opts.job_backoff_max)
        if remaining > 0:
            return 0, None, remaining
        diff = min(diff, MAX_POD_CREATE_DELETE_PER_SYNC)
        self.expectations.expect_creations(key, diff)
        template = deepcopy(job["spec"].get("template") or {})
        tmeta = template.setdefault("metadata", {})
        if CONTROLLER_UID_LABEL in (job["spec"]["selector"].get("matchLabels") or {}):
            # The API server labels the template when it generates the selector; do it if it did not.
            tmeta["labels"] = {CONTROLLER_UID_LABEL: uid_of(job), JOB_NAME_LABEL: name_of(job),
                               "controller-uid": uid_of(job), "job-name": name_of(job), **(tmeta.get("labels") or {})}
        body = pod_from_template(template, name_of(job), new_controller_ref(job, API_VERSION, KIND),
                                 extra_finalizers=[TRACKING_FINALIZER])
        active += diff
        error: Exception | None = None
        batch = min(diff, 1)
        while diff > 0:
            results = await asyncio.gather(*(self._create_pod(shared, key, body) for _ in range(batch)))
            failures = [r for r in results if r is not None]
            active -= len(failures)
            diff -= batch
            if failures:
                error = failures[0]
                for _ in range(diff):
                    self.expectations.creation_observed(key)
                active -= diff
                break
            batch = min(2 * batch, diff)
        return active, error, None

    async def _create_pod(self, job: Obj, key: str, body: Obj) -> Exception | None:
        try:
            pod = await self.kube.create(pod_path(namespace_of(job)), body)
        except ApiError as e:
            self.expectations.creation_observed(key)
            msg = str(e.status.get("message") or e)
            if "because it is being terminated" in msg:
                return None
            self.recorder.event(job, API_VERSION, KIND, "Warning", "FailedCreate", f"Error creating: {msg}")
            return e
        self.recorder.event(job, API_VERSION, KIND, "Normal", "SuccessfulCreate", f"Created pod: {name_of(pod)}")
        return None

    # ---- status tracking -------------------------------------------------------------------------------
    async def _track_status(self, shared: Obj, key: str, c: _Ctx, needs_flush: bool, now: datetime) -> None:
        """trackJobStatusAndRemoveFinalizers."""
        job = c.job
        status = job["status"]
        uncounted = status["uncountedTerminatedPods"]
        uncounted.setdefault("succeeded", [])
        uncounted.setdefault("failed", [])
        with_finalizer = {uid_of(p) for p in c.pods if has_tracking_finalizer(p) and uid_of(p) not in c.expected_rm}
        if _clean_uncounted(status, with_finalizer):
            needs_flush = True
        to_remove: list[Obj] = []
        reached_max = False
        for pod in c.pods:
            uid = uid_of(pod)
            if not has_tracking_finalizer(pod) or uid in c.expected_rm:
                continue
            failed = is_pod_failed(pod, job)
            if not (is_deleting(job) or c.finished is not None or pod_phase(pod) == "Succeeded" or failed):
                continue
            to_remove.append(pod)
            if pod_phase(pod) == "Succeeded" and uid not in c.uncounted_failed:
                if uid not in c.uncounted_succeeded and uid not in uncounted["succeeded"]:
                    uncounted["succeeded"].append(uid)
                    needs_flush = True
            elif (failed or (c.finished is not None and c.finished.get("type") != "SuccessCriteriaMet")) \
                    and uid not in c.uncounted_failed and uid not in uncounted["failed"]:
                # once the job is finished, every pod not terminated counts as failed
                uncounted["failed"].append(uid)
                needs_flush = True
            if len(uncounted["succeeded"]) + len(uncounted["failed"]) >= MAX_UNCOUNTED_PODS:
                reached_max = True
                break
        if c.finished is not None and c.finished.get("type") == "FailureTarget":
            status["conditions"] = [*(status.get("conditions") or []), c.finished]
            needs_flush = True
            c.finished = new_condition("Failed", "True", c.finished["reason"], c.finished["message"], now)
        if c.finished is not None and c.finished.get("type") == "SuccessCriteriaMet":
            if get_condition(status, "SuccessCriteriaMet") is None:
                status["conditions"] = [*(status.get("conditions") or []), c.finished]
                needs_flush = True
            c.finished = new_condition("Complete", "True", c.finished.get("reason", ""),
                                       c.finished.get("message", ""), now)

        # 1. record the uncounted pods, 2. remove their finalizers, 3. move them to the counters
        if needs_flush:
            job = await self._update_status(shared, job)
            self.backoffs[key] = c.new_backoff
            needs_flush = False
        rm_error: Exception | None = None
        if to_remove:
            self.finalizer_expectations.expect_removed(key, [uid_of(p) for p in to_remove])
            results = await asyncio.gather(*(self._remove_finalizer(p) for p in to_remove), return_exceptions=True)
            for pod, r in zip(to_remove, results, strict=True):
                if isinstance(r, BaseException):
                    self.finalizer_expectations.observed(key, uid_of(pod))
                    rm_error = rm_error or (r if isinstance(r, Exception) else RuntimeError(str(r)))
                else:
                    with_finalizer.discard(uid_of(pod))
        status = job["status"]
        status.setdefault("uncountedTerminatedPods", {})
        if _clean_uncounted(status, with_finalizer):
            needs_flush = True
        if rm_error is not None:
            if needs_flush:
                await self._update_status(shared, job)
            raise rm_error
        finished = not reached_max and self._enact_finished(job, c, now)
        if finished:
            needs_flush = True
        if needs_flush:
            await self._update_status(shared, job)
            if finished:
                self._record_finished(shared, job, c.finished)

    def _enact_finished(self, job: Obj, c: _Ctx, now: datetime) -> bool:
        if c.finished is None:
            return False
        status = job["status"]
        uncounted = status.get("uncountedTerminatedPods") or {}
        if uncounted.get("succeeded") or uncounted.get("failed"):
            return False
        if c.terminating > 0:
            return False
        cond = c.finished
        conds, _ = ensure_condition(list(status.get("conditions") or []), cond["type"], cond["status"],
                                    cond.get("reason", ""), cond.get("message", ""), now)
        status["conditions"] = conds
        if cond["type"] == "Complete":
            status["completionTime"] = cond["lastTransitionTime"]
        return True

    def _record_finished(self, shared: Obj, job: Obj, cond: dict[str, Any] | None) -> None:
        if cond is None:
            return
        if cond["type"] == "Complete":
            completions = job["spec"].get("completions")
            if completions is not None and int(job["status"].get("succeeded") or 0) > int(completions):
                self.recorder.event(shared, API_VERSION, KIND, "Warning", "TooManySucceededPods",
                                    "Too many succeeded pods running after completion count reached")
            self.recorder.event(shared, API_VERSION, KIND, "Normal", "Completed", "Job completed")
        else:
            self.recorder.event(shared, API_VERSION, KIND, "Warning", cond.get("reason", ""), cond.get("message", ""))

    async def _update_status(self, shared: Obj, job: Obj) -> Obj:
        body = {k: v for k, v in shared.items() if k != "status"}
        body["metadata"] = {**meta(shared), "resourceVersion": meta(job).get("resourceVersion")
                            or meta(shared).get("resourceVersion")}
        body["status"] = wire_status(job["status"])
        updated = await self.kube.replace(job_path(namespace_of(shared), name_of(shared), "status"), body)
        out = deepcopy(job)
        out["metadata"]["resourceVersion"] = meta(updated).get("resourceVersion")
        return out


def _clean_uncounted(status: dict[str, Any], with_finalizer: set[str]) -> bool:
    """Move uncounted pods whose finalizer is gone into the counters."""
    uncounted = status.setdefault("uncountedTerminatedPods", {})
    changed = False
    for field_name, counter in (("succeeded", "succeeded"), ("failed", "failed")):
        uids = list(uncounted.get(field_name) or [])
        keep = [u for u in uids if u in with_finalizer]
        if len(keep) != len(uids):
            changed = True
            status[counter] = int(status.get(counter) or 0) + len(uids) - len(keep)
            uncounted[field_name] = keep
    return changed
