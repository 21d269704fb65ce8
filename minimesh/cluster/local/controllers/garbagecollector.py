"""The garbage collector (pkg/controller/garbagecollector): ownerReferences.

It watches every deletable resource (custom resources too, re-discovered when CRDs change) and keeps a
graph: uid → object, owner uid → dependents. Everything is driven by watch events:

- an owner disappears, or a new object names an owner that does not exist (checked against the API
  server, never just the cache) → its dependents are deleted (background, or as their own finalizers ask);
- an owner is being deleted with `foregroundDeletion` → its dependents are deleted, and once no dependent
  with `blockOwnerDeletion` is left the finalizer is removed (the API server then deletes the owner);
- an owner is being deleted with `orphan` → the ownerReferences to it are removed from its dependents,
  then the finalizer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from minimesh.cluster.local.controllers import actions as act
from minimesh.cluster.local.controllers.discovery import Discovery, Resource
from minimesh.cluster.local.controllers.informers import Store
from minimesh.cluster.local.controllers.objects import (
    Obj,
    finalizers_of,
    is_deleting,
    name_of,
    namespace_of,
    owner_refs,
    uid_of,
)
from minimesh.cluster.local.controllers.runner import Context, Controller
from minimesh.k8s.aclient import ApiError

log = logging.getLogger(__name__)

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
IGNORED = {("", "events"), ("events.k8s.io", "events")}
REDISCOVER_DELAY = 0.5
SYNC_TIMEOUT = 30.0


@dataclass
class Node:
    uid: str
    resource: Resource
    namespace: str
    name: str
    owners: list[dict[str, Any]] = field(default_factory=list)
    deleting: bool = False
    finalizers: list[str] = field(default_factory=list)

    @property
    def deleting_dependents(self) -> bool:
        return self.deleting and FOREGROUND in self.finalizers

    @property
    def orphaning(self) -> bool:
        return self.deleting and ORPHAN in self.finalizers


# ---- pure decisions ------------------------------------------------------------------------------


@dataclass
class OwnerView:
    """What is known about one owner reference of an object."""

    ref: dict[str, Any]
    exists: bool
    deleting_dependents: bool = False


def classify(owners: list[OwnerView]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(solid, dangling, waitingForDependentsDeletion) owner references."""
    solid, dangling, waiting = [], [], []
    for o in owners:
        if not o.exists:
            dangling.append(o.ref)
        elif o.deleting_dependents:
            waiting.append(o.ref)
        else:
            solid.append(o.ref)
    return solid, dangling, waiting


def decide(obj: Obj, owners: list[OwnerView], has_dependents: bool) -> tuple[str, Any]:
    """attemptToDeleteItem: ("keep", None) | ("patch", uids to drop) | ("delete", propagation policy)."""
    solid, dangling, waiting = classify(owners)
    if solid:
        if not dangling and not waiting:
            return "keep", None
        return "patch", [r.get("uid") for r in (*dangling, *waiting)]
    if waiting and has_dependents:
        return "delete", "Foreground"
    fins = finalizers_of(obj)
    if ORPHAN in fins:
        return "delete", "Orphan"
    if FOREGROUND in fins:
        return "delete", "Foreground"
    return "delete", "Background"


def drop_owner_refs_patch(obj: Obj, uids: list[str]) -> list[dict[str, Any]]:
    current = owner_refs(obj)
    keep = [r for r in current if r.get("uid") not in set(uids)]
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid_of(obj)},
                                 {"op": "test", "path": "/metadata/ownerReferences", "value": current}]
    ops.append({"op": "replace", "path": "/metadata/ownerReferences", "value": keep} if keep
               else {"op": "remove", "path": "/metadata/ownerReferences"})
    return ops


def remove_finalizer_patch(obj: Obj, finalizer: str) -> list[dict[str, Any]] | None:
    fins = finalizers_of(obj)
    if finalizer not in fins:
        return None
    return [{"op": "test", "path": "/metadata/uid", "value": uid_of(obj)},
            {"op": "test", "path": "/metadata/finalizers", "value": fins},
            {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in fins if f != finalizer]}]


# ---- the controller ------------------------------------------------------------------------------


class GarbageCollector(Controller):
    name = "garbage-collector"

    def __init__(self, ctx: Context, discovery: Discovery):
        super().__init__(ctx)
        self.discovery = discovery
        self.nodes: dict[str, Node] = {}
        self.dependents: dict[str, set[str]] = {}
        self._stores: dict[tuple[str, str], tuple[Resource, Store]] = {}
        self._crd_store = ctx.informers.store("apiextensions.k8s.io/v1", "customresourcedefinitions")
        self._crd_store.add_handler(self._on_crd)
        self._rediscover: asyncio.TimerHandle | None = None
        self._rediscover_task: asyncio.Task[None] | None = None

    def stores(self) -> list[Any]:
        return [self._crd_store, *(s for _, s in self._stores.values())]

    async def prepare(self) -> None:
        """Discover what to watch; call before the informers start so no event is missed."""
        await self._sync_monitors()

    async def wait_caches(self) -> None:
        if not self._stores:
            await self._sync_monitors()
        try:
            # Like the real one, do not wait forever for a resource that cannot be listed.
            await self.ctx.informers.wait_synced(*self.stores(), timeout=SYNC_TIMEOUT)
        except TimeoutError:
            log.warning("garbage collector: not every resource synced in %.0fs; starting anyway", SYNC_TIMEOUT)

    async def started(self) -> None:
        # everything with owners is checked once the graph is complete
        for uid, node in list(self.nodes.items()):
            if node.owners or node.deleting_dependents or node.orphaning:
                self.queue.add(uid)

    # ---- monitors: one watch per deletable resource ---------------------------------------------------
    async def _sync_monitors(self) -> None:
        discovered = await self.discovery.refresh()
        wanted = {(r.api_version, r.plural): r for r in discovered.resources
                  if r.can("list", "watch", "delete") and (r.group, r.plural) not in IGNORED}
        for key, r in wanted.items():
            if key not in self._stores:
                st = self.ctx.informers.store(r.api_version, r.plural)
                st.add_handler(self._handler(r))
                self._stores[key] = (r, st)
                for obj in st.list():  # already cached by someone else: replay into the graph
                    await self._observe("ADDED", r, obj)
        for key in [k for k in self._stores if k not in wanted]:
            # only custom resources stop being served; nobody else watches them
            self._stores.pop(key)
            self.ctx.informers.forget(*key)

    async def _on_crd(self, typ: str, crd: Obj, old: Obj | None) -> None:
        # A new or removed CRD changes what is served: rediscover a little later (CRDs are established
        # asynchronously).
        if self._rediscover is not None:
            self._rediscover.cancel()
        loop = asyncio.get_running_loop()
        self._rediscover = loop.call_later(REDISCOVER_DELAY, self._start_rediscover)

    def _start_rediscover(self) -> None:
        async def go() -> None:
            try:
                await self._sync_monitors()
            except Exception:
                log.exception("garbage collector: rediscovery failed")
        self._rediscover_task = asyncio.create_task(go())

    def _handler(self, r: Resource) -> Any:
        async def handler(typ: str, obj: Obj, old: Obj | None) -> None:
            await self._observe(typ, r, obj)
        return handler

    # ---- the graph ---------------------------------------------------------------------------------
    async def _observe(self, typ: str, r: Resource, obj: Obj) -> None:
        uid = uid_of(obj)
        if not uid:
            return
        if typ == "DELETED":
            node = self.nodes.pop(uid, None)
            if node is None:
                return
            for ref in node.owners:
                deps = self.dependents.get(ref.get("uid", ""))
                if deps is not None:
                    deps.discard(uid)
                owner = self.nodes.get(ref.get("uid", ""))
                if owner is not None and owner.deleting_dependents:
                    self.queue.add(owner.uid)  # one blocking dependent fewer
            for dep in list(self.dependents.get(uid, ())):
                self.queue.add(dep)  # their owner is gone
            return
        old = self.nodes.get(uid)
        node = Node(uid, r, namespace_of(obj), name_of(obj), owner_refs(obj), is_deleting(obj), finalizers_of(obj))
        self.nodes[uid] = node
        old_owner_uids = {o.get("uid") for o in old.owners} if old else set()
        new_owner_uids = {o.get("uid") for o in node.owners}
        for gone in old_owner_uids - new_owner_uids:
            deps = self.dependents.get(gone or "")
            if deps is not None:
                deps.discard(uid)
            owner = self.nodes.get(gone or "")
            if owner is not None and owner.deleting_dependents:
                self.queue.add(owner.uid)
        for ref in node.owners:
            self.dependents.setdefault(ref.get("uid", ""), set()).add(uid)
        # Owners we do not know (yet): verify them.
        if any(o.get("uid") not in self.nodes for o in node.owners) and node.owners:
            self.queue.add(uid)
        starts_foreground = node.deleting_dependents and not (old and old.deleting_dependents)
        if starts_foreground:
            for dep in self.dependents.get(uid, ()):
                self.queue.add(dep)
        owners_changed = bool(node.owners) and old is not None and old_owner_uids != new_owner_uids
        if node.deleting_dependents or node.orphaning or owners_changed:
            self.queue.add(uid)

    def _object(self, node: Node) -> Obj | None:
        entry = self._stores.get((node.resource.api_version, node.resource.plural))
        return entry[1].get(node.namespace or None, node.name) if entry else None

    # ---- sync ----------------------------------------------------------------------------------------
    async def sync(self, key: str) -> float | None:
        node = self.nodes.get(key)
        if node is None:
            return None
        obj = self._object(node)
        if obj is None or uid_of(obj) != key:
            return None
        if node.orphaning:
            await self._orphan_dependents(node, obj)
            return None
        if node.deleting_dependents:
            await self._process_deleting_dependents(node, obj)
            return None
        if node.deleting:
            return None  # already on its way out
        if not node.owners:
            return None
        return await self._attempt_to_delete(node, obj)

    async def _owner_views(self, node: Node) -> list[OwnerView] | None:
        discovered = await self.discovery.get()
        views = []
        for ref in node.owners:
            r = discovered.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
            if r is None:
                discovered = await self.discovery.refresh()
                r = discovered.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
                if r is None:
                    log.info("garbage collector: unknown owner kind %s %s of %s/%s; will retry",
                             ref.get("apiVersion"), ref.get("kind"), node.namespace, node.name)
                    return None
            if r.namespaced and not node.namespace:
                views.append(OwnerView(ref, exists=False))  # a cluster-scoped object cannot have one
                continue
            known = self.nodes.get(ref.get("uid", ""))
            if known is not None:
                views.append(OwnerView(ref, True, known.deleting_dependents))
                continue
            try:
                owner = await self.kube.get(r.path(node.namespace or None, ref.get("name", "")))
            except ApiError as e:
                if e.code == 404:
                    views.append(OwnerView(ref, exists=False))
                    continue
                raise
            if uid_of(owner) != ref.get("uid"):
                views.append(OwnerView(ref, exists=False))
                continue
            views.append(OwnerView(ref, True, is_deleting(owner) and FOREGROUND in finalizers_of(owner)))
        return views

    async def _attempt_to_delete(self, node: Node, obj: Obj) -> float | None:
        views = await self._owner_views(node)
        if views is None:
            return 30.0
        verdict, arg = decide(obj, views, bool(self.dependents.get(node.uid)))
        path = node.resource.path(node.namespace or None, node.name)
        if verdict == "patch":
            try:
                await self.kube.patch(path, drop_owner_refs_patch(obj, arg), "json")
            except ApiError as e:
                if e.code != 404:
                    raise
        elif verdict == "delete":
            log.debug("garbage collector: deleting %s %s/%s (%s)", node.resource.kind, node.namespace, node.name, arg)
            # 409: the uid precondition failed, the object was replaced: nothing to do
            await act.execute(self.kube, [act.delete(path, uid=node.uid, propagation=arg, ok_codes=(404, 409))])
        return None

    async def _process_deleting_dependents(self, node: Node, obj: Obj) -> None:
        blocking = []
        for dep_uid in self.dependents.get(node.uid, ()):
            dep = self.nodes.get(dep_uid)
            if dep is None:
                continue
            for ref in dep.owners:
                if ref.get("uid") == node.uid and ref.get("blockOwnerDeletion"):
                    blocking.append(dep)
                    break
        if not blocking:
            await self._remove_finalizer(node, obj, FOREGROUND)
            return
        for dep in blocking:
            if not dep.deleting_dependents:
                self.queue.add(dep.uid)

    async def _orphan_dependents(self, node: Node, obj: Obj) -> None:
        for dep_uid in list(self.dependents.get(node.uid, ())):
            dep = self.nodes.get(dep_uid)
            dep_obj = self._object(dep) if dep else None
            if dep is None or dep_obj is None:
                continue
            if not any(r.get("uid") == node.uid for r in owner_refs(dep_obj)):
                continue
            try:
                await self.kube.patch(dep.resource.path(dep.namespace or None, dep.name),
                                      drop_owner_refs_patch(dep_obj, [node.uid]), "json")
            except ApiError as e:
                if e.code != 404:
                    raise
        await self._remove_finalizer(node, obj, ORPHAN)

    async def _remove_finalizer(self, node: Node, obj: Obj, finalizer: str) -> None:
        ops = remove_finalizer_patch(obj, finalizer)
        if ops is None:
            return
        try:
            await self.kube.patch(node.resource.path(node.namespace or None, node.name), ops, "json")
        except ApiError as e:
            if e.code != 404:
                raise
