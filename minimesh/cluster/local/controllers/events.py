"""Events as client-go's recorder writes them (core/v1), with its correlation: a repeat of the same
event on the same object bumps `count` and `lastTimestamp` instead of creating another one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from minimesh.cluster.local.controllers.objects import fmt_time, meta, utcnow
from minimesh.k8s.aclient import ApiError, AsyncKube, resource_path

log = logging.getLogger(__name__)

_MAX_CACHE = 4096


def involved_object(obj: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    m = meta(obj)
    ref = {"kind": kind, "namespace": m.get("namespace"), "name": m.get("name"), "uid": m.get("uid"),
           "apiVersion": api_version, "resourceVersion": m.get("resourceVersion")}
    return {k: v for k, v in ref.items() if v}


def new_event(
    obj: Mapping[str, Any], api_version: str, kind: str, etype: str, reason: str, message: str,
    component: str, now: datetime, *, instance: str = "", action: str | None = None,
) -> dict[str, Any]:
    """The Event body the real recorder posts (name `<object>.<unix nanos in hex>`)."""
    m = meta(obj)
    ts = fmt_time(now)
    ev: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{m.get('name', 'unknown')}.{time.time_ns():x}",
            "namespace": m.get("namespace") or "default",
        },
        "involvedObject": involved_object(obj, api_version, kind),
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "type": etype,
        "reportingComponent": component,
        "reportingInstance": instance,
    }
    if action:
        ev["action"] = action
    return ev


class EventRecorder:
    def __init__(self, kube: AsyncKube, component: str, *, instance: str = "",
                 clock: Callable[[], datetime] = utcnow):
        self.kube = kube
        self.component = component
        self.instance = instance
        self.clock = clock
        self._seen: OrderedDict[tuple[str, ...], tuple[str, str, int]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one writer: a repeat must see the first write's name

    def event(self, obj: Mapping[str, Any], api_version: str, kind: str, etype: str, reason: str,
              message: str, *, action: str | None = None) -> None:
        """Fire and forget: events never block or fail a sync."""
        task = asyncio.create_task(self._write(obj, api_version, kind, etype, reason, message, action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, obj: Mapping[str, Any], api_version: str, kind: str, etype: str, reason: str,
                     message: str, action: str | None) -> None:
        m = meta(obj)
        key = (m.get("uid", ""), m.get("namespace", ""), m.get("name", ""), etype, reason, message)
        async with self._lock:
            try:
                seen = self._seen.get(key)
                if seen is not None:
                    ns, name, count = seen
                    try:
                        await self.kube.patch(resource_path("v1", "events", ns, name),
                                              {"count": count + 1, "lastTimestamp": fmt_time(self.clock())})
                        self._remember(key, (ns, name, count + 1))
                        return
                    except ApiError as e:
                        if e.code != 404:
                            raise
                body = new_event(obj, api_version, kind, etype, reason, message, self.component, self.clock(),
                                 instance=self.instance, action=action)
                ns = body["metadata"]["namespace"]
                await self.kube.create(resource_path("v1", "events", ns), body)
                self._remember(key, (ns, body["metadata"]["name"], 1))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # events are best effort, as in client-go
                log.debug("event %s %s on %s/%s not written: %s", reason, etype, m.get("namespace"), m.get("name"), e)

    def _remember(self, key: tuple[str, ...], value: tuple[str, str, int]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > _MAX_CACHE:
            self._seen.popitem(last=False)
