"""CustomResourceDefinitions: serving their resources (discovery, OpenAPI, routes, tables), structural
schema pruning/defaulting and validation of custom resources, and cleanup when a CRD goes.

Not implemented: conversion webhooks (every served version shares the schema), the scale
subresource of custom resources, CEL rules (x-kubernetes-validations) and field ownership."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

import jsonschema

from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.apiserver import meta as M
from minimesh.cluster.local.apiserver.registry import ALL_VERBS, ResourceType, Subresource

if TYPE_CHECKING:
    from minimesh.cluster.local.apiserver.rest import Params
    from minimesh.cluster.local.apiserver.server import ApiServer

Obj = dict[str, Any]
CRD_KEY = "apiextensions.k8s.io/customresourcedefinitions"
_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(v: str) -> tuple[int, int, int, str]:
    """Kubernetes version ordering: GA > beta > alpha, higher numbers first, then others by name."""
    m = _VERSION_RE.match(v)
    if not m:
        return (3, 0, 0, v)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor, v)


# ---- validation of the CRD itself ------------------------------------------------------------
def validate_crd(crd: Obj) -> list[E.Cause]:
    c: list[E.Cause] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group") or ""
    plural = names.get("plural") or ""
    name = crd["metadata"].get("name", "")
    if not group:
        c.append(E.required("spec.group"))
    elif "." not in group:
        c.append(E.invalid_value("spec.group", group, "should be a domain with at least one dot"))
    if not plural:
        c.append(E.required("spec.names.plural"))
    if not names.get("kind"):
        c.append(E.required("spec.names.kind"))
    if plural and group and name != f"{plural}.{group}":
        c.append(E.invalid_value("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    for fld in ("plural", "singular"):
        v = names.get(fld)
        if v:
            for m in M.is_label(v):
                c.append(E.invalid_value(f"spec.names.{fld}", v, m))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        c.append(E.not_supported("spec.scope", scope, ["Cluster", "Namespaced"]) if scope else E.required("spec.scope"))
    versions = spec.get("versions") or []
    if not versions:
        c.append(E.required("spec.versions", "must have exactly one version marked as storage version"))
    storage = [v for v in versions if v.get("storage")]
    if versions and len(storage) != 1:
        c.append(E.invalid_value("spec.versions", [v.get("name") for v in versions],
                                 "must have exactly one version marked as storage version"))
    if versions and not any(v.get("served") for v in versions):
        c.append(E.invalid_value("spec.versions", [v.get("name") for v in versions], "must have at least one served version"))
    seen = set()
    for i, v in enumerate(versions):
        vn = v.get("name") or ""
        if not vn:
            c.append(E.required(f"spec.versions[{i}].name"))
        elif vn in seen:
            c.append(E.duplicate(f"spec.versions[{i}].name", vn))
        seen.add(vn)
        sch = (v.get("schema") or {}).get("openAPIV3Schema")
        if sch is None:
            c.append(E.required(f"spec.versions[{i}].schema.openAPIV3Schema", "schemas are required"))
        elif sch.get("type") != "object":
            c.append(E.invalid_value(f"spec.versions[{i}].schema.openAPIV3Schema.type", sch.get("type", ""),
                                     "must be object at the root"))
    return c


# ---- structural schemas ------------------------------------------------------------------------
def prune(value: Any, schema: Obj, path: list[str | int], unknown: list[str], *, root: bool = False) -> Any:
    """Drop fields the structural schema does not specify (unless x-kubernetes-preserve-unknown-fields)
    and apply `default`s; records the paths of dropped fields."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        for k in list(value):
            if root and k in ("apiVersion", "kind", "metadata"):
                continue
            sub = None
            if props is not None and k in props:
                sub = props[k]
            elif isinstance(addl, dict):
                sub = addl
            elif addl is True or preserve:
                continue
            if sub is None:
                unknown.append(_fmt([*path, k]))
                del value[k]
                continue
            value[k] = prune(value[k], sub, [*path, k], unknown)
        for k, sub in (props or {}).items():
            if k not in value and isinstance(sub, dict) and "default" in sub:
                value[k] = copy.deepcopy(sub["default"])
        return value
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [prune(v, items, [*path, i], unknown) for i, v in enumerate(value)]
    return value


def _fmt(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _to_jsonschema(schema: Any) -> Any:
    """OpenAPI v3 (k8s flavour) -> JSON schema: nullable, int-or-string, no `default`/extensions."""
    if isinstance(schema, list):
        return [_to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: Obj = {}
    for k, v in schema.items():
        if k.startswith("x-kubernetes-") or k in ("default", "example", "externalDocs", "nullable", "description"):
            continue
        if k in ("properties", "patternProperties", "definitions"):
            out[k] = {pk: _to_jsonschema(pv) for pk, pv in v.items()}
        else:
            out[k] = _to_jsonschema(v)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if schema.get("x-kubernetes-embedded-resource") or schema.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
    return out


def _cause(err: jsonschema.ValidationError) -> E.Cause:
    parts = list(err.absolute_path)
    path = _fmt(parts)
    if err.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        field = _fmt([*parts, missing[0]]) if missing else path
        return E.required(field)
    if err.validator == "enum":
        return E.not_supported(path, err.instance, [str(x) for x in err.validator_value])
    if err.validator == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return E.invalid_value(path, err.instance, f"{path} in body must be of type {want}: {E.go_repr(err.instance)}")
    detail = {
        "minimum": f"should be greater than or equal to {err.validator_value}",
        "maximum": f"should be less than or equal to {err.validator_value}",
        "minLength": f"should be at least {err.validator_value} chars long",
        "maxLength": f"may not be more than {err.validator_value} bytes",
        "pattern": f"should match '{err.validator_value}'",
        "minItems": f"should have at least {err.validator_value} items",
        "maxItems": f"must have at most {err.validator_value} items",
    }.get(str(err.validator), err.message)
    return E.invalid_value(path, err.instance, f"{path} in body {detail}" if err.validator in ("minimum", "maximum", "minLength", "pattern") else detail)


class Crds:
    def __init__(self, server: ApiServer):
        self.server = server
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = {}

    @property
    def store(self) -> Any:
        return self.server.store

    def start(self) -> None:
        for crd in self.store.list(CRD_KEY):
            self._register(crd)
        self.server.registry_changed()

    # ---- registry --------------------------------------------------------------------------
    def _register(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group = spec.get("group", "")
        name = crd["metadata"]["name"]
        self.server.registry.remove_crd(name)
        self._validators = {k: v for k, v in self._validators.items() if k[0] != name}
        if crd["metadata"].get("deletionTimestamp"):
            return
        versions = sorted((v for v in spec.get("versions") or [] if v.get("served")),
                          key=lambda v: version_priority(v.get("name", "")))
        for v in versions:
            subs = []
            if "status" in (v.get("subresources") or {}):
                subs.append(Subresource("status", ("get", "patch", "update")))
            self.server.registry.add(ResourceType(
                group=group, version=v["name"], kind=names.get("kind", ""), plural=names.get("plural", ""),
                namespaced=spec.get("scope") == "Namespaced", short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()), verbs=ALL_VERBS, subresources=tuple(subs),
                generation=True, singular=names.get("singular") or names.get("kind", "").lower(),
                list_kind=names.get("listKind") or f"{names.get('kind', '')}List", crd=v, crd_name=name,
            ))

    def _established(self, crd: Obj) -> Obj:
        spec = crd.get("spec") or {}
        now = M.now()
        conds = [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
             "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ]
        old = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
        for c in conds:
            prev = old.get(c["type"])
            if prev and prev.get("status") == c["status"]:
                c["lastTransitionTime"] = prev.get("lastTransitionTime", now)
        stored = list((crd.get("status") or {}).get("storedVersions") or [])
        for v in spec.get("versions") or []:
            if v.get("storage") and v.get("name") not in stored:
                stored.append(v["name"])
        return {"conditions": conds, "acceptedNames": copy.deepcopy(spec.get("names") or {}), "storedVersions": stored}

    def after_write(self, rt: ResourceType, event: str, obj: Obj) -> None:
        if rt.key != CRD_KEY:
            return
        name = obj["metadata"]["name"]
        if event == "DELETED":
            self.server.registry.remove_crd(name)
            self._delete_instances(obj)
        else:
            self._register(obj)
            status = self._established(obj)
            if obj.get("status") != status and not obj["metadata"].get("deletionTimestamp"):
                new = copy.deepcopy(obj)
                new["status"] = status
                self.store.update(CRD_KEY, new)
        self.server.registry_changed()

    def _delete_instances(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        key = f"{spec.get('group', '')}/{(spec.get('names') or {}).get('plural', '')}"
        for o in self.store.list(key):
            self.store.delete(key, o["metadata"].get("namespace"), o["metadata"]["name"])

    # ---- custom resources ------------------------------------------------------------------
    def _schema(self, rt: ResourceType) -> Obj:
        return ((rt.crd or {}).get("schema") or {}).get("openAPIV3Schema") or {"type": "object"}

    def prepare(self, rt: ResourceType, obj: Obj, params: Params, warnings: list[str]) -> None:
        unknown: list[str] = []
        prune(obj, self._schema(rt), [], unknown, root=True)
        if unknown:
            if params.field_validation == "Strict":
                raise E.bad_request("strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown))
            if params.field_validation == "Warn":
                warnings.extend(f'unknown field "{u}"' for u in unknown)

    def validate(self, rt: ResourceType, obj: Obj) -> list[E.Cause]:
        key = (rt.crd_name, rt.version, str(id(rt.crd)))
        v = self._validators.get(key)
        if v is None:
            sch = _to_jsonschema(self._schema(rt))
            props = sch.setdefault("properties", {})
            for k in ("apiVersion", "kind", "metadata"):
                props.pop(k, None)
            v = jsonschema.Draft7Validator(sch)
            self._validators[key] = v
        body = {k: val for k, val in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        return [_cause(e) for e in sorted(v.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))]

    def validate_crd(self, rt: ResourceType, obj: Obj) -> list[E.Cause]:
        return validate_crd(obj)


def install(server: ApiServer) -> Crds:
    crds = Crds(server)
    api = server.api
    assert api is not None
    api.custom_prepare = crds.prepare
    api.custom_validate = crds.validate
    api.after_write.append(crds.after_write)
    api.extra_validators[("apiextensions.k8s.io", "CustomResourceDefinition")] = validate_crd
    crds.start()
    return crds
