"""/openapi/v2 (Swagger 2.0) and /openapi/v3 (per group-version OpenAPI 3.0 documents), synthesized
from kubernetes-validate's v1.32 definitions plus the schemas of served custom resources.

kubectl 1.32 uses v3: `explain`, and the check that the server supports `fieldValidation` (a POST/PUT/
PATCH operation carrying `x-kubernetes-group-version-kind` and the `fieldValidation` parameter), which
makes it leave validation to the server.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from minimesh.cluster.local.apiserver import schema as S
from minimesh.cluster.local.apiserver.registry import Registry, ResourceType
from minimesh.cluster.local.layout import KUBERNETES_VERSION

Obj = dict[str, Any]
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
COMMON = [
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
]


def _convert(node: Any, ref_base: str) -> Any:
    """JSON-schema form -> OpenAPI form: refs rebased, nullable type lists collapsed."""
    if isinstance(node, list):
        return [_convert(n, ref_base) for n in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str) and v.startswith(S.REF_PREFIX):
            out[k] = ref_base + v[len(S.REF_PREFIX):]
        elif k == "type" and isinstance(v, list):
            ts = [t for t in v if t != "null"]
            out[k] = ts[0] if len(ts) == 1 else ts
        elif k == "properties" and isinstance(v, dict):
            out[k] = {pk: _convert(pv, ref_base) for pk, pv in v.items()}
        elif k == "enum" and node.get("type") and "description" in node and len(v) == 1:
            continue  # kubernetes-validate's apiVersion/kind pins are not in the real documents
        else:
            out[k] = _convert(v, ref_base)
    return out


def _special(name: str) -> Obj | None:
    if name == INT_OR_STRING:
        return {"type": "string", "format": "int-or-string"}
    if name == QUANTITY:
        return {"type": "string"}
    return None


def _closure(roots: list[str], defs: dict[str, Obj]) -> list[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        text = json.dumps(defs[name])
        idx = 0
        while True:
            i = text.find('"$ref": "' + S.REF_PREFIX, idx)
            if i < 0:
                break
            start = i + len('"$ref": "' + S.REF_PREFIX)
            end = text.find('"', start)
            stack.append(text[start:end])
            idx = end
    return sorted(seen)


def custom_definition_name(t: ResourceType) -> str:
    rev = ".".join(reversed(t.group.split(".")))
    return f"{rev}.{t.version}.{t.kind}"


def custom_schema(t: ResourceType, ref_base: str) -> Obj:
    sch = copy.deepcopy(((t.crd or {}).get("schema") or {}).get("openAPIV3Schema") or {"type": "object"})
    sch.setdefault("type", "object")
    props = sch.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."})
    props.setdefault("kind", {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."})
    props["metadata"] = {"$ref": ref_base + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    sch["x-kubernetes-group-version-kind"] = [{"group": t.group, "version": t.version, "kind": t.kind}]
    return sch


def _definitions(names: list[str], ref_base: str) -> Obj:
    defs = S.definitions()
    out: Obj = {}
    for n in names:
        out[n] = _special(n) or _convert(defs[n], ref_base)
    return out


def _gvk(t: ResourceType) -> Obj:
    return {"group": t.group, "version": t.version, "kind": t.kind}


def _paths(t: ResourceType, v3: bool, ref_base: str) -> Obj:
    prefix = f"/api/{t.version}" if not t.group else f"/apis/{t.group}/{t.version}"
    coll = f"{prefix}/namespaces/{{namespace}}/{t.plural}" if t.namespaced else f"{prefix}/{t.plural}"
    item = f"{coll}/{{name}}"
    ref = ref_base + (custom_definition_name(t) if t.crd else t.definition)

    def body_param() -> Obj:
        return {"name": "body", "in": "body", "required": True, "schema": {"$ref": ref}}

    def query(name: str, desc: str) -> Obj:
        p: Obj = {"name": name, "in": "query", "description": desc}
        if v3:
            p["schema"] = {"type": "string", "uniqueItems": True}
        else:
            p["type"] = "string"
            p["uniqueItems"] = True
        return p

    def response() -> Obj:
        if v3:
            return {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}}
        return {"200": {"description": "OK", "schema": {"$ref": ref}}}

    def op(verb: str, action: str, write: bool) -> Obj:
        o: Obj = {
            "description": f"{verb} {t.kind}",
            "operationId": f"{verb}{t.kind}",
            "tags": [f"{t.group or 'core'}_{t.version}"],
            "responses": response(),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": _gvk(t),
        }
        params = []
        if write:
            params.append(query("dryRun", "When present, indicates that modifications should not be persisted."))
            params.append(query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."))
            params.append(query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict."))
            if v3:
                o["requestBody"] = {"content": {"application/json": {"schema": {"$ref": ref}}}}
            elif verb != "patch":
                params.append(body_param())
        o["parameters"] = params
        return o

    path_params: list[Obj] = []
    if t.namespaced:
        path_params.append({"name": "namespace", "in": "path", "required": True, "description": "object name and auth scope",
                            **({"schema": {"type": "string"}} if v3 else {"type": "string"})})
    coll_ops: Obj = {"parameters": path_params}
    item_ops: Obj = {"parameters": [*path_params, {"name": "name", "in": "path", "required": True,
                                                    "description": f"name of the {t.kind}",
                                                    **({"schema": {"type": "string"}} if v3 else {"type": "string"})}]}
    if "list" in t.verbs:
        coll_ops["get"] = op("list", "list", False)
    if "create" in t.verbs:
        coll_ops["post"] = op("create", "post", True)
    if "get" in t.verbs:
        item_ops["get"] = op("read", "get", False)
    if "update" in t.verbs:
        item_ops["put"] = op("replace", "put", True)
    if "patch" in t.verbs:
        item_ops["patch"] = op("patch", "patch", True)
    if "delete" in t.verbs:
        item_ops["delete"] = op("delete", "delete", False)
    out = {coll: coll_ops}
    if len(item_ops) > 1:
        out[item] = item_ops
    return out


def _served_definitions(types: list[ResourceType]) -> list[str]:
    defs = S.definitions()
    roots = list(COMMON)
    for t in types:
        if not t.crd and t.definition in defs:
            roots.append(t.definition)
            lst = t.definition + "List"
            if lst in defs:
                roots.append(lst)
    roots.append("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    return _closure(roots, defs)


def v2_document(reg: Registry) -> Obj:
    base = "#/definitions/"
    types = reg.types
    definitions = _definitions(_served_definitions(types), base)
    paths: Obj = {}
    for t in types:
        if t.crd:
            definitions[custom_definition_name(t)] = custom_schema(t, base)
        if t.crd or t.definition in definitions:
            paths.update(_paths(t, False, base))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }


def v3_paths(reg: Registry) -> list[str]:
    out = []
    for g, versions in reg.group_versions().items():
        for v in versions:
            out.append(f"api/{v}" if not g else f"apis/{g}/{v}")
    return out


def v3_document(reg: Registry, group: str, version: str) -> Obj | None:
    types = reg.in_group_version(group, version)
    if not types:
        return None
    base = "#/components/schemas/"
    schemas = _definitions(_served_definitions(types), base)
    paths: Obj = {}
    for t in types:
        if t.crd:
            schemas[custom_definition_name(t)] = custom_schema(t, base)
        if t.crd or t.definition in schemas:
            paths.update(_paths(t, True, base))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication",
                                                "name": "authorization", "in": "header"}},
        },
    }


def digest(doc: Obj) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()
