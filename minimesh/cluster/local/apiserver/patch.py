"""Patches: JSON patch (RFC 6902, via `jsonpatch`), JSON merge patch (RFC 7386) and strategic merge
patch driven by the schema's x-kubernetes-patch-strategy / x-kubernetes-patch-merge-key (pure)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from minimesh.cluster.local.apiserver import schema as S


class PatchError(ValueError):
    """The patch cannot be applied (422 like the real server)."""


class PatchFormatError(ValueError):
    """The patch document itself is malformed (400)."""


JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchFormatError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        return jsonpatch.JsonPatch(ops).apply(copy.deepcopy(doc))
    except jsonpatch.JsonPatchTestFailed as e:
        raise PatchError(f"the server rejected our request due to an error in our request: {e}") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError) as e:
        raise PatchError(str(e) or type(e).__name__) from None


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---- strategic merge patch -------------------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def _strip(value: Any) -> Any:
    """Drop directives from a value that is added as a whole."""
    if isinstance(value, dict):
        if value.get(_DIRECTIVE) == "delete":
            return None
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get(_DIRECTIVE) in ("delete", "replace"))]
    return value


def strategic_merge(original: Any, patch: Any, definition: str) -> Any:
    if not isinstance(patch, dict):
        raise PatchFormatError("strategic merge patch must be a JSON object")
    result = _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch,
                        {"$ref": S.REF_PREFIX + definition})
    return {} if result is None else result


def _merge_map(orig: dict[str, Any], patch: dict[str, Any], node: S.Node) -> dict[str, Any] | None:
    directive = patch.get(_DIRECTIVE)
    if directive == "replace":
        return _strip({k: v for k, v in patch.items() if k != _DIRECTIVE})
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"Unknown patch type: {directive}")
    retain = patch.get(_RETAIN)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER):]] = value or []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            fld = key[len(_DELETE_PRIMITIVE):]
            if isinstance(orig.get(fld), list):
                orig[fld] = [v for v in orig[fld] if v not in (value or [])]
            continue
        if value is None:
            orig.pop(key, None)
            continue
        prop = S.child(node, key) or {}
        strategies, merge_key = S.patch_meta(prop)
        current = orig.get(key)
        if isinstance(value, dict) and "replace" not in strategies:
            merged = _merge_map(current if isinstance(current, dict) else {}, value, prop)
            if merged is None:
                orig.pop(key, None)
            else:
                orig[key] = merged
        elif isinstance(value, list) and "merge" in strategies:
            orig[key] = _merge_list(current if isinstance(current, list) else [], value, S.items(prop), merge_key)
        else:
            orig[key] = _strip(value)
    for fld, order in orders.items():
        if isinstance(orig.get(fld), list):
            prop = S.child(node, fld) or {}
            orig[fld] = _reorder(orig[fld], order, S.patch_meta(prop)[1])
    if isinstance(retain, list):
        for k in list(orig):
            if k not in retain:
                del orig[k]
    return orig


def _merge_list(orig: list[Any], patch: list[Any], item_node: S.Node, merge_key: str | None) -> list[Any]:
    if any(isinstance(p, dict) and p.get(_DIRECTIVE) == "replace" for p in patch):
        return [_strip(p) for p in patch if not (isinstance(p, dict) and p.get(_DIRECTIVE) == "replace")]
    if not patch:
        return orig
    if not all(isinstance(p, dict) for p in patch) or not merge_key:
        out = list(orig)
        for p in patch:
            if isinstance(p, dict) and p.get(_DIRECTIVE) == "delete":
                continue
            if p not in out:
                out.append(_strip(p))
        return out
    out = list(orig)
    for p in patch:
        if merge_key not in p:
            raise PatchError(f"map: {p} does not contain declared merge key: {merge_key}")
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(merge_key) == p[merge_key]), None)
        if p.get(_DIRECTIVE) == "delete":
            out = [o for o in out if not (isinstance(o, dict) and o.get(merge_key) == p[merge_key])]
            continue
        if idx is None:
            merged = _merge_map({}, p, item_node)
            if merged is not None:
                out.append(merged)
        else:
            merged = _merge_map(copy.deepcopy(out[idx]), p, item_node)
            if merged is None:
                del out[idx]
            else:
                out[idx] = merged
    return out


def _reorder(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    def ident(x: Any) -> Any:
        return x.get(merge_key) if merge_key and isinstance(x, dict) else x

    wanted = [ident(o) for o in order]
    placed = [next(i for i in items if ident(i) == w) for w in wanted if any(ident(i) == w for i in items)]
    rest = [i for i in items if ident(i) not in wanted]
    return placed + rest
