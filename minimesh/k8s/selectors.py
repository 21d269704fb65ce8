"""Label and field selectors with Kubernetes semantics (pure functions).

Used by the API server (`?labelSelector=`), the controllers, kube-proxy, the push server and the
webhook (namespaceSelector/objectSelector), so every component agrees on what "matches" means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector that cannot be parsed; the message says where."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        raise SelectorError(f"unknown operator {self.op!r}")


Selector = tuple[Requirement, ...]

_TOKEN = re.compile(r"\s*(!=|==|=|!|,|\(|\)|[^\s,()!=]+)")


def parse_label_selector(text: str | None) -> Selector:
    """Parse the string form (`app=web,tier in (a,b),!legacy,env`)."""
    if not text or not text.strip():
        return ()
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            if text[pos:].strip() == "":
                break
            raise SelectorError(f"cannot parse label selector {text!r} at position {pos}")
        tokens.append(m.group(1))
        pos = m.end()
    reqs: list[Requirement] = []
    i = 0

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise SelectorError(f"label selector {text!r}: expected {what}")

    while i < len(tokens):
        if tokens[i] == "!":
            need(i + 1 < len(tokens), "a key after '!'")
            reqs.append(Requirement(tokens[i + 1], "!"))
            i += 2
        else:
            key = tokens[i]
            need(key not in ",()=!=", "a key")
            i += 1
            if i >= len(tokens) or tokens[i] == ",":
                reqs.append(Requirement(key, "exists"))
            elif tokens[i] in ("=", "==", "!="):
                op = "!=" if tokens[i] == "!=" else "="
                need(i + 1 < len(tokens) and tokens[i + 1] not in ",()", f"a value after {key}{tokens[i]}")
                reqs.append(Requirement(key, op, (tokens[i + 1],)))
                i += 2
            elif tokens[i].lower() in ("in", "notin"):
                op = tokens[i].lower()
                need(i + 1 < len(tokens) and tokens[i + 1] == "(", f"'(' after {key} {op}")
                i += 2
                values: list[str] = []
                while i < len(tokens) and tokens[i] != ")":
                    if tokens[i] != ",":
                        values.append(tokens[i])
                    i += 1
                need(i < len(tokens), "')'")
                i += 1
                reqs.append(Requirement(key, op, tuple(values)))
            else:
                raise SelectorError(f"label selector {text!r}: unexpected {tokens[i]!r} after {key!r}")
        if i < len(tokens):
            need(tokens[i] == ",", "',' between requirements")
            i += 1
    return tuple(reqs)


def selector_from_spec(spec: Mapping[str, Any] | None) -> Selector | None:
    """A metav1.LabelSelector (matchLabels/matchExpressions). None → matches nothing, {} → everything."""
    if spec is None:
        return None
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (spec.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in spec.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"matchExpressions operator {expr.get('operator')!r} is not one of {sorted(ops)}")
        reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return tuple(reqs)


def matches(selector: Selector | None, labels: Mapping[str, str] | None) -> bool:
    if selector is None:
        return False
    labels = labels or {}
    return all(r.matches(labels) for r in selector)


def matches_spec(spec: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    return matches(selector_from_spec(spec), labels)


def selector_map_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """Service-style selector (a plain map). An empty or missing map selects nothing, as for Services."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    """`metadata.name=x,spec.nodeName!=y` → [(field, op, value)]."""
    out: list[tuple[str, str, str]] = []
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            if op in part:
                f, v = part.split(op, 1)
                out.append((f.strip(), "!=" if op == "!=" else "=", v.strip()))
                break
        else:
            raise SelectorError(f"field selector {text!r}: {part!r} has no '=' or '!='")
    return out


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    return "" if cur is None else str(cur)


def matches_fields(obj: Mapping[str, Any], reqs: list[tuple[str, str, str]]) -> bool:
    for f, op, v in reqs:
        got = field_value(obj, f)
        if (op == "=" and got != v) or (op == "!=" and got == v):
            return False
    return True
