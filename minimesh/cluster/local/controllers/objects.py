"""Small pure helpers over API objects as dicts: metadata, owner references, times, pod state.

Everything here mirrors a helper of the real controllers (k8s.io/kubernetes/pkg/controller,
pkg/api/v1/pod) so the controllers built on it read like their Go originals.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

Obj = dict[str, Any]


# ---- metadata ------------------------------------------------------------------------------------


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def name_of(obj: Mapping[str, Any]) -> str:
    return meta(obj).get("name", "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    return meta(obj).get("namespace", "")


def uid_of(obj: Mapping[str, Any]) -> str:
    return meta(obj).get("uid", "")


def key_of(obj: Mapping[str, Any]) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects (the informer cache key)."""
    ns = namespace_of(obj)
    return f"{ns}/{name_of(obj)}" if ns else name_of(obj)


def split_key(key: str) -> tuple[str, str]:
    ns, _, name = key.rpartition("/")
    return ns, name


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return meta(obj).get("labels") or {}


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return meta(obj).get("annotations") or {}


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def finalizers_of(obj: Mapping[str, Any]) -> list[str]:
    return list(meta(obj).get("finalizers") or [])


def generation_of(obj: Mapping[str, Any]) -> int:
    return int(meta(obj).get("generation") or 0)


def deepcopy(obj: Obj) -> Obj:
    return copy.deepcopy(obj)


# ---- owner references ----------------------------------------------------------------------------


def owner_refs(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(meta(obj).get("ownerReferences") or [])


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """metav1.GetControllerOf: the owner reference with `controller: true`."""
    for ref in owner_refs(obj):
        if ref.get("controller"):
            return ref
    return None


def new_controller_ref(owner: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """metav1.NewControllerRef: blockOwnerDeletion and controller both true."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


# ---- time ----------------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def fmt_time(t: datetime) -> str:
    """metav1.Time on the wire: RFC 3339, whole seconds, UTC."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python < 3.11 parsers choke on nanoseconds; keep at most microseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def creation_time(obj: Mapping[str, Any]) -> datetime | None:
    return parse_time(meta(obj).get("creationTimestamp"))


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


# ---- conditions ----------------------------------------------------------------------------------


def get_condition(status: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def remove_condition(status: dict[str, Any], ctype: str) -> None:
    conds = [c for c in status.get("conditions") or [] if c.get("type") != ctype]
    if conds:
        status["conditions"] = conds
    else:
        status.pop("conditions", None)


# ---- pods ----------------------------------------------------------------------------------------


def pod_phase(pod: Mapping[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase", "")


def is_pod_terminal(pod: Mapping[str, Any]) -> bool:
    return pod_phase(pod) in ("Succeeded", "Failed")


def is_pod_active(pod: Mapping[str, Any]) -> bool:
    """controller.IsPodActive: not terminal and not being deleted."""
    return not is_pod_terminal(pod) and not is_deleting(pod)


def pod_ready_condition(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    return get_condition(pod.get("status"), "Ready")


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    c = pod_ready_condition(pod)
    return c is not None and c.get("status") == "True"


def pod_ready_since(pod: Mapping[str, Any]) -> datetime | None:
    """When the pod became ready (its Ready condition's lastTransitionTime), or None if not ready."""
    if not is_pod_ready(pod):
        return None
    return parse_time((pod_ready_condition(pod) or {}).get("lastTransitionTime"))


def is_pod_available(pod: Mapping[str, Any], min_ready_seconds: int, now: datetime) -> bool:
    """podutil.IsPodAvailable: ready for at least minReadySeconds."""
    if not is_pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = pod_ready_since(pod)
    return since is not None and since + seconds(min_ready_seconds) < now


def available_at(pod: Mapping[str, Any], min_ready_seconds: int) -> datetime | None:
    """The moment a ready pod turns available (None when not ready or already counted at once)."""
    since = pod_ready_since(pod)
    if since is None or min_ready_seconds <= 0:
        return None
    return since + seconds(min_ready_seconds)


def filter_active_pods(pods: Iterable[Obj]) -> list[Obj]:
    return [p for p in pods if is_pod_active(p)]


def pod_ip(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    if status.get("podIP"):
        return status["podIP"]
    ips = status.get("podIPs") or []
    return ips[0].get("ip", "") if ips else ""


def is_native_sidecar(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"
