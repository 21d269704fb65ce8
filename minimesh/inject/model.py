"""What the injector decided to add to a pod (`Injection`), and the checks that a pod is one. Pure.

The pipeline is Istio's, split so each step has one job:

    review.py    AdmissionReview in, AdmissionReview out (sans-I/O)
    policy.py    inject at all? (hostNetwork, opted out, already injected, namespace)
    template.py  what to add: the init container, the proxy, volumes, labels, annotations, probes
    patch.py     the JSON Patch (RFC 6902) that adds exactly that: the lab-05 exercise
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


class InjectionError(ValueError):
    """The pod cannot be injected as it is; the message names the field and what is wrong.

    The webhook answers `allowed: false` with this message, as Istio does when injection fails, so the
    user sees it in the `kubectl apply` error instead of getting a pod without its proxy.
    """


class MalformedPod(InjectionError):
    """The object does not have the shape of a Pod (Istio: "Could not unmarshal raw object")."""


@dataclass(frozen=True)
class ProbeRewrite:
    """Replace `spec.containers[container].<probe>` (readinessProbe, livenessProbe, startupProbe)."""

    container: int
    probe: str
    value: Obj


@dataclass(frozen=True)
class Injection:
    """Everything injection adds to one pod; `patch.build_patch` turns it into JSON Patch operations.

    - `init_container` (minimesh-init) runs first of all init containers when `native`, else last
      (so other init containers still have the network before the capture is installed, as Istio).
    - `proxy` (minimesh-proxy) goes to the end of `spec.containers`, or, when `native`, into
      `spec.initContainers` right after minimesh-init (it carries `restartPolicy: Always`).
    - `volumes` are appended to `spec.volumes`; `probes` replace app probes in place.
    - `annotations` and `labels` are set (added, or replacing a value already there).
    """

    init_container: Obj
    proxy: Obj
    native: bool
    volumes: tuple[Obj, ...] = ()
    probes: tuple[ProbeRewrite, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


def _want(cond: bool, where: str, what: str, got: object) -> None:
    if not cond:
        raise MalformedPod(f"{where}: want {what}, got {type(got).__name__} {got!r:.60}")


def check_pod(pod: object) -> Obj:
    """The pod, if it has the shape injection relies on; else InjectionError naming the field."""
    _want(isinstance(pod, dict), "object", "a Pod (a JSON object)", pod)
    assert isinstance(pod, dict)
    meta = pod.get("metadata")
    _want(meta is None or isinstance(meta, dict), "metadata", "an object", meta)
    for key in ("labels", "annotations"):
        values = (meta or {}).get(key)
        _want(values is None or isinstance(values, dict), f"metadata.{key}", "an object", values)
        for k, v in (values or {}).items():
            _want(isinstance(v, str), f"metadata.{key}[{k!r}]", "a string", v)
    spec = pod.get("spec")
    _want(isinstance(spec, dict), "spec", "an object", spec)
    assert isinstance(spec, dict)
    for key in ("containers", "initContainers", "volumes"):
        items = spec.get(key)
        if key == "containers":
            _want(isinstance(items, list) and bool(items), "spec.containers", "a non-empty list", items)
        else:
            _want(items is None or isinstance(items, list), f"spec.{key}", "a list", items)
        for i, item in enumerate(items or []):
            _want(isinstance(item, dict), f"spec.{key}[{i}]", "an object", item)
            _want(isinstance(item.get("name"), str) and bool(item["name"]), f"spec.{key}[{i}].name",
                  "a non-empty string", item.get("name"))
    return pod


def annotations(pod: Obj) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("annotations") or {})


def labels(pod: Obj) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("labels") or {})


def pod_name(pod: Obj) -> str:
    """The name for logs; pods of a Deployment have only a generateName at admission (as Istio prints)."""
    meta = pod.get("metadata") or {}
    if meta.get("name"):
        return str(meta["name"])
    if meta.get("generateName"):
        return f"{meta['generateName']}***** (actual name not yet known)"
    return "(no name)"
