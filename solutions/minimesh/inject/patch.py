"""The JSON Patch (RFC 6902) that injects a sidecar into a pod: the lab-05 exercise. Pure.

The API server applies a mutating webhook's answer as a JSON Patch: a list of operations such as

    {"op": "add", "path": "/spec/containers/-", "value": {...}}      append to an array
    {"op": "add", "path": "/spec/initContainers/0", "value": {...}}   insert at index 0
    {"op": "add", "path": "/metadata/annotations", "value": {...}}    create a member (or replace it)
    {"op": "replace", "path": "/spec/containers/0/readinessProbe", "value": {...}}

Paths are JSON Pointers (RFC 6901): one token per level, and inside a token `~` is written `~0` and `/`
is written `~1`, so the annotation `sidecar.minimesh.io/status` is the path
`/metadata/annotations/sidecar.minimesh.io~1status`. `add` on a path whose parent does not exist fails:
an array or object the pod lacks must be added whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from minimesh.inject.model import Injection, Obj

Op = dict[str, Any]


def escape(token: str) -> str:
    """One JSON Pointer token: `~` -> `~0`, then `/` -> `~1` (RFC 6901 section 3)."""
    # BEGIN SOLUTION lab-05
    # TODO: escape `token` for use inside a JSON Pointer path. Order matters: replace "~" first.
    return token.replace("~", "~0").replace("/", "~1")
    # END SOLUTION


def append_ops(path: str, current: Sequence[Any] | None, items: Sequence[Any]) -> list[Op]:
    """Operations that append `items` to the array at `path`, which now holds `current` (None: absent)."""
    # BEGIN SOLUTION lab-05
    # TODO: when the array is absent (None), one "add" of the whole list at `path`; otherwise one
    #   "add" per item at `path + "/-"` (the end of the array). No items: no operations.
    if not items:
        return []
    if current is None:
        return [{"op": "add", "path": path, "value": list(items)}]
    return [{"op": "add", "path": f"{path}/-", "value": item} for item in items]
    # END SOLUTION


def set_ops(path: str, current: Mapping[str, Any] | None, entries: Mapping[str, Any]) -> list[Op]:
    """Operations that set `entries` in the object at `path`, which now holds `current` (None: absent)."""
    # BEGIN SOLUTION lab-05
    # TODO: when the object is absent (None), one "add" of a dict of all entries at `path`; otherwise
    #   one "add" per entry at `path + "/" + escape(key)` ("add" replaces a member that is already there).
    if not entries:
        return []
    if current is None:
        return [{"op": "add", "path": path, "value": dict(entries)}]
    return [{"op": "add", "path": f"{path}/{escape(key)}", "value": value} for key, value in entries.items()]
    # END SOLUTION


def build_patch(pod: Obj, injection: Injection) -> list[Op]:
    """The whole patch: containers, init containers, volumes, probe rewrites, annotations, labels."""
    # BEGIN SOLUTION lab-05
    # TODO: turn `injection` into operations on `pod`, in this order:
    #   1. init containers: with injection.native, minimesh-init then the proxy go FIRST (insert at
    #      /spec/initContainers/0 and /1, or add the whole list when the pod has none); otherwise
    #      minimesh-init is appended LAST (append_ops on /spec/initContainers).
    #   2. without native, the proxy is appended to /spec/containers.
    #   3. volumes appended to /spec/volumes; each ProbeRewrite is a "replace" at
    #      /spec/containers/<container>/<probe>.
    #   4. annotations and labels with set_ops under /metadata (add /metadata itself if the pod has none).
    spec = pod.get("spec") or {}
    ops: list[Op] = []
    init = spec.get("initContainers")
    if injection.native:
        first = [injection.init_container, injection.proxy]
        if init is None:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": first})
        else:
            ops += [{"op": "add", "path": f"/spec/initContainers/{i}", "value": c} for i, c in enumerate(first)]
    else:
        ops += append_ops("/spec/initContainers", init, [injection.init_container])
        ops += append_ops("/spec/containers", spec.get("containers"), [injection.proxy])
    ops += append_ops("/spec/volumes", spec.get("volumes"), injection.volumes)
    ops += [{"op": "replace", "path": f"/spec/containers/{r.container}/{escape(r.probe)}", "value": r.value}
            for r in injection.probes]
    meta = pod.get("metadata")
    if meta is None:
        value = {k: dict(v) for k, v in (("annotations", injection.annotations), ("labels", injection.labels)) if v}
        ops.append({"op": "add", "path": "/metadata", "value": value})
    else:
        ops += set_ops("/metadata/annotations", meta.get("annotations"), injection.annotations)
        ops += set_ops("/metadata/labels", meta.get("labels"), injection.labels)
    return ops
    # END SOLUTION
