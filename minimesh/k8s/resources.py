"""Effective pod resources as the scheduler sees them (stage 1: the sidecar pattern).

All containers of a pod run side by side, so the pod needs the *sum* of their requests; init containers
run one after another before them, so only the biggest one counts; and native sidecars (init containers
with `restartPolicy: Always`, Kubernetes 1.29+) start as init containers but keep running, so they count
both ways. The rules are Kubernetes' own (`k8s.io/component-helpers/resource.PodRequests`, KEP-753
"Exposing Pod Resource requirements"); the stage-1 grader proves an implementation against a live
scheduler.

Quantities are integers in canonical units: `cpu` in millicores, everything else (memory,
ephemeral-storage, ...) in plain units (bytes). A `ResourceList` maps resource name to quantity; a missing
name means "not requested" (requests) or "no limit" (limits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ResourceList = dict[str, int]


class ResourceError(ValueError):
    """A quantity that cannot be parsed; the message names the field, e.g. `spec.containers[1]...`."""


@dataclass(frozen=True)
class PodResources:
    """What a pod needs (`requests`, used by the scheduler) and may use at most (`limits`)."""

    requests: ResourceList
    limits: ResourceList

    def __str__(self) -> str:
        return f"requests {format_resources(self.requests)}, limits {format_resources(self.limits)}"


# ---- given helpers -----------------------------------------------------------------------------


def quantity(name: str, value: object, where: str) -> int:
    """`("cpu", "250m")` → 250, `("memory", "64Mi")` → 67108864; rounds up like Kubernetes' MilliValue."""
    from kubernetes.utils import parse_quantity  # here: importing the client takes seconds

    try:
        q = parse_quantity(value)
    except (ValueError, TypeError) as e:
        raise ResourceError(f"{where}: {value!r} is not a Kubernetes quantity (e.g. 250m, 0.5, 64Mi)") from e
    if q < 0:
        raise ResourceError(f"{where}: {value!r} is negative")
    return math.ceil(q * 1000) if name == "cpu" else math.ceil(q)


def resource_list(values: Mapping[str, object] | None, where: str) -> ResourceList:
    """A Kubernetes ResourceList (`{"cpu": "250m"}`) in canonical integer units."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ResourceError(f"{where}: expected a mapping of resource name to quantity, got {values!r}")
    return {name: quantity(name, v, f"{where}.{name}") for name, v in values.items()}


def container_resources(container: Mapping[str, Any], where: str) -> tuple[ResourceList, ResourceList]:
    """(requests, limits) of one container.

    A resource with a limit but no request gets request = limit: the API server's defaulting does that
    before the scheduler ever sees the pod.
    """
    res = container.get("resources") or {}
    limits = resource_list(res.get("limits"), f"{where}.resources.limits")
    requests = {**limits, **resource_list(res.get("requests"), f"{where}.resources.requests")}
    return requests, limits


def is_native_sidecar(init_container: Mapping[str, Any]) -> bool:
    """An init container with `restartPolicy: Always` starts before the app and keeps running."""
    return (init_container.get("restartPolicy") or init_container.get("restart_policy")) == "Always"


def add(a: ResourceList, b: ResourceList) -> ResourceList:
    """Resource-wise sum (a name missing on one side counts as 0)."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}


def maximum(a: ResourceList, b: ResourceList) -> ResourceList:
    """Resource-wise maximum."""
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in {**a, **b}}


def spec_dict(pod_or_spec: Any) -> dict[str, Any]:
    """A pod spec as an API-shaped dict (camelCase), from a dict, a pod dict, or a client model."""
    if hasattr(pod_or_spec, "to_dict"):
        from kubernetes.client import ApiClient

        pod_or_spec = ApiClient().sanitize_for_serialization(pod_or_spec)
    if not isinstance(pod_or_spec, Mapping):
        raise ResourceError(f"expected a pod spec mapping, got {type(pod_or_spec).__name__}")
    if "spec" in pod_or_spec and isinstance(pod_or_spec["spec"], Mapping):
        return dict(pod_or_spec["spec"])
    return dict(pod_or_spec)


def format_resources(rl: Mapping[str, int]) -> str:
    """`{"cpu": 1250, "memory": 67108864}` → `cpu=1250m memory=64Mi` (empty: `none`)."""
    parts = []
    for name in sorted(rl):
        v = rl[name]
        if name == "cpu":
            parts.append(f"cpu={v}m")
        else:
            for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
                if v and v % size == 0:
                    parts.append(f"{name}={v // size}{unit}")
                    break
            else:
                parts.append(f"{name}={v}")
    return " ".join(parts) or "none"


def cpu_string(millicores: int) -> str:
    """Millicores as a quantity string for a manifest (`1500` → `1500m`)."""
    return f"{millicores}m"


# ---- the exercise ------------------------------------------------------------------------------


def pod_effective_resources(pod_spec: Mapping[str, Any]) -> PodResources:
    """Effective requests and limits of a pod, given its spec in API shape (`containers`,
    `initContainers`, `overhead`, camelCase as in YAML).

    - regular containers run together: add them up;
    - native sidecars (`initContainers` with `restartPolicy: Always`) run together with them: add them too;
    - every other init container runs alone, but next to the native sidecars declared *before* it; the pod
      needs at least (its own + those sidecars') for the time it runs: take the maximum of all these and
      of the running sum;
    - `spec.overhead` (set by a RuntimeClass) is added to the requests and to every limit that is set.
    Limits follow the same rules (a container without a limit adds nothing, as `kubectl describe node`
    shows it). Use `container_resources`, `is_native_sidecar`, `add`, `maximum` and `resource_list`, and
    pass `where` strings like "spec.initContainers[2]" so bad quantities are reported precisely.
    """
    # BEGIN EXERCISE lab-01
    # TODO: compute the pod's effective requests and limits with Kubernetes' rules.
    #   Sum regular containers and native sidecars; each other init container needs its own request
    #   plus the sidecars declared before it: take the maximum of those needs and the sum. Then add
    #   spec.overhead to the requests and to the limits that are set. Limits follow the same rules.
    raise NotImplementedError("lab 01: pod_effective_resources: compute the pod's effective requests and limits with Kubernetes' rules.")
    # END EXERCISE
