"""Namespaces: their content on creation and on deletion.

- An active namespace gets the ServiceAccount `default` (the serviceaccounts-controller) and the
  ConfigMap `kube-root-ca.crt` with the cluster CA (the root-ca-cert-publisher), both put back if deleted.
- A Terminating namespace (pkg/controller/namespace/deletion): every namespaced object of every served
  resource, custom resources included, is deleted; the controller waits until nothing is left (pods
  finish their graceful termination), reporting progress in the namespace's status conditions, then
  removes the `kubernetes` finalizer through `PUT /api/v1/namespaces/NAME/finalize`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from minimesh.cluster.local.controllers.discovery import Discovery, Resource
from minimesh.cluster.local.controllers.objects import (
    Obj,
    deepcopy,
    finalizers_of,
    fmt_time,
    is_deleting,
    key_of,
    name_of,
    namespace_of,
    parse_time,
)
from minimesh.cluster.local.controllers.runner import Context, Controller
from minimesh.k8s.aclient import ApiError, resource_path

log = logging.getLogger(__name__)

ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as "
    "the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of "
    "Kubernetes clusters."
)
FINALIZER = "kubernetes"
SKIP_RESOURCES = {("", "events"), ("events.k8s.io", "events")}  # deleted last, with the namespace itself


# ---- pure helpers --------------------------------------------------------------------------------


def root_ca_configmap(namespace: str, ca_pem: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace,
                         "annotations": {DESCRIPTION_ANNOTATION: ROOT_CA_DESCRIPTION}},
            "data": {"ca.crt": ca_pem}}


def root_ca_needs_update(cm: Obj, ca_pem: str) -> bool:
    return (cm.get("data") or {}) != {"ca.crt": ca_pem} or not \
        ((cm.get("metadata") or {}).get("annotations") or {}).get(DESCRIPTION_ANNOTATION)


@dataclass
class DeletionReport:
    """What is left after one pass over a terminating namespace."""

    remaining: dict[str, int] = field(default_factory=dict)  # "pods." → count
    finalizers: dict[str, int] = field(default_factory=dict)  # finalizer → objects holding it
    content_errors: list[str] = field(default_factory=list)
    discovery_errors: dict[str, str] = field(default_factory=dict)
    estimate: float = 0.0  # seconds until the remaining pods should be gone

    @property
    def done(self) -> bool:
        return not self.remaining and not self.content_errors and not self.discovery_errors


def namespace_conditions(report: DeletionReport, old: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The five deletion conditions of a Terminating namespace, as the real controller reports them."""
    def cond(ctype: str, bad: bool, bad_reason: str, bad_msg: str, ok_reason: str, ok_msg: str) -> dict[str, Any]:
        return {"type": ctype, "status": "True" if bad else "False",
                "reason": bad_reason if bad else ok_reason, "message": bad_msg if bad else ok_msg}

    groups = ", ".join(f"{gv}: {err}" for gv, err in sorted(report.discovery_errors.items()))
    remaining = ", ".join(f"{r} has {n} resource instances" for r, n in sorted(report.remaining.items()))
    fins = ", ".join(f"{f} in {n} resource instances" for f, n in sorted(report.finalizers.items()))
    new = [
        cond("NamespaceDeletionDiscoveryFailure", bool(report.discovery_errors), "DiscoveryFailed",
             f"Discovery failed for some groups, {len(report.discovery_errors)} failing: {groups}",
             "ResourcesDiscovered", "All resources successfully discovered"),
        cond("NamespaceDeletionGroupVersionParsingFailure", False, "", "",
             "ParsedGroupVersions", "All legacy kube types successfully parsed"),
        cond("NamespaceDeletionContentFailure", bool(report.content_errors), "ContentDeletionFailed",
             "Failed to delete all resource types, " + f"{len(report.content_errors)} remaining: "
             + ", ".join(report.content_errors),
             "ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
        cond("NamespaceContentRemaining", bool(report.remaining), "SomeResourcesRemain",
             f"Some resources are remaining: {remaining}", "ContentRemoved", "All content successfully removed"),
        cond("NamespaceFinalizersRemaining", bool(report.finalizers), "SomeFinalizersRemain",
             f"Some content in the namespace has finalizers remaining: {fins}",
             "ContentHasNoFinalizers", "All content-preserving finalizers finished"),
    ]
    previous = {c.get("type"): c for c in old}
    ts = fmt_time(now)
    out = []
    for c in new:
        prev = previous.get(c["type"])
        same = prev is not None and all(prev.get(k) == c[k] for k in ("status", "reason", "message"))
        c["lastTransitionTime"] = prev.get("lastTransitionTime", ts) if same and prev else ts
        out.append({k: c[k] for k in ("type", "status", "lastTransitionTime", "reason", "message")})
    return out


def pod_termination_estimate(pods: list[Obj], now: datetime) -> float:
    """Seconds until the last deleted pod's grace period runs out."""
    longest = 0.0
    for p in pods:
        m = p.get("metadata") or {}
        dt = parse_time(m.get("deletionTimestamp"))
        if dt is not None:
            longest = max(longest, (dt - now).total_seconds())
    return longest


# ---- the controller ------------------------------------------------------------------------------


class NamespaceController(Controller):
    name = "namespace-controller"

    def __init__(self, ctx: Context, discovery: Discovery, ca_pem: str):
        super().__init__(ctx)
        self.discovery = discovery
        self.ca_pem = ca_pem
        self.ns_store = ctx.informers.store("v1", "namespaces")
        self.sa_store = ctx.informers.store("v1", "serviceaccounts")
        self.cm_store = ctx.informers.store("v1", "configmaps")
        self.pod_store = ctx.informers.store("v1", "pods")
        self.ns_store.add_handler(self._on_namespace)
        self.sa_store.add_handler(self._on_namespaced("default"))
        self.cm_store.add_handler(self._on_namespaced(ROOT_CA_CONFIGMAP))
        self.pod_store.add_handler(self._on_pod)
        # resources that still had objects in the last pass over a terminating namespace: the next pass
        # looks at those only, and a full pass confirms before finalizing
        self._remaining: dict[str, set[Resource]] = {}

    def resync_keys(self) -> list[str]:
        return [key_of(o) for o in self.ns_store.list()]

    def stores(self) -> list[Any]:
        return [self.ns_store, self.sa_store, self.cm_store, self.pod_store]

    async def _on_namespace(self, typ: str, ns: Obj, old: Obj | None) -> None:
        if typ != "DELETED":
            self.queue.add(name_of(ns))

    def _on_namespaced(self, wanted: str) -> Any:
        async def handler(typ: str, obj: Obj, old: Obj | None) -> None:
            if name_of(obj) == wanted and typ in ("DELETED", "MODIFIED"):
                self.queue.add(namespace_of(obj))
        return handler

    async def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        if typ == "DELETED":
            ns = self.ns_store.get(None, namespace_of(pod))
            if ns is not None and is_deleting(ns):
                self.queue.add(namespace_of(pod))

    async def sync(self, key: str) -> float | None:
        ns = self.ns_store.get(None, key)
        if ns is None:
            return None
        if not is_deleting(ns):
            await self._ensure_content(ns)
            return None
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return None
        only = self._remaining.get(key)
        report = await self._delete_all(key, only)
        if only is not None and report.done:
            report = await self._delete_all(key, None)  # all clear: confirm with a full pass
        await self._report(ns, report)
        if not report.done:
            return max(1.0, min(report.estimate, 30.0)) if report.remaining else 2.0
        self._remaining.pop(key, None)
        fresh = await self.kube.get_or_none(resource_path("v1", "namespaces", None, key))
        if fresh is None:
            return None
        body = deepcopy(fresh)
        body.setdefault("spec", {})["finalizers"] = [f for f in body["spec"].get("finalizers") or [] if f != FINALIZER]
        await self.kube.replace(resource_path("v1", "namespaces", None, key, "finalize"), body)
        return None

    async def _ensure_content(self, ns: Obj) -> None:
        name = name_of(ns)
        if self.sa_store.get(name, "default") is None:
            try:
                await self.kube.create(resource_path("v1", "serviceaccounts", name),
                                       {"apiVersion": "v1", "kind": "ServiceAccount",
                                        "metadata": {"name": "default", "namespace": name}})
            except ApiError as e:
                if e.code not in (409, 403):  # exists, or the namespace just started terminating
                    raise
        cm = self.cm_store.get(name, ROOT_CA_CONFIGMAP)
        if cm is None:
            try:
                await self.kube.create(resource_path("v1", "configmaps", name), root_ca_configmap(name, self.ca_pem))
            except ApiError as e:
                if e.code not in (409, 403):
                    raise
        elif root_ca_needs_update(cm, self.ca_pem):
            body = deepcopy(cm)
            body["data"] = {"ca.crt": self.ca_pem}
            body["metadata"].setdefault("annotations", {})[DESCRIPTION_ANNOTATION] = ROOT_CA_DESCRIPTION
            await self.kube.replace(resource_path("v1", "configmaps", name, ROOT_CA_CONFIGMAP), body)

    async def _delete_all(self, namespace: str, only: set[Resource] | None) -> DeletionReport:
        discovered = await (self.discovery.get() if only is not None else self.discovery.refresh())
        report = DeletionReport(discovery_errors=dict(discovered.failed_groups))
        targets = [r for r in discovered.resources if r.namespaced and r.can("delete", "list")
                   and (r.group, r.plural) not in SKIP_RESOURCES and (only is None or r in only)]
        results = await asyncio.gather(*(self._delete_resource(r, namespace) for r in targets))
        left_in: set[Resource] = set()
        for r, (left, err) in zip(targets, results, strict=True):
            if err:
                report.content_errors.append(err)
                left_in.add(r)
            if left:
                left_in.add(r)
                report.remaining[f"{r.plural}.{r.group}"] = len(left)
                for obj in left:
                    for f in finalizers_of(obj):
                        report.finalizers[f] = report.finalizers.get(f, 0) + 1
                if r.plural == "pods" and r.group == "":
                    report.estimate = pod_termination_estimate(left, self.now())
        self._remaining[namespace] = left_in
        if not report.remaining and not report.content_errors:
            # events go last: the deletion above may have produced some
            for r in discovered.resources:
                if r.namespaced and (r.group, r.plural) in SKIP_RESOURCES and r.can("delete"):
                    await self._delete_resource(r, namespace)
        return report

    async def _delete_resource(self, r: Resource, namespace: str) -> tuple[list[Obj], str | None]:
        """deletecollection (or list + delete each), then what is left."""
        path = r.path(namespace)
        try:
            if r.can("deletecollection"):
                await self.kube.delete(path)
            else:
                items = (await self.kube.list(path)).get("items") or []
                for obj in items:
                    if not is_deleting(obj):
                        try:
                            await self.kube.delete(r.path(namespace, name_of(obj)))
                        except ApiError as e:
                            if e.code != 404:
                                raise
            left = (await self.kube.list(path)).get("items") or []
        except ApiError as e:
            if e.code in (404, 405):
                return [], None  # not served any more / not deletable here
            return [], f"{r.plural}.{r.group}: {e}"
        return left, None

    async def _report(self, ns: Obj, report: DeletionReport) -> None:
        status = ns.get("status") or {}
        conditions = namespace_conditions(report, status.get("conditions") or [], self.now())
        if conditions == status.get("conditions"):
            return
        body = deepcopy(ns)
        body["status"] = {**status, "phase": "Terminating", "conditions": conditions}
        try:
            await self.kube.replace(resource_path("v1", "namespaces", None, name_of(ns), "status"), body)
        except ApiError as e:
            if e.code not in (404, 409):
                raise

    async def started(self) -> None:
        for ns in self.ns_store.list(""):
            self.queue.add(key_of(ns))
