"""The Kubernetes v1.32 OpenAPI definitions (shipped by kubernetes-validate, JSON-schema form) and the
checks the API server derives from them: Go-decoder type errors, unknown fields (fieldValidation)
and strategic-merge-patch metadata (x-kubernetes-patch-strategy / -merge-key).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate

Node = dict[str, Any]
SCHEMA_VERSION = "1.32.0"
REF_PREFIX = "#/$defs/"


@functools.cache
def definitions() -> dict[str, Node]:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = base / f"v{SCHEMA_VERSION}-local" / "_definitions.json"
    return json.loads(path.read_text())["$defs"]


def ref_name(node: Node) -> str | None:
    ref = node.get("$ref")
    return ref[len(REF_PREFIX):] if isinstance(ref, str) and ref.startswith(REF_PREFIX) else None


def resolve(node: Node | None) -> Node:
    """Follow $ref (definitions have no nested refs at the top level)."""
    if not node:
        return {}
    name = ref_name(node)
    return definitions().get(name, {}) if name else node


def types_of(node: Node) -> set[str]:
    t = node.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t)


def is_int_or_string(node: Node) -> bool:
    one = node.get("oneOf")
    if not one:
        return False
    ts = set().union(*(types_of(o) for o in one))
    return "string" in ts and ("integer" in ts or "number" in ts)


def child(node: Node, key: str) -> Node | None:
    """Schema of a map member, or None when the key is unknown for this schema."""
    node = resolve(node)
    props = node.get("properties")
    if props is not None and key in props:
        return props[key]
    addl = node.get("additionalProperties")
    if isinstance(addl, dict):
        return addl
    if props is None or addl is True:
        return {}  # free-form object
    return None


def items(node: Node) -> Node:
    return resolve(node).get("items") or {}


def patch_meta(node: Node) -> tuple[list[str], str | None]:
    """(strategies, mergeKey) of a property schema (before resolving its $ref)."""
    strat = node.get("x-kubernetes-patch-strategy") or ""
    return [s for s in strat.split(",") if s], node.get("x-kubernetes-patch-merge-key")


def go_type(node: Node) -> str:
    name = ref_name(node)
    if name:
        if name.endswith("IntOrString"):
            return "intstr.IntOrString"
        if name.endswith("Quantity"):
            return "resource.Quantity"
        parts = name.split(".")
        return f"{parts[-2]}.{parts[-1]}"
    ts = types_of(node) - {"null"}
    if "array" in ts:
        return "[]" + go_type(node.get("items") or {})
    if "object" in ts:
        addl = node.get("additionalProperties")
        if isinstance(addl, dict):
            return "map[string]" + go_type(addl)
        return "map[string]interface {}"
    if "integer" in ts:
        return node.get("format") or "int64"
    if "number" in ts:
        return "float64"
    if "boolean" in ts:
        return "bool"
    if "string" in ts:
        return "[]uint8" if node.get("format") == "byte" else "string"
    return "interface {}"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fits(value: Any, node: Node) -> bool:
    if value is None:
        return True
    if is_int_or_string(node):
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    ts = types_of(node) - {"null"}
    if not ts:
        return True
    if isinstance(value, bool):
        return "boolean" in ts
    if isinstance(value, int):
        return bool(ts & {"integer", "number"})
    if isinstance(value, float):
        return "number" in ts or ("integer" in ts and value.is_integer())
    if isinstance(value, str):
        return "string" in ts
    if isinstance(value, list):
        return "array" in ts
    if isinstance(value, dict):
        return "object" in ts
    return False


@dataclass
class TypeError_:
    path: str  # JSON path without indexes (as Go reports it)
    struct: str  # Go struct holding the field
    json_type: str
    go_type: str

    def message(self) -> str:
        return (
            f"json: cannot unmarshal {self.json_type} into Go struct field {self.struct}.{self.path}"
            f" of type {self.go_type}"
        )


@dataclass
class Findings:
    type_error: TypeError_ | None = None
    unknown: list[str] = field(default_factory=list)


def _fmt_path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def check(obj: Any, definition: str, *, prune: bool = False) -> Findings:
    """Walk `obj` against the definition: the first type mismatch (the Go decoder stops there) and
    every unknown field path; with prune=True unknown fields are removed in place."""
    found = Findings()
    root = {"$ref": REF_PREFIX + definition}

    def walk(value: Any, node: Node, parts: list[str | int], struct: str, go_path: list[str]) -> None:
        if found.type_error is not None or value is None:
            return
        target = resolve(node)
        if not _fits(value, target) and not is_int_or_string(target):
            found.type_error = TypeError_(".".join(go_path), struct, _json_type(value), go_type(node))
            return
        if is_int_or_string(target) or target.get("x-kubernetes-preserve-unknown-fields"):
            return
        name = ref_name(node)
        here = name.split(".")[-1] if name else struct
        if isinstance(value, dict):
            for k in list(value):
                sub = child(target, k)
                if sub is None:
                    found.unknown.append(_fmt_path([*parts, k]))
                    if prune:
                        del value[k]
                    continue
                in_map = k not in (target.get("properties") or {})  # Go paths name fields, not map keys
                walk(value[k], sub, [*parts, k], here, go_path if in_map else [*go_path, k])
        elif isinstance(value, list):
            it = target.get("items") or {}
            for i, v in enumerate(value):
                walk(v, it, [*parts, i], here, go_path)

    walk(obj, root, [], definition.split(".")[-1], [])
    return found


def definition_for_gvk(group: str, version: str, kind: str) -> str | None:
    for name, node in definitions().items():
        for gvk in node.get("x-kubernetes-group-version-kind", ()):
            if gvk.get("group") == group and gvk.get("version") == version and gvk.get("kind") == kind:
                return name
    return None
