"""The CronJob controller (pkg/controller/cronjob, the v2 controller): Jobs on a cron schedule.

Scheduling math is pure (`Schedule`, `most_recent_schedule_time`, `next_schedule_time`,
`requeue_after`); `CronJobController.sync` follows the Go `syncCronJob` + history cleanup. Job names are
`<cronjob>-<scheduled time in minutes since the epoch>`, so a restart never starts the same run twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError

from minimesh.cluster.local.controllers.objects import (
    Obj,
    controller_ref,
    creation_time,
    deepcopy,
    fmt_time,
    is_deleting,
    key_of,
    meta,
    name_of,
    namespace_of,
    new_controller_ref,
    parse_time,
    split_key,
    uid_of,
)
from minimesh.cluster.local.controllers.runner import Context, Controller
from minimesh.k8s.aclient import ApiError, resource_path

log = logging.getLogger(__name__)

API_VERSION = "batch/v1"
KIND = "CronJob"
SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEXT_SCHEDULE_DELTA = 0.1  # seconds added to a requeue, as the real controller's nextScheduleDelta
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_EVERY = re.compile(r"^@every\s+(.+)$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScheduleError(ValueError):
    pass


def cronjob_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    return resource_path(API_VERSION, "cronjobs", namespace, name, sub)


def job_path(namespace: str, name: str | None = None) -> str:
    return resource_path(API_VERSION, "jobs", namespace, name)


def _go_duration(text: str) -> float:
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m:
            raise ScheduleError(f"failed to parse duration @every {text}: time: invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ScheduleError("failed to parse duration @every: time: invalid duration \"\"")
    return total


@dataclass(frozen=True)
class Schedule:
    """A parsed standard cron schedule (5 fields or a descriptor) evaluated in a time zone."""

    expr: str
    tz: ZoneInfo | None = None
    every: float | None = None  # @every <duration>

    def next(self, t: datetime) -> datetime | None:
        """The first activation strictly after t (None if it never fires, e.g. `0 0 31 2 *`)."""
        if self.every is not None:
            delay = max(1.0, float(int(self.every)))  # whole seconds, at least one
            return t.replace(microsecond=0) + timedelta(seconds=delay)
        local = t.astimezone(self.tz or UTC)
        try:
            nxt = croniter(self.expr, local).get_next(datetime)
        except CroniterBadDateError:
            return None
        return nxt.astimezone(UTC)


def parse_schedule(schedule: str, time_zone: str | None) -> Schedule:
    """cron.ParseStandard with the CronJob's timeZone (UTC when unset, like a controller manager in UTC)."""
    text = schedule.strip()
    tz: ZoneInfo | None = None
    for prefix in ("TZ=", "CRON_TZ="):
        if text.startswith(prefix):
            zone, _, text = text[len(prefix):].partition(" ")
            try:
                tz = ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError) as e:
                raise ScheduleError(f"provided bad location {zone}: {e}") from None
            text = text.strip()
    if time_zone:
        tz = ZoneInfo(time_zone)
    if m := _EVERY.match(text):
        return Schedule(text, tz, _go_duration(m.group(1)))
    expr = _DESCRIPTORS.get(text, text)
    if expr.startswith("@"):
        raise ScheduleError(f"unrecognized descriptor: {text}")
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: {text}")
    if not croniter.is_valid(expr):
        raise ScheduleError(f"invalid cron expression: {text}")
    return Schedule(expr, tz)


def most_recent_schedule_time(cj: Obj, now: datetime, sched: Schedule, include_deadline: bool
                              ) -> tuple[datetime, datetime | None, str, str | None]:
    """(earliest time considered, most recent unmet schedule or None, "none"/"few"/"many" missed, error)."""
    status, spec = cj.get("status") or {}, cj.get("spec") or {}
    earliest = parse_time(status.get("lastScheduleTime")) or creation_time(cj) or now
    if include_deadline and spec.get("startingDeadlineSeconds") is not None:
        deadline = now - timedelta(seconds=int(spec["startingDeadlineSeconds"]))
        if deadline > earliest:
            earliest = deadline
    t1 = sched.next(earliest)
    t2 = sched.next(t1) if t1 is not None else None
    if t1 is not None and now < t1:
        return earliest, None, "none", None
    if t2 is not None and t1 is not None and now < t2:
        return earliest, t1, "none", None
    if t1 is None or t2 is None or round((t2 - t1).total_seconds()) < 1:
        return earliest, None, "none", "time difference between two schedules is less than 1 second"
    between = round((t2 - t1).total_seconds())
    missed = int((now - t1).total_seconds()) // between + 1
    potential = t1 + timedelta(seconds=(missed - 2) * between)
    recent: datetime | None = None
    t = sched.next(potential)
    while t is not None and t <= now:
        recent = t
        t = sched.next(t)
    kind = "many" if missed > 100 else "few" if missed > 0 else "none"
    return earliest, recent, kind, None


def next_schedule_time(cj: Obj, now: datetime, sched: Schedule) -> tuple[datetime | None, str, str | None]:
    _, recent, missed, err = most_recent_schedule_time(cj, now, sched, True)
    if recent is None or recent > now:
        return None, missed, err
    return recent, missed, err


def requeue_after(cj: Obj, now: datetime, sched: Schedule) -> float:
    """nextScheduleTimeDuration: seconds until the next activation after the most recent one."""
    earliest, recent, _, err = most_recent_schedule_time(cj, now, sched, False)
    base = now if err is not None else (recent or earliest)
    nxt = sched.next(base)
    if nxt is None:
        return 24 * 3600.0
    return (nxt - now).total_seconds() + NEXT_SCHEDULE_DELTA


def job_name(cj: Obj, scheduled: datetime) -> str:
    return f"{name_of(cj)}-{int(scheduled.timestamp()) // 60}"


def job_from_template(cj: Obj, scheduled: datetime) -> Obj:
    """getJobFromTemplate2."""
    template = (cj.get("spec") or {}).get("jobTemplate") or {}
    tmeta = template.get("metadata") or {}
    tz_name = (cj.get("spec") or {}).get("timeZone")
    local = scheduled.astimezone(ZoneInfo(tz_name)) if tz_name else scheduled.astimezone(UTC)
    stamp = local.isoformat().replace("+00:00", "Z") if local.utcoffset() == timedelta(0) else local.isoformat()
    annotations = {**(tmeta.get("annotations") or {}), SCHEDULED_TIMESTAMP_ANNOTATION: stamp}
    job_meta: dict[str, Any] = {"name": job_name(cj, scheduled), "namespace": namespace_of(cj),
                                "annotations": annotations,
                                "ownerReferences": [new_controller_ref(cj, API_VERSION, KIND)]}
    if tmeta.get("labels"):
        job_meta["labels"] = dict(tmeta["labels"])
    return {"apiVersion": API_VERSION, "kind": "Job", "metadata": job_meta,
            "spec": deepcopy(template.get("spec") or {})}


def job_finished_type(job: Obj) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


def job_ref(job: Obj) -> dict[str, Any]:
    m = meta(job)
    return {"kind": "Job", "namespace": m.get("namespace"), "name": m.get("name"), "uid": m.get("uid"),
            "apiVersion": API_VERSION, "resourceVersion": m.get("resourceVersion")}


def _by_start_time(job: Obj) -> tuple[int, float, str]:
    start = parse_time((job.get("status") or {}).get("startTime"))
    return (1, 0.0, name_of(job)) if start is None else (0, start.timestamp(), name_of(job))


class CronJobController(Controller):
    name = "cronjob-controller"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.cj_store = ctx.informers.store(API_VERSION, "cronjobs")
        self.job_store = ctx.informers.store(API_VERSION, "jobs")
        self.recorder = ctx.recorder(self.name)
        self.cj_store.add_handler(self._on_cronjob)
        self.job_store.add_handler(self._on_job)

    def resync_keys(self) -> list[str]:
        return [key_of(o) for o in self.cj_store.list()]

    def stores(self) -> list[Any]:
        return [self.cj_store, self.job_store]

    async def _on_cronjob(self, typ: str, obj: Obj, old: Obj | None) -> None:
        if typ != "DELETED":
            self.queue.add(key_of(obj))

    async def _on_job(self, typ: str, job: Obj, old: Obj | None) -> None:
        ref = controller_ref(job)
        if ref is not None and ref.get("kind") == KIND:
            cj = self.cj_store.get(namespace_of(job), ref.get("name", ""))
            if cj is not None and uid_of(cj) == ref.get("uid"):
                self.queue.add(key_of(cj))

    def _event(self, cj: Obj, etype: str, reason: str, message: str) -> None:
        self.recorder.event(cj, API_VERSION, KIND, etype, reason, message)

    def _jobs_of(self, cj: Obj) -> list[Obj]:
        out = []
        for job in self.job_store.list(namespace_of(cj)):
            ref = controller_ref(job)
            if ref is not None and ref.get("kind") == KIND and ref.get("name") == name_of(cj):
                out.append(job)
        return out

    async def sync(self, key: str) -> float | None:
        ns, name = split_key(key)
        cached = self.cj_store.get(ns, name)
        if cached is None:
            return None
        jobs = self._jobs_of(cached)
        cj = deepcopy(cached)
        cj.setdefault("status", {})
        changed = await self._cleanup_finished(cj, jobs)
        requeue, changed_sync, error = await self._sync_cronjob(cj, jobs)
        if changed or changed_sync:
            status = {k: v for k, v in cj["status"].items() if v}
            body = {**{k: v for k, v in cached.items() if k != "status"}, "status": status}
            await self.kube.replace(cronjob_path(ns, name, "status"), body)
        if requeue is not None:
            return requeue
        if error is not None:
            raise error
        return None

    def _remove_active(self, cj: Obj, uid: str) -> None:
        active = [r for r in cj["status"].get("active") or [] if r.get("uid") != uid]
        cj["status"]["active"] = active

    async def _delete_job(self, cj: Obj, job: Obj) -> bool:
        try:
            await self.kube.delete(job_path(namespace_of(job), name_of(job)),
                                   {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
        except ApiError as e:
            if e.code != 404:
                self._event(cj, "Warning", "FailedDelete", f"Deleted job: {e.status.get('message', e)}")
                return False
        self._remove_active(cj, uid_of(job))
        self._event(cj, "Normal", "SuccessfulDelete", f"Deleted job {name_of(job)}")
        return True

    async def _cleanup_finished(self, cj: Obj, jobs: list[Obj]) -> bool:
        spec = cj.get("spec") or {}
        if spec.get("successfulJobsHistoryLimit") is None and spec.get("failedJobsHistoryLimit") is None:
            return False
        done = [j for j in jobs if job_finished_type(j) == "Complete"]
        failed = [j for j in jobs if job_finished_type(j) == "Failed"]
        changed = False
        for group, limit in ((done, spec.get("successfulJobsHistoryLimit")), (failed, spec.get("failedJobsHistoryLimit"))):
            if limit is None or len(group) <= int(limit):
                continue
            for job in sorted(group, key=_by_start_time)[: len(group) - int(limit)]:
                if await self._delete_job(cj, job):
                    changed = True
        return changed

    async def _sync_cronjob(self, cj: Obj, jobs: list[Obj]) -> tuple[float | None, bool, Exception | None]:
        now = self.now()
        status = cj["status"]
        changed = False
        children = {uid_of(j) for j in jobs}
        for job in jobs:
            active_uids = {r.get("uid") for r in status.get("active") or []}
            finished = job_finished_type(job)
            if uid_of(job) not in active_uids and finished is None:
                fresh = await self.kube.get_or_none(cronjob_path(namespace_of(cj), name_of(cj)))
                if fresh is not None and uid_of(job) in {r.get("uid") for r in (fresh.get("status") or {}).get("active") or []}:
                    # our own status update was not in the cache yet
                    status["active"] = (fresh.get("status") or {}).get("active") or []
                    cj["metadata"] = fresh["metadata"]
                    continue
                self._event(cj, "Warning", "UnexpectedJob",
                            f"Saw a job that the controller did not create or forgot: {name_of(job)}")
            elif uid_of(job) in active_uids and finished is not None:
                self._remove_active(cj, uid_of(job))
                self._event(cj, "Normal", "SawCompletedJob", f"Saw completed job: {name_of(job)}, condition: {finished}")
                changed = True
            if finished == "Complete":
                done_at = parse_time((job.get("status") or {}).get("completionTime"))
                last = parse_time(status.get("lastSuccessfulTime"))
                if done_at is not None and (last is None or done_at > last):
                    status["lastSuccessfulTime"] = fmt_time(done_at)
                    changed = True
        for ref in list(status.get("active") or []):
            if ref.get("uid") in children:
                continue
            try:
                await self.kube.get(job_path(ref.get("namespace") or namespace_of(cj), ref.get("name", "")))
            except ApiError as e:
                if e.code != 404:
                    return None, changed, e
                self._event(cj, "Normal", "MissingJob", f"Active job went missing: {ref.get('name')}")
                self._remove_active(cj, ref.get("uid", ""))
                changed = True
        if is_deleting(cj):
            return None, changed, None

        spec = cj.get("spec") or {}
        tz_name = spec.get("timeZone")
        if tz_name:
            try:
                ZoneInfo(tz_name)
            except (ZoneInfoNotFoundError, ValueError) as e:
                self._event(cj, "Warning", "UnknownTimeZone", f"invalid timeZone: {tz_name!r}: {e}")
                return None, changed, None
        if spec.get("suspend"):
            return None, changed, None
        schedule = spec.get("schedule", "")
        try:
            sched = parse_schedule(schedule, tz_name)
        except (ScheduleError, ValueError) as e:
            self._event(cj, "Warning", "UnparseableSchedule", f"unparseable schedule: {schedule!r} : {e}")
            return None, changed, None
        scheduled, missed, err = next_schedule_time(cj, now, sched)
        if err is not None:
            self._event(cj, "Warning", "InvalidSchedule", f"invalid schedule: {schedule} : {err}")
            return None, changed, None
        if missed == "many":
            self._event(cj, "Warning", "TooManyMissedTimes",
                        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew")
        if scheduled is None:
            return requeue_after(cj, now, sched), changed, None
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + timedelta(seconds=int(deadline)) < now:
            self._event(cj, "Warning", "MissSchedule", "Missed scheduled time to start a job: "
                        + scheduled.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"))
            return requeue_after(cj, now, sched), changed, None
        name = job_name(cj, scheduled)
        if any(r.get("name") == name for r in status.get("active") or []) \
                or parse_time(status.get("lastScheduleTime")) == scheduled:
            return requeue_after(cj, now, sched), changed, None
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and status.get("active"):
            self._event(cj, "Normal", "JobAlreadyActive",
                        "Not starting job because prior execution is running and concurrency policy is Forbid")
            return requeue_after(cj, now, sched), changed, None
        if policy == "Replace":
            for ref in list(status.get("active") or []):
                try:
                    job = await self.kube.get(job_path(ref.get("namespace") or namespace_of(cj), ref.get("name", "")))
                except ApiError as e:
                    self._event(cj, "Warning", "FailedGet", f"Get job: {e.status.get('message', e)}")
                    return None, changed, e
                if not await self._delete_job(cj, job):
                    return None, changed, RuntimeError(f"could not replace job {ref.get('namespace')}/{ref.get('name')}")
                changed = True
        body = job_from_template(cj, scheduled)
        try:
            created = await self.kube.create(job_path(namespace_of(cj)), body)
            self._event(cj, "Normal", "SuccessfulCreate", f"Created job {name_of(created)}")
        except ApiError as e:
            if "because it is being terminated" in str(e.status.get("message", "")):
                return None, changed, e
            if e.code != 409:
                self._event(cj, "Warning", "FailedCreate", f"Error creating job: {e.status.get('message', e)}")
                return None, changed, e
            created = await self.kube.get(job_path(namespace_of(cj), name_of(body)))
            ref = controller_ref(created)
            if ref is None or ref.get("uid") != uid_of(cj):
                return None, changed, None  # someone else's job: assume they keep the status
            if uid_of(created) in {r.get("uid") for r in status.get("active") or []}:
                return None, changed, None
        status["active"] = [*(status.get("active") or []), job_ref(created)]
        status["lastScheduleTime"] = fmt_time(scheduled)
        return requeue_after(cj, now, sched), True, None
