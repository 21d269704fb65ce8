"""List semantics: label/field selectors (supported field labels per kind), limit/continue paging."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from minimesh.cluster.local.apiserver import errors as E
from minimesh.k8s import selectors

Obj = dict[str, Any]

COMMON_FIELDS = ("metadata.name", "metadata.namespace")
FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                  "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    ("", "Event"): ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
                    "reason", "reportingComponent", "source", "type"),
    ("events.k8s.io", "Event"): ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                                 "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                                 "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
                                 "regarding.kind", "regarding.name", "regarding.namespace", "regarding.uid"),
    ("", "Secret"): ("type",),
    ("", "Node"): ("spec.unschedulable",),
    ("", "Namespace"): ("status.phase",),
    ("", "ReplicationController"): ("status.replicas",),
    ("apps", "ReplicaSet"): ("status.replicas",),
    ("batch", "Job"): ("status.successful",),
    ("certificates.k8s.io", "CertificateSigningRequest"): ("spec.signerName",),
}


@dataclass
class Filter:
    namespace: str | None
    labels: selectors.Selector
    fields: list[tuple[str, str, str]]

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and (meta.get("namespace") or "") != self.namespace:
            return False
        if self.labels and not selectors.matches(self.labels, meta.get("labels") or {}):
            return False
        return all(_field_ok(obj, f, op, v) for f, op, v in self.fields)


def _field_value(obj: Obj, path: str) -> str:
    if path == "spec.hostNetwork":
        return "true" if (obj.get("spec") or {}).get("hostNetwork") else "false"
    if path == "spec.unschedulable":
        return "true" if (obj.get("spec") or {}).get("unschedulable") else "false"
    if path == "source":
        return ((obj.get("source") or {}).get("component")) or obj.get("reportingComponent") or ""
    if path == "status.successful":
        return str((obj.get("status") or {}).get("succeeded", 0))
    if path == "status.replicas":
        return str((obj.get("status") or {}).get("replicas", 0))
    if path.startswith("regarding."):
        path = "involvedObject." + path.split(".", 1)[1]
    return selectors.field_value(obj, path)


def _field_ok(obj: Obj, f: str, op: str, v: str) -> bool:
    got = _field_value(obj, f)
    return got == v if op == "=" else got != v


def make_filter(group: str, kind: str, namespace: str | None, label_selector: str | None,
                field_selector: str | None, extra_fields: tuple[str, ...] = ()) -> Filter:
    try:
        labels = selectors.parse_label_selector(label_selector)
    except selectors.SelectorError as e:
        raise E.bad_request(f"unable to parse requirement: {e}") from None
    try:
        fields = selectors.parse_field_selector(field_selector)
    except selectors.SelectorError as e:
        raise E.bad_request(str(e)) from None
    allowed = COMMON_FIELDS + FIELDS.get((group, kind), ()) + extra_fields
    for f, _, _ in fields:
        if f not in allowed:
            raise E.bad_request(f'"{f}" is not a known field selector: only "metadata.name", "metadata.namespace"'
                                if not FIELDS.get((group, kind)) and not extra_fields else f"field label not supported: {f}")
    return Filter(namespace, labels, fields)


def encode_continue(rv: int, last: Obj) -> str:
    meta = last.get("metadata") or {}
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": [meta.get("namespace") or "", meta.get("name")]}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        return int(data["rv"]), (data["start"][0], data["start"][1])
    except (ValueError, KeyError, TypeError, IndexError):
        raise E.bad_request("continue key is not valid: invalid continue token") from None


def paginate(objs: list[Obj], limit: int | None, cont: str | None, rv: int) -> tuple[list[Obj], str | None, int | None]:
    """objs sorted by (namespace, name). Returns (page, continue token, remainingItemCount)."""
    if cont:
        _, start = decode_continue(cont)
        objs = [o for o in objs if ((o["metadata"].get("namespace") or ""), o["metadata"]["name"]) > start]
    if limit and limit > 0 and len(objs) > limit:
        page = objs[:limit]
        return page, encode_continue(rv, page[-1]), len(objs) - limit
    return objs, None, None
