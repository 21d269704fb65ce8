"""Conversions between versions that share storage: events.k8s.io/v1 Event <-> core v1 Event (stored
in core form, like the real server), and custom resources across served versions (same schema)."""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]

# events.k8s.io/v1 field -> core/v1 field
_EVENT_FIELDS = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
_SAME = ("metadata", "reason", "type", "action", "related", "eventTime", "reportingInstance", "series")


def event_to_core(ev: Obj) -> Obj:
    out: Obj = {"apiVersion": "v1", "kind": "Event"}
    for k in _SAME:
        if k in ev:
            out[k] = copy.deepcopy(ev[k])
    for new, old in _EVENT_FIELDS.items():
        if new in ev:
            out[old] = copy.deepcopy(ev[new])
    if isinstance(out.get("series"), dict):
        s = out["series"]
        out["series"] = {"count": s.get("count"), "lastObservedTime": s.get("lastObservedTime")}
    out.setdefault("involvedObject", {})
    return out


def event_from_core(ev: Obj) -> Obj:
    out: Obj = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
    for k in _SAME:
        if k in ev:
            out[k] = copy.deepcopy(ev[k])
    for new, old in _EVENT_FIELDS.items():
        if old in ev:
            out[new] = copy.deepcopy(ev[old])
    if not out.get("eventTime"):
        # Core events often have no eventTime; strict clients (the v37 python client) need one, so the
        # first timestamp stands in for it (the real server sends null here).
        first = ev.get("firstTimestamp") or (ev.get("metadata") or {}).get("creationTimestamp")
        out["eventTime"] = first.replace("Z", ".000000Z") if isinstance(first, str) and "." not in first else first
    return out


def to_version(obj: Obj, group: str, version: str, kind: str) -> Obj:
    """The stored object as the requested group/version presents it."""
    api_version = f"{group}/{version}" if group else version
    if obj.get("apiVersion") == api_version:
        return obj
    if group == "events.k8s.io" and obj.get("apiVersion") == "v1":
        return event_from_core(obj)
    out = dict(obj)
    out["apiVersion"] = api_version
    return out


def to_storage(obj: Obj, group: str, storage_api_version: str) -> Obj:
    if group == "events.k8s.io":
        return event_to_core(obj)
    out = dict(obj)
    out["apiVersion"] = storage_api_version
    return out
