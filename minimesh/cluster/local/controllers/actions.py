"""API writes as data. Pure reconcile functions return a list of `Action`s; `execute` performs them in
order, stopping at the first failure (the object is then requeued with back-off, as a real controller
returns its error), and records each action's event once the write has succeeded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minimesh.cluster.local.controllers.events import EventRecorder
from minimesh.cluster.local.controllers.objects import meta
from minimesh.k8s.aclient import ApiError, AsyncKube

_SUBRESOURCES = ("/status", "/finalize", "/scale", "/binding")


@dataclass(frozen=True)
class EventSpec:
    obj: Mapping[str, Any]
    api_version: str
    kind: str
    type: str
    reason: str
    message: str


@dataclass
class Action:
    verb: str  # create | replace | patch | delete
    path: str
    body: Any = None
    patch_type: str = "merge"
    params: dict[str, Any] = field(default_factory=dict)
    ok_codes: tuple[int, ...] = ()  # answers that count as done (404 on delete, 409 on create)
    event: EventSpec | None = None  # recorded after success

    def describe(self) -> str:
        return f"{self.verb} {self.path}"


def create(path: str, body: Mapping[str, Any], *, event: EventSpec | None = None,
           ok_codes: tuple[int, ...] = ()) -> Action:
    return Action("create", path, dict(body), event=event, ok_codes=ok_codes)


def replace(path: str, body: Mapping[str, Any], *, event: EventSpec | None = None) -> Action:
    """PUT with the object's resourceVersion (or the one our previous write in this sync returned)."""
    return Action("replace", path, dict(body), event=event)


def patch(path: str, body: Any, patch_type: str = "merge", *, event: EventSpec | None = None,
          ok_codes: tuple[int, ...] = ()) -> Action:
    return Action("patch", path, body, patch_type=patch_type, event=event, ok_codes=ok_codes)


def delete(path: str, *, uid: str | None = None, propagation: str | None = None,
           event: EventSpec | None = None, ok_codes: tuple[int, ...] = (404,)) -> Action:
    body: dict[str, Any] | None = None
    if uid or propagation:
        body = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if propagation:
            body["propagationPolicy"] = propagation
    return Action("delete", path, body, event=event, ok_codes=ok_codes)


def object_path(path: str) -> str:
    for sub in _SUBRESOURCES:
        if path.endswith(sub):
            return path[: -len(sub)]
    return path


async def perform(kube: AsyncKube, action: Action, rv: str | None = None) -> Any:
    body = action.body
    if action.verb == "replace" and rv:
        body = {**body, "metadata": {**(body.get("metadata") or {}), "resourceVersion": rv}}
    if action.verb == "create":
        return await kube.create(action.path, body, **action.params)
    if action.verb == "replace":
        return await kube.replace(action.path, body)
    if action.verb == "patch":
        return await kube.patch(action.path, body, action.patch_type, **action.params)
    if action.verb == "delete":
        return await kube.delete(action.path, body, **action.params)
    raise ValueError(f"unknown action verb {action.verb!r}")


async def execute(kube: AsyncKube, actions: Sequence[Action], recorder: EventRecorder | None = None) -> list[Any]:
    """Run actions in order; raise the first ApiError not listed in the action's `ok_codes`."""
    results: list[Any] = []
    latest_rv: dict[str, str] = {}
    for action in actions:
        target = object_path(action.path)
        try:
            result = await perform(kube, action, latest_rv.get(target))
        except ApiError as e:
            if e.code in action.ok_codes:
                results.append(None)
                continue
            raise
        if isinstance(result, dict) and meta(result).get("resourceVersion") and result.get("kind") != "Status":
            obj_target = target if action.verb != "create" else f"{target}/{meta(result).get('name')}"
            latest_rv[obj_target] = meta(result)["resourceVersion"]
        results.append(result)
        if recorder is not None and action.event is not None:
            ev = action.event
            recorder.event(ev.obj, ev.api_version, ev.kind, ev.type, ev.reason, ev.message)
    return results
