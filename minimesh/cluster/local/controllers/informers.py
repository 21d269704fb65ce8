"""Shared informers: one list+watch per resource for the whole controller manager, with a namespace index.

Several controllers watch pods; they share one `Store` (one watch, one cache), as client-go's
SharedInformerFactory does. Handlers only enqueue keys, so they are cheap and run in event order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from minimesh.cluster.local.controllers.objects import Obj, name_of, namespace_of
from minimesh.k8s.aclient import AsyncKube, Handler, Informer, resource_path

log = logging.getLogger(__name__)


class Store:
    """An informer's cache, indexed by namespace, plus the handlers of everyone interested."""

    def __init__(self, kube: AsyncKube, api_version: str, plural: str):
        self.api_version = api_version
        self.plural = plural
        self.informer = Informer(kube, resource_path(api_version, plural), self._index)
        self._by_ns: dict[str, dict[str, Obj]] = {}

    async def _index(self, typ: str, obj: Obj, old: Obj | None) -> None:
        ns, name = namespace_of(obj), name_of(obj)
        if typ == "DELETED":
            bucket = self._by_ns.get(ns)
            if bucket is not None:
                bucket.pop(name, None)
                if not bucket:
                    del self._by_ns[ns]
        else:
            self._by_ns.setdefault(ns, {})[name] = obj

    def add_handler(self, handler: Handler) -> None:
        self.informer.add_handler(handler)

    @property
    def synced(self) -> asyncio.Event:
        return self.informer.synced

    def get(self, namespace: str | None, name: str) -> Obj | None:
        return self._by_ns.get(namespace or "", {}).get(name)

    def list(self, namespace: str | None = None) -> list[Obj]:
        """Objects of one namespace (None: all; "" for cluster-scoped objects)."""
        if namespace is None:
            return [o for bucket in self._by_ns.values() for o in bucket.values()]
        return list(self._by_ns.get(namespace, {}).values())

    def namespaces(self) -> Iterable[str]:
        return list(self._by_ns)

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_ns.values())


class Informers:
    """The factory: `store(api_version, plural)` returns the shared store, started when the hub runs."""

    def __init__(self, kube: AsyncKube):
        self.kube = kube
        self._stores: dict[tuple[str, str], Store] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._running = False

    def store(self, api_version: str, plural: str) -> Store:
        key = (api_version, plural)
        st = self._stores.get(key)
        if st is None:
            st = self._stores[key] = Store(self.kube, api_version, plural)
            if self._running:
                self._start(key, st)
        return st


    def _start(self, key: tuple[str, str], st: Store) -> None:
        self._tasks[key] = asyncio.create_task(st.informer.run(), name=f"informer {key[0]} {key[1]}")

    def start(self) -> None:
        self._running = True
        for key, st in self._stores.items():
            if key not in self._tasks:
                self._start(key, st)

    def forget(self, api_version: str, plural: str) -> None:
        """Stop watching a resource that is no longer served (a deleted CRD)."""
        key = (api_version, plural)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self._stores.pop(key, None)

    async def wait_synced(self, *stores: Store, timeout: float | None = None) -> None:
        waits = [s.synced.wait() for s in (stores or tuple(self._stores.values()))]
        await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
