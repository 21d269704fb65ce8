"""`rollout restart` and `rollout status`, as kubectl does them, through the official client.

restart: a strategic-merge patch of `spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]`;
the changed template makes the controller replace every pod, and the new pods go through admission (and
the injector) again. status: kubectl's DeploymentStatusViewer, message for message.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
KINDS = {  # what `TYPE/NAME` may say -> the canonical kind
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment", "deployment.apps": "Deployment",
    "ds": "DaemonSet", "daemonset": "DaemonSet", "daemonsets": "DaemonSet", "daemonset.apps": "DaemonSet",
    "sts": "StatefulSet", "statefulset": "StatefulSet", "statefulsets": "StatefulSet", "statefulset.apps": "StatefulSet",
}
STRATEGIC = "application/strategic-merge-patch+json"


class RolloutError(ValueError):
    """A target that cannot be restarted or watched; the message says which and why."""


@dataclass(frozen=True)
class Target:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}.apps/{self.name}"


def parse_target(text: str) -> Target:
    kind, sep, name = text.partition("/")
    if not sep or not name or kind.lower() not in KINDS:
        raise RolloutError(f"want TYPE/NAME with TYPE one of deploy, ds, sts (e.g. deploy/productpage-v1), got {text!r}")
    return Target(KINDS[kind.lower()], name)


def restart_patch(now: dt.datetime) -> dict[str, Any]:
    """The patch kubectl sends (RFC 3339 time, seconds, UTC)."""
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def _get(obj: dict[str, Any], *path: str, default: Any = None) -> Any:
    for p in path:
        obj = obj.get(p) if isinstance(obj, dict) else None  # type: ignore[assignment]
    return default if obj is None else obj


def deployment_status(d: dict[str, Any]) -> tuple[bool, str]:
    """(done, message) for a Deployment (as a dict from the API), kubectl's wording."""
    name = _get(d, "metadata", "name")
    generation = _get(d, "metadata", "generation", default=0)
    status = d.get("status") or {}
    if generation > status.get("observedGeneration", 0):
        return False, "Waiting for deployment spec update to be observed..."
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            raise RolloutError(f'deployment "{name}" exceeded its progress deadline')
    want = _get(d, "spec", "replicas", default=1)
    updated = status.get("updatedReplicas", 0)
    replicas = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < want:
        return False, (f'Waiting for deployment "{name}" rollout to finish: {updated} out of {want} new replicas'
                       " have been updated...")
    if replicas > updated:
        return False, (f'Waiting for deployment "{name}" rollout to finish: {replicas - updated} old replicas are'
                       " pending termination...")
    if available < updated:
        return False, (f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated replicas'
                       " are available...")
    return True, f'deployment "{name}" successfully rolled out'


def _apps(api_client: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(api_client)


def _patch_fn(apps: Any, kind: str) -> Callable[..., Any]:
    return {"Deployment": apps.patch_namespaced_deployment, "DaemonSet": apps.patch_namespaced_daemon_set,
            "StatefulSet": apps.patch_namespaced_stateful_set}[kind]


def restart(api_client: Any, namespace: str, targets: Sequence[Target], all_deployments: bool = False,
            now: dt.datetime | None = None) -> list[str]:
    """Restart the targets (or every Deployment of the namespace); returns kubectl's lines."""
    from kubernetes.client.exceptions import ApiException

    apps = _apps(api_client)
    items = list(targets)
    if all_deployments:
        items += [Target("Deployment", d.metadata.name) for d in apps.list_namespaced_deployment(namespace).items]
        if not items:
            raise RolloutError(f"no deployments in namespace {namespace}")
    body = restart_patch(now or dt.datetime.now(dt.UTC))
    out = []
    for t in items:
        try:
            if t.kind == "Deployment" and apps.read_namespaced_deployment(t.name, namespace).spec.paused:
                raise RolloutError(f"can't restart paused deployment {t.name} (run rollout resume first)")
            _patch_fn(apps, t.kind)(t.name, namespace, body, _content_type=STRATEGIC)
        except ApiException as e:
            if e.status == 404:
                raise RolloutError(f'{t.kind.lower()}s.apps "{t.name}" not found in namespace {namespace}') from None
            raise
        out.append(f"{t} restarted")
    return out


def wait(api_client: Any, namespace: str, name: str, timeout: float = 300, interval: float = 1.0,
         report: Callable[[str], None] = lambda _m: None) -> str:
    """Poll a Deployment until it has rolled out; returns kubectl's last line, raises RolloutError on timeout."""
    from kubernetes.client.exceptions import ApiException

    apps = _apps(api_client)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            d = api_client.sanitize_for_serialization(apps.read_namespaced_deployment(name, namespace))
        except ApiException as e:
            if e.status == 404:
                raise RolloutError(f'deployments.apps "{name}" not found in namespace {namespace}') from None
            raise
        done, message = deployment_status(d)
        if message != last:
            report(message)
            last = message
        if done:
            return message
        if time.monotonic() > deadline:
            raise RolloutError(f"timed out after {timeout:.0f}s: {message}")
        time.sleep(interval)
