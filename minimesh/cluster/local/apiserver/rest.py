"""Request handling for every stored resource: create, get, list, update, patch, delete,
deletecollection and the status/scale/finalize subresources.

The HTTP layer (server.py) parses the request and calls these; they raise `ApiError` with the real
Status for every failure and commit nothing unless every check passed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from minimesh.cluster.local.apiserver import allocators, defaults, listing, validation
from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.apiserver import meta as M
from minimesh.cluster.local.apiserver import patch as P
from minimesh.cluster.local.apiserver import schema as S
from minimesh.cluster.local.apiserver.printers import label_selector_string
from minimesh.cluster.local.apiserver.registry import Registry, ResourceType
from minimesh.cluster.local.apiserver.store import Store

Obj = dict[str, Any]
SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
RETURNS_DELETED_OBJECT = {("", "pods"), ("", "services"), ("", "namespaces")}
NAMESPACE_KEY = "/namespaces"


@dataclass
class User:
    username: str
    uid: str = ""
    groups: list[str] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)

    def info(self) -> Obj:
        out: Obj = {"username": self.username, "groups": self.groups}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = self.extra
        return out


@dataclass
class Attributes:
    """What admission sees about one write (the fields of an AdmissionReview request)."""

    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    rt: ResourceType
    subresource: str
    namespace: str
    name: str
    obj: Obj | None
    old: Obj | None
    user: User
    dry_run: bool
    options: Obj


AdmissionHook = Callable[[Attributes], Awaitable[None]]


@dataclass
class Params:
    """Query parameters that matter for writes."""

    dry_run: bool = False
    field_validation: str = "Warn"
    field_manager: str = ""
    force: bool = False

    @classmethod
    def from_query(cls, q: Any) -> Params:
        dry = q.getall("dryRun", []) if hasattr(q, "getall") else ([q["dryRun"]] if "dryRun" in q else [])
        for d in dry:
            if d != "All":
                raise E.bad_request(f'dryRun: Unsupported value: "{d}": supported values: "All"')
        fv = q.get("fieldValidation") or "Warn"
        if fv not in ("Ignore", "Warn", "Strict"):
            raise E.bad_request(f'fieldValidation: Unsupported value: "{fv}": supported values: "Ignore", "Strict", "Warn"')
        return cls(bool(dry), fv, q.get("fieldManager") or "", (q.get("force") or "").lower() == "true")


def decode_body(raw: bytes, content_type: str) -> Any:
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        raise E.bad_request("the body of the request was empty")
    if "yaml" in content_type:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise E.bad_request(f"error converting YAML to JSON: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise E.bad_request(f"couldn't get version/kind; json parse error: {e}") from None


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _same(a: Obj, b: Obj) -> bool:
    def strip(o: Obj) -> Obj:
        o = dict(o)
        o["metadata"] = {k: v for k, v in (o.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
        return o

    return strip(a) == strip(b)


class Api:
    def __init__(self, store: Store, registry: Registry):
        self.store = store
        self.registry = registry
        self.mutating: list[AdmissionHook] = []
        self.validating: list[AdmissionHook] = []
        self.after_write: list[Callable[[ResourceType, str, Obj], None]] = []
        # Custom-resource schema handling (installed by the CRD module).
        self.custom_prepare: Callable[[ResourceType, Obj, Params, list[str]], None] | None = None
        self.custom_validate: Callable[[ResourceType, Obj], list[E.Cause]] | None = None
        self.extra_validators: dict[tuple[str, str], Callable[[Obj], list[E.Cause]]] = {}

    # ---- helpers -----------------------------------------------------------------------------
    def _key(self, rt: ResourceType) -> str:
        return rt.key

    def get_obj(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(rt.key, namespace if rt.namespaced else None, name)
        if obj is None:
            raise E.not_found(rt.plural, rt.group, name)
        return obj

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        if not rt.namespaced:
            return
        ns = self.store.get(NAMESPACE_KEY, None, namespace)
        if ns is None:
            raise E.not_found("namespaces", "", namespace)
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            err = E.forbidden(rt.plural, rt.group, name,
                              f"unable to create new content in namespace {namespace} because it is being terminated")
            err.details = {**(err.details or {}), "causes": [{"reason": "NamespaceTerminating",
                                                             "message": f"namespace {namespace} is being terminated",
                                                             "field": "metadata.namespace"}]}
            raise err

    def _check_type(self, rt: ResourceType, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise E.bad_request(f"couldn't get version/kind; json parse error: json: cannot unmarshal {type(body).__name__} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if kind and kind != rt.kind:
            raise E.bad_request(f'the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})'
                                if api_version and api_version != rt.api_version else
                                f"{kind} in version \"{rt.version}\" cannot be handled as a {rt.kind}: no kind \"{kind}\" is registered for version \"{rt.api_version}\"")
        if api_version and api_version != rt.api_version:
            same_group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            if same_group != rt.group or not rt.crd:
                raise E.bad_request(f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})")
        body["apiVersion"], body["kind"] = rt.api_version, rt.kind
        if body.get("metadata") is None:
            body["metadata"] = {}
        if not isinstance(body["metadata"], dict):
            raise E.bad_request(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a {rt.kind}: json: cannot unmarshal {type(body['metadata']).__name__} into Go struct field {rt.kind}.metadata of type v1.ObjectMeta")
        return body

    def _field_check(self, rt: ResourceType, obj: Obj, params: Params, warnings: list[str]) -> None:
        """Go-decoder type errors (400) and unknown fields per fieldValidation."""
        if rt.crd:
            if self.custom_prepare:
                self.custom_prepare(rt, obj, params, warnings)
            return
        if rt.definition not in S.definitions():
            return
        found = S.check(obj, rt.definition, prune=params.field_validation != "Strict")
        if found.type_error:
            raise E.bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {found.type_error.message()}')
        if found.unknown:
            if params.field_validation == "Strict":
                raise E.bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict decoding error: '
                                    + ", ".join(f'unknown field "{u}"' for u in found.unknown))
            if params.field_validation == "Warn":
                warnings.extend(f'unknown field "{u}"' for u in found.unknown)

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        causes = validation.validate(rt.group, rt.kind, rt.namespaced, obj, old)
        if rt.crd and self.custom_validate:
            causes += self.custom_validate(rt, obj)
        extra = self.extra_validators.get((rt.group, rt.kind))
        if extra:
            causes += extra(obj)
        if causes:
            raise E.invalid(rt.kind, rt.group, obj["metadata"].get("name") or "", causes)

    async def _admit(self, hooks: list[AdmissionHook], attrs: Attributes) -> None:
        for hook in hooks:
            await hook(attrs)

    def _prepare_create(self, rt: ResourceType, obj: Obj) -> None:
        gk = (rt.group, rt.kind)
        if gk == ("", "Pod"):
            obj["status"] = {"phase": "Pending", "qosClass": defaults.qos_class(obj.get("spec") or {})}
        elif gk == ("", "Namespace"):
            obj["status"] = {"phase": "Active"}
        elif rt.has_status and gk not in (("", "Node"), ("", "Service")):
            obj.pop("status", None)
        elif gk == ("", "Service"):
            obj["status"] = {"loadBalancer": {}}
        defaults.apply(rt.group, rt.kind, obj)
        if gk == ("", "Pod"):
            defaults.pod_admission(obj)

    def _allocate(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if (rt.group, rt.kind) != ("", "Service"):
            return
        causes = allocators.allocate(obj, old, self.store.list("/services"))
        if causes:
            raise E.invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)

    # ---- create ------------------------------------------------------------------------------
    async def create(self, rt: ResourceType, namespace: str | None, body: Any, params: Params, user: User,
                     *, subresource: str = "") -> tuple[Obj, list[str]]:
        warnings: list[str] = []
        obj = self._check_type(rt, body)
        meta = obj["metadata"]
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        elif "namespace" in meta:
            meta.pop("namespace")
        if meta.get("resourceVersion"):
            raise E.internal("resourceVersion should not be set on objects to be created")
        self._field_check(rt, obj, params, warnings)
        name = meta.get("name") or ""
        self._check_namespace(rt, namespace or "", name)
        for k in SYSTEM_META:
            meta.pop(k, None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        meta["uid"] = M.new_uid()
        meta["creationTimestamp"] = M.now()
        if rt.generation or rt.crd:
            meta["generation"] = 1
        self._prepare_create(rt, obj)
        attrs = Attributes("CREATE", rt, subresource, namespace or "", name, obj, None, user, params.dry_run, {})
        await self._admit(self.mutating, attrs)
        obj = attrs.obj or obj
        # A webhook's patch is decoded with defaulting on the real server, so fields it added (an injected
        # container's terminationMessagePath, probe thresholds, ...) are defaulted like the rest.
        defaults.apply(rt.group, rt.kind, obj)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            # Like the real server, the name is generated after mutating admission: webhooks see "".
            meta["name"] = M.generate_name(meta["generateName"])
        name = attrs.name = meta.get("name") or ""
        if (rt.group, rt.kind) == ("batch", "Job"):
            defaults.job(obj)  # the generated selector needs the final name and uid (as in the job strategy)
        self._validate(rt, obj, None)
        await self._admit(self.validating, attrs)
        if self.store.get(rt.key, obj["metadata"].get("namespace"), name) is not None:
            raise E.already_exists(rt.plural, rt.group, name)
        self._check_namespace(rt, namespace or "", name)  # may have changed while admission awaited
        self._allocate(rt, obj, None)
        if params.dry_run:
            return obj, warnings
        created = self.store.create(rt.key, obj)
        for fn in self.after_write:
            fn(rt, "ADDED", created)
        return created, warnings

    # ---- update ------------------------------------------------------------------------------
    def _merge_system_fields(self, rt: ResourceType, obj: Obj, old: Obj, subresource: str) -> Obj:
        """What a write may change: status only through /status, namespace finalizers only through
        /finalize, system metadata never."""
        rv = (obj.get("metadata") or {}).get("resourceVersion") or old["metadata"].get("resourceVersion")
        if subresource == "status":
            new = copy.deepcopy(old)
            if obj.get("status") is None:
                new.pop("status", None)
            else:
                new["status"] = obj["status"]
            new["metadata"]["resourceVersion"] = rv
            return new
        if subresource == "finalize":
            new = copy.deepcopy(old)
            new.setdefault("spec", {})["finalizers"] = (obj.get("spec") or {}).get("finalizers") or []
            new["metadata"]["resourceVersion"] = rv
            return new
        meta = obj["metadata"]
        om = old["metadata"]
        for k in SYSTEM_META:
            if k in om:
                meta[k] = om[k]
            else:
                meta.pop(k, None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        if rt.namespaced:
            meta["namespace"] = om.get("namespace")
        if rt.has_status:
            if "status" in old:
                obj["status"] = old["status"]
            else:
                obj.pop("status", None)
        if (rt.group, rt.kind) == ("", "Namespace"):
            obj.setdefault("spec", {})["finalizers"] = (old.get("spec") or {}).get("finalizers") or []
        return obj

    async def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any, params: Params, user: User,
                     *, subresource: str = "", old: Obj | None = None, patched: bool = False) -> tuple[Obj, list[str]]:
        warnings: list[str] = []
        obj = self._check_type(rt, body)
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise E.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["name"] = name
        if old is None:
            old = self.get_obj(rt, namespace, name)
        self._field_check(rt, obj, params, warnings)
        want_rv = meta.get("resourceVersion")
        if want_rv and want_rv != old["metadata"].get("resourceVersion"):
            raise E.conflict(rt.plural, rt.group, name)
        if meta.get("uid") and meta["uid"] != old["metadata"].get("uid"):
            raise E.conflict(rt.plural, rt.group, name,
                             f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {old['metadata'].get('uid')}")
        obj = self._merge_system_fields(rt, obj, old, subresource)
        if subresource in ("", "finalize"):
            defaults.apply(rt.group, rt.kind, obj)
        if (rt.generation or rt.crd) and subresource == "" and _spec_part(obj) != _spec_part(old):
            obj["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if subresource == "":
            self._allocate(rt, obj, old)  # fills in allocations the client omitted, before validation
        attrs = Attributes("UPDATE", rt, subresource, namespace or "", name, obj, old, user, params.dry_run, {})
        if subresource in ("", "status"):
            await self._admit(self.mutating, attrs)
            obj = attrs.obj or obj
            if subresource == "":
                defaults.apply(rt.group, rt.kind, obj)
        self._validate(rt, obj, old)
        if subresource in ("", "status"):
            await self._admit(self.validating, attrs)
        current = self.store.get(rt.key, namespace if rt.namespaced else None, name)
        if current is None:
            raise E.not_found(rt.plural, rt.group, name)
        if current["metadata"].get("resourceVersion") != old["metadata"].get("resourceVersion"):
            raise E.conflict(rt.plural, rt.group, name)
        if _same(obj, old):
            return old, warnings
        if params.dry_run:
            return obj, warnings
        om = obj["metadata"]
        if om.get("deletionTimestamp") and not om.get("finalizers") and self._finalized(rt, obj):
            gone = self.store.delete(rt.key, namespace if rt.namespaced else None, name)
            for fn in self.after_write:
                fn(rt, "DELETED", gone)
            return gone, warnings
        updated = self.store.update(rt.key, obj)
        for fn in self.after_write:
            fn(rt, "MODIFIED", updated)
        return updated, warnings

    def _finalized(self, rt: ResourceType, obj: Obj) -> bool:
        if (rt.group, rt.kind) == ("", "Namespace"):
            return not (obj.get("spec") or {}).get("finalizers")
        if (rt.group, rt.kind) == ("", "Pod"):
            # A pod that still runs is removed by the kubelet's grace-0 delete, not by losing finalizers.
            return not (obj.get("spec") or {}).get("nodeName") or (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") \
                or obj["metadata"].get("deletionGracePeriodSeconds") == 0
        return True

    # ---- patch -------------------------------------------------------------------------------
    def apply_patch(self, rt: ResourceType, old: Obj, body: Any, content_type: str) -> Obj:
        ct = content_type.split(";")[0].strip()
        if ct == P.JSON_PATCH:
            return P.json_patch(old, body)
        if ct == P.MERGE_PATCH:
            if not isinstance(body, dict):
                raise P.PatchFormatError("merge patch must be a JSON object")
            return P.merge_patch(old, body)
        if ct == P.STRATEGIC_PATCH:
            if rt.crd or rt.definition not in S.definitions():
                raise E.unsupported_media_type(ct, [P.JSON_PATCH, P.MERGE_PATCH, P.APPLY_PATCH])
            return P.strategic_merge(old, body, rt.definition)
        if ct == P.APPLY_PATCH:
            if rt.crd or rt.definition not in S.definitions():
                return P.merge_patch(old, body)
            return P.strategic_merge(old, body, rt.definition)
        raise E.unsupported_media_type(ct, [P.JSON_PATCH, P.MERGE_PATCH, P.APPLY_PATCH, P.STRATEGIC_PATCH])

    async def patch(self, rt: ResourceType, namespace: str | None, name: str, raw: bytes, content_type: str,
                    params: Params, user: User, *, subresource: str = "") -> tuple[Obj, list[str], int]:
        ct = content_type.split(";")[0].strip()
        if ct not in (P.JSON_PATCH, P.MERGE_PATCH, P.STRATEGIC_PATCH, P.APPLY_PATCH):
            raise E.unsupported_media_type(ct, [P.JSON_PATCH, P.MERGE_PATCH, P.APPLY_PATCH, P.STRATEGIC_PATCH])
        body = decode_body(raw, "yaml" if ct == P.APPLY_PATCH else "json")
        if ct == P.APPLY_PATCH:
            if not params.field_manager:
                raise E.bad_request("PATCH, fieldManager: Required value: is required for apply patch")
            if not isinstance(body, dict):
                raise E.bad_request("error decoding YAML: the apply patch must be an object")
        warnings: list[str] = []
        for _attempt in range(5):
            old = self.store.get(rt.key, namespace if rt.namespaced else None, name)
            if old is None:
                if ct == P.APPLY_PATCH and subresource == "":
                    body.setdefault("metadata", {})["name"] = body.get("metadata", {}).get("name") or name
                    if body["metadata"]["name"] != name:
                        raise E.bad_request(f"the name of the object ({body['metadata']['name']}) does not match the name on the URL ({name})")
                    created, w = await self.create(rt, namespace, copy.deepcopy(body), params, user)
                    return created, warnings + w, 201
                raise E.not_found(rt.plural, rt.group, name)
            try:
                new = self.apply_patch(rt, old, copy.deepcopy(body), ct)
            except P.PatchFormatError as e:
                raise E.bad_request(str(e)) from None
            except P.PatchError as e:
                raise E.ApiError(422, "Invalid", str(e)) from None
            if not isinstance(new, dict):
                raise E.ApiError(422, "Invalid", "the patched object is not a JSON object")
            new_meta = new.setdefault("metadata", {})
            if not isinstance(new_meta, dict):
                raise E.bad_request("metadata must be an object")
            if new_meta.get("resourceVersion") == old["metadata"].get("resourceVersion"):
                new_meta.pop("resourceVersion", None)
                new_meta["resourceVersion"] = old["metadata"].get("resourceVersion")
            try:
                result, w = await self.update(rt, namespace, name, new, params, user, subresource=subresource,
                                              old=old, patched=True)
                return result, warnings + w, 200
            except E.ApiError as e:
                # A concurrent write while admission awaited: patches are retried on the fresh object.
                if e.reason == "Conflict" and new_meta.get("resourceVersion") == old["metadata"].get("resourceVersion") \
                        and not _patch_sets_rv(body):
                    current = self.store.get(rt.key, namespace if rt.namespaced else None, name)
                    if current is not None and current["metadata"].get("resourceVersion") != old["metadata"].get("resourceVersion"):
                        continue
                raise
        raise E.conflict(rt.plural, rt.group, name)

    # ---- delete ------------------------------------------------------------------------------
    async def delete(self, rt: ResourceType, namespace: str | None, name: str, options: Obj, params: Params,
                     user: User) -> tuple[Obj, int]:
        old = self.get_obj(rt, namespace, name)
        pre = options.get("preconditions") or {}
        om = old["metadata"]
        if pre.get("uid") and pre["uid"] != om.get("uid"):
            raise E.conflict(rt.plural, rt.group, name,
                             f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {om.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != om.get("resourceVersion"):
            raise E.conflict(rt.plural, rt.group, name,
                             f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in object meta: {om.get('resourceVersion')}")
        attrs = Attributes("DELETE", rt, "", namespace or "", name, None, old, user, params.dry_run, options)
        await self._admit(self.validating, attrs)
        old = self.get_obj(rt, namespace, name)
        new = copy.deepcopy(old)
        meta = new["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Orphan", "Foreground", "Background"):
            raise E.invalid("DeleteOptions", "meta.k8s.io", "", [E.not_supported("propagationPolicy", policy, ["Foreground", "Background", "Orphan", "nil"])])
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        gk = (rt.group, rt.kind)
        grace = options.get("gracePeriodSeconds")
        now = datetime.now(UTC)
        graceful = False
        if gk == ("", "Pod"):
            spec, status = old.get("spec") or {}, old.get("status") or {}
            if grace is None:
                grace = spec.get("terminationGracePeriodSeconds", 30)
            if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
                grace = 0
            current = meta.get("deletionGracePeriodSeconds")
            if current is not None and grace > current:
                grace = current  # a delete may only shorten the grace period
            graceful = grace > 0
        elif gk == ("", "Namespace"):
            graceful = bool((old.get("spec") or {}).get("finalizers"))
            new.setdefault("status", {})["phase"] = "Terminating"
        if not graceful and not finalizers:
            if params.dry_run:
                return self._deleted_response(rt, old), 200
            gone = self.store.delete(rt.key, namespace if rt.namespaced else None, name)
            for fn in self.after_write:
                fn(rt, "DELETED", gone)
            return self._deleted_response(rt, gone), 200
        if gk == ("", "Pod") and graceful:
            meta["deletionTimestamp"] = (now + timedelta(seconds=grace)).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["deletionGracePeriodSeconds"] = grace
        else:
            meta.setdefault("deletionTimestamp", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("deletionGracePeriodSeconds", 0)
        meta["finalizers"] = finalizers
        if not finalizers:
            meta.pop("finalizers")
        if _same(new, old):
            return old, 200
        if params.dry_run:
            return new, 200
        updated = self.store.update(rt.key, new)
        for fn in self.after_write:
            fn(rt, "MODIFIED", updated)
        code = 202 if options.get("orphanDependents") is False else 200
        return updated, code

    def _deleted_response(self, rt: ResourceType, obj: Obj) -> Obj:
        if (rt.group, rt.plural) in RETURNS_DELETED_OBJECT or rt.crd:
            return obj
        meta = obj["metadata"]
        details: Obj = {"name": meta["name"], "kind": rt.plural, "uid": meta.get("uid")}
        if rt.group:
            details = {"name": meta["name"], "group": rt.group, "kind": rt.plural, "uid": meta.get("uid")}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    async def delete_collection(self, rt: ResourceType, namespace: str | None, flt: listing.Filter, options: Obj,
                                params: Params, user: User) -> Obj:
        items = []
        for obj in [o for o in self.store.list(rt.key, namespace if rt.namespaced else None) if flt.matches(o)]:
            try:
                res, _ = await self.delete(rt, namespace if rt.namespaced else None, obj["metadata"]["name"], options,
                                           params, user)
            except E.ApiError as e:
                if e.code == 404:
                    continue
                raise
            items.append(res if res.get("kind") != "Status" else obj)
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items}

    # ---- reads -------------------------------------------------------------------------------
    def list(self, rt: ResourceType, namespace: str | None, flt: listing.Filter, q: Any) -> tuple[list[Obj], Obj]:
        rv_param = q.get("resourceVersion") or ""
        match = q.get("resourceVersionMatch") or ""
        if match and not rv_param:
            raise E.bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
        if rv_param and rv_param != "0":
            try:
                want = int(rv_param)
            except ValueError:
                raise E.bad_request(f"invalid resource version: {rv_param}") from None
            if match == "Exact" and want != self.store.rv:
                raise E.gone(f"too old resource version: {want} ({self.store.rv})")
            if want > self.store.rv:
                raise E.timeout(f"Too large resource version: {want}, current: {self.store.rv}")
        objs = [o for o in self.store.list(rt.key, namespace if rt.namespaced else None) if flt.matches(o)]
        limit = q.get("limit")
        try:
            lim = int(limit) if limit else None
        except ValueError:
            raise E.bad_request(f"invalid limit: {limit}") from None
        page, cont, remaining = listing.paginate(objs, lim, q.get("continue"), self.store.rv)
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = remaining
        return page, meta

    # ---- scale -------------------------------------------------------------------------------
    def scale_of(self, rt: ResourceType, obj: Obj) -> Obj:
        m = obj["metadata"]
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in m},
            "spec": {"replicas": spec.get("replicas", 0)},
            "status": {"replicas": status.get("replicas", 0), "selector": label_selector_string(spec.get("selector"))},
        }

    async def update_scale(self, rt: ResourceType, namespace: str | None, name: str, scale: Any, params: Params,
                           user: User) -> Obj:
        if not isinstance(scale, dict):
            raise E.bad_request("Scale must be a JSON object")
        old = self.get_obj(rt, namespace, name)
        want_rv = (scale.get("metadata") or {}).get("resourceVersion")
        if want_rv and want_rv != old["metadata"].get("resourceVersion"):
            raise E.conflict(rt.plural, rt.group, name)
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise E.invalid("Scale", "autoscaling", name, [E.invalid_value("spec.replicas", replicas, "must be greater than or equal to 0")])
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["replicas"] = replicas
        updated, _ = await self.update(rt, namespace, name, new, params, user, old=old, patched=True)
        return self.scale_of(rt, updated)


def _patch_sets_rv(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("metadata"), dict) and bool(body["metadata"].get("resourceVersion"))
