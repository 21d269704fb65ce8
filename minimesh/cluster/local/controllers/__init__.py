"""The local cluster's controller manager: the controllers of kube-controller-manager that a lab needs,
as asyncio tasks talking to the API server over HTTP like any client.

Deployment → ReplicaSet → Pod, Job, CronJob, Endpoints, EndpointSlice, Namespace (+ the `default`
ServiceAccount and `kube-root-ca.crt`), the garbage collector and TTL-after-finished. They share one
set of informers (one watch per resource).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from minimesh.cluster.local.controllers.cronjob import CronJobController
from minimesh.cluster.local.controllers.deployment import DeploymentController
from minimesh.cluster.local.controllers.discovery import Discovery
from minimesh.cluster.local.controllers.endpoints import EndpointsController, EndpointSliceController
from minimesh.cluster.local.controllers.garbagecollector import GarbageCollector
from minimesh.cluster.local.controllers.informers import Informers
from minimesh.cluster.local.controllers.job import JobController
from minimesh.cluster.local.controllers.namespace import NamespaceController
from minimesh.cluster.local.controllers.replicaset import ReplicaSetController
from minimesh.cluster.local.controllers.runner import Context, Controller, Options
from minimesh.cluster.local.controllers.ttl import TTLAfterFinishedController

if TYPE_CHECKING:
    from minimesh.cluster.local.layout import ClusterLayout
    from minimesh.k8s.aclient import AsyncKube

log = logging.getLogger(__name__)

__all__ = ["ControllerManager", "Options", "run_controllers"]


class ControllerManager:
    """Builds every controller on shared informers; `run(stop)` runs them until `stop` is set."""

    def __init__(self, kube: AsyncKube, ca_pem: str, options: Options | None = None):
        self.informers = Informers(kube)
        self.ctx = Context(kube, self.informers, options or Options())
        self.discovery = Discovery(kube)
        self.gc = GarbageCollector(self.ctx, self.discovery)
        self.controllers: list[Controller] = [
            ReplicaSetController(self.ctx),
            DeploymentController(self.ctx),
            JobController(self.ctx),
            CronJobController(self.ctx),
            EndpointsController(self.ctx),
            EndpointSliceController(self.ctx),
            NamespaceController(self.ctx, self.discovery, ca_pem),
            TTLAfterFinishedController(self.ctx),
            self.gc,
        ]

    def controller(self, name: str) -> Controller:
        return next(c for c in self.controllers if c.name == name)

    async def run(self, stop: asyncio.Event) -> None:
        inner = asyncio.Event()  # ours to set on the way out; `stop` belongs to the caller
        await self.gc.prepare()
        self.informers.start()
        tasks = {asyncio.create_task(c.run(inner), name=c.name) for c in self.controllers}
        stopper = asyncio.create_task(stop.wait())
        try:
            pending = {*tasks, stopper}
            while not stop.is_set():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is not stopper and not t.cancelled() and t.exception() is not None:
                        log.error("controller %s stopped", t.get_name(), exc_info=t.exception())
                if pending == {stopper} or not pending:
                    break
        finally:
            inner.set()
            stopper.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.informers.stop()


async def run_controllers(kube: AsyncKube, layout: ClusterLayout, stop: asyncio.Event,
                          options: Options | None = None) -> None:
    """Entry point for the control-plane process: run every controller until `stop` is set."""
    ca_pem = Path(layout.pki_dir / "ca.crt").read_text()
    await ControllerManager(kube, ca_pem, options).run(stop)
