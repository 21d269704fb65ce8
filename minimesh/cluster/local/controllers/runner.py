"""The loop every controller shares: wait for its caches, then workers take keys off its queue and sync
them. A sync returns when to look again (or None); an error requeues the key with per-key back-off."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from minimesh.cluster.local.controllers.events import EventRecorder
from minimesh.cluster.local.controllers.informers import Informers, Store
from minimesh.cluster.local.controllers.objects import utcnow
from minimesh.cluster.local.controllers.workqueue import ShutDown, WorkQueue
from minimesh.k8s.aclient import ApiError, AsyncKube

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


@dataclass
class Options:
    """Knobs of the controller manager; the defaults are the real ones."""

    job_backoff_base: float = 10.0  # seconds; pod failure back-off 10s·2^n ...
    job_backoff_max: float = 360.0  # ... capped at six minutes
    workers: int = 5  # per controller, like kube-controller-manager's --concurrent-*-syncs
    cache_sync_timeout: float | None = None
    resync_period: float = 300.0  # seconds; 0 disables


@dataclass
class Context:
    kube: AsyncKube
    informers: Informers
    options: Options = field(default_factory=Options)
    clock: Callable[[], datetime] = utcnow

    def recorder(self, component: str) -> EventRecorder:
        return EventRecorder(self.kube, component, clock=self.clock)


class Controller:
    name = "controller"

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.kube = ctx.kube
        self.queue = WorkQueue(self.name)
        self.workers = ctx.options.workers
        self.clock = ctx.clock  # per controller, so a test can move one controller's time

    # subclasses ---------------------------------------------------------------------------------------
    def stores(self) -> list[Store]:
        """The caches that must be synced before the first sync."""
        return []

    async def sync(self, key: str) -> float | None:
        raise NotImplementedError

    async def started(self) -> None:
        """Called once caches are synced, before workers run (e.g. enqueue everything)."""

    def resync_keys(self) -> Iterable[str]:
        """Keys to look at again every `resync_period` (the informers' periodic resync): a safety net
        for anything an event-driven controller could have missed. Nothing is written when converged."""
        return ()

    # loop ---------------------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock()

    async def wait_caches(self) -> None:
        await self.ctx.informers.wait_synced(*self.stores(), timeout=self.ctx.options.cache_sync_timeout)

    async def run(self, stop: asyncio.Event) -> None:
        await self.wait_caches()
        await self.started()
        workers = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}") for i in range(self.workers)]
        workers.append(asyncio.create_task(self._resync(), name=f"{self.name}-resync"))
        try:
            await stop.wait()
        finally:
            self.queue.shutdown()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _resync(self) -> None:
        period = self.ctx.options.resync_period
        while period > 0:
            await asyncio.sleep(period)
            for key in self.resync_keys():
                self.queue.add(key)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> None:
        try:
            after = await self.sync(key)
        except asyncio.CancelledError:
            raise
        except ApiError as e:
            delay = self.queue.add_rate_limited(key)
            level = logging.DEBUG if e.code in (404, 409) else logging.WARNING
            log.log(level, "%s: sync %s failed: %s (retry in %.2fs)", self.name, key, e, delay)
            return
        except Exception:
            delay = self.queue.add_rate_limited(key)
            log.exception("%s: sync %s failed (retry in %.2fs)", self.name, key, delay)
            return
        self.queue.forget(key)
        if after is not None:
            self.queue.add_after(key, max(after, 0.0))
