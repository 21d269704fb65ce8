"""Kubelet events (core/v1 Event), with the client-go correlator's aggregation of repeats.

The same (object, reason, message) within ten minutes bumps `count` and `lastTimestamp` on the existing
Event instead of creating another, so a crash loop shows `BackOff (x12 over 3m)` in `kubectl describe`.
Posting never blocks the caller: events go through a queue drained by one task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from minimesh.k8s.aclient import ApiError, AsyncKube, resource_path

log = logging.getLogger(__name__)
AGGREGATE_WINDOW = 600.0


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventRecorder:
    def __init__(self, kube: AsyncKube, node_name: str, component: str = "kubelet"):
        self.kube = kube
        self.node_name = node_name
        self.component = component
        self.queue: asyncio.Queue[tuple[dict[str, Any], str, str, str, str]] = asyncio.Queue(maxsize=1000)
        self.seen: dict[tuple[str, ...], tuple[str, int, float]] = {}  # key -> (event name, count, first)

    def emit(self, pod: dict[str, Any], type_: str, reason: str, message: str, container: str | None = None,
             *, init: bool = False) -> None:
        field_path = ""
        if container:
            field_path = f"spec.{'initContainers' if init else 'containers'}{{{container}}}"
        try:
            self.queue.put_nowait((pod, type_, reason, message, field_path))
        except asyncio.QueueFull:
            log.warning("event queue full; dropping %s %s", reason, message)

    async def run(self) -> None:
        while True:
            pod, type_, reason, message, field_path = await self.queue.get()
            try:
                await self._post(pod, type_, reason, message, field_path)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # events are best effort, as in the kubelet
                log.info("event %s for %s not recorded: %s", reason, pod["metadata"].get("name"), e)

    async def _post(self, pod: dict[str, Any], type_: str, reason: str, message: str, field_path: str) -> None:
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        key = (meta.get("uid", ""), field_path, type_, reason, message)
        now = now_rfc3339()
        prev = self.seen.get(key)
        if prev and time.monotonic() - prev[2] < AGGREGATE_WINDOW:
            name, count, first = prev
            try:
                await self.kube.patch(resource_path("v1", "events", ns, name),
                                      {"count": count + 1, "lastTimestamp": now})
                self.seen[key] = (name, count + 1, first)
                return
            except ApiError as e:
                if e.code != 404:
                    raise
        name = f"{meta['name']}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": ns,
                "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", ""),
                **({"fieldPath": field_path} if field_path else {}),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": self.component, "host": self.node_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.node_name,
        }
        await self.kube.create(resource_path("v1", "events", ns), body)
        self.seen[key] = (name, 1, time.monotonic())
        if len(self.seen) > 4096:
            cutoff = time.monotonic() - AGGREGATE_WINDOW
            self.seen = {k: v for k, v in self.seen.items() if v[2] > cutoff}
