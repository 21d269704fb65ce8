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
    # BEGIN EXERCISE lab-05
    # TODO: escape `token` for use inside a JSON Pointer path. Order matters: replace "~" first.
    raise NotImplementedError("lab 05: escape: escape `token` for use inside a JSON Pointer path. Order matters: replace \"~\" first.")
    # END EXERCISE


def append_ops(path: str, current: Sequence[Any] | None, items: Sequence[Any]) -> list[Op]:
    """Operations that append `items` to the array at `path`, which now holds `current` (None: absent)."""
    # BEGIN EXERCISE lab-05
    # TODO: when the array is absent (None), one "add" of the whole list at `path`; otherwise one
    #   "add" per item at `path + "/-"` (the end of the array). No items: no operations.
    raise NotImplementedError("lab 05: append_ops: when the array is absent (None), one \"add\" of the whole list at `path`; otherwise one")
    # END EXERCISE


def set_ops(path: str, current: Mapping[str, Any] | None, entries: Mapping[str, Any]) -> list[Op]:
    """Operations that set `entries` in the object at `path`, which now holds `current` (None: absent)."""
    # BEGIN EXERCISE lab-05
    # TODO: when the object is absent (None), one "add" of a dict of all entries at `path`; otherwise
    #   one "add" per entry at `path + "/" + escape(key)` ("add" replaces a member that is already there).
    raise NotImplementedError("lab 05: set_ops: when the object is absent (None), one \"add\" of a dict of all entries at `path`; otherwise")
    # END EXERCISE


def build_patch(pod: Obj, injection: Injection) -> list[Op]:
    """The whole patch: containers, init containers, volumes, probe rewrites, annotations, labels."""
    # BEGIN EXERCISE lab-05
    # TODO: turn `injection` into operations on `pod`, in this order:
    #   1. init containers: with injection.native, minimesh-init then the proxy go FIRST (insert at
    #      /spec/initContainers/0 and /1, or add the whole list when the pod has none); otherwise
    #      minimesh-init is appended LAST (append_ops on /spec/initContainers).
    #   2. without native, the proxy is appended to /spec/containers.
    #   3. volumes appended to /spec/volumes; each ProbeRewrite is a "replace" at
    #      /spec/containers/<container>/<probe>.
    #   4. annotations and labels with set_ops under /metadata (add /metadata itself if the pod has none).
    raise NotImplementedError("lab 05: build_patch: turn `injection` into operations on `pod`, in this order:")
    # END EXERCISE
