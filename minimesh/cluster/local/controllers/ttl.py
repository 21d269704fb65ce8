"""TTL after finished (pkg/controller/ttlafterfinished): delete a finished Job `ttlSecondsAfterFinished`
after its Complete/Failed condition, with foreground propagation and a uid precondition, after
re-reading it from the API server (the TTL may have been changed meanwhile)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from minimesh.cluster.local.controllers import actions as act
from minimesh.cluster.local.controllers.objects import Obj, is_deleting, key_of, parse_time, split_key, uid_of
from minimesh.cluster.local.controllers.runner import Context, Controller
from minimesh.k8s.aclient import resource_path


def finish_time(job: Obj) -> datetime | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return parse_time(c.get("lastTransitionTime"))
    return None


def needs_cleanup(job: Obj) -> bool:
    return (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None and finish_time(job) is not None


def time_left(job: Obj, now: datetime) -> float | None:
    """Seconds until the job expires (<= 0: expired), or None if it never does."""
    if not needs_cleanup(job) or is_deleting(job):
        return None
    finished = finish_time(job)
    assert finished is not None
    expire = finished + timedelta(seconds=int(job["spec"]["ttlSecondsAfterFinished"]))
    return (expire - now).total_seconds()


class TTLAfterFinishedController(Controller):
    name = "ttl-after-finished-controller"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.job_store = ctx.informers.store("batch/v1", "jobs")
        self.job_store.add_handler(self._on_job)

    def resync_keys(self) -> list[str]:
        return [key_of(o) for o in self.job_store.list()]

    def stores(self) -> list[Any]:
        return [self.job_store]

    async def _on_job(self, typ: str, job: Obj, old: Obj | None) -> None:
        if typ != "DELETED" and needs_cleanup(job):
            self.queue.add(key_of(job))

    async def sync(self, key: str) -> float | None:
        ns, name = split_key(key)
        job = self.job_store.get(ns, name)
        if job is None:
            return None
        left = time_left(job, self.now())
        if left is None:
            return None
        if left > 0:
            return left
        path = resource_path("batch/v1", "jobs", ns, name)
        fresh = await self.kube.get_or_none(path)
        if fresh is None or uid_of(fresh) != uid_of(job):
            return None
        left = time_left(fresh, self.now())
        if left is None:
            return None
        if left > 0:
            return left
        await act.execute(self.kube, [act.delete(path, uid=uid_of(fresh), propagation="Foreground")])
        return None
