"""Inject this pod at all? Istio's `injectRequired`, plus the checks it leaves to the webhook's selectors. Pure.

A pod is skipped (allowed unchanged, the reason logged and counted) when:

- `host_network`: it uses the node's network; the capture rules would rewrite the node's own traffic.
- `already_injected`: it carries the status annotation or a minimesh-proxy container (injection is
  idempotent: a pod that went through the webhook once, or was injected offline, is left alone).
- `opted_out`: label (preferred, as Istio) or annotation `sidecar.minimesh.io/inject` is not one of
  y/yes/true/on: the CronJob problem, a Job whose pod never ends because its proxy keeps running.
- `ignored_namespace`: kube-system and friends, whatever their labels say.
- `namespace_not_enabled`: the namespace lacks `minimesh-injection=enabled`. The webhook's
  namespaceSelector already filters, but a pod created while the label was being removed, or a webhook
  configuration edited by hand, must not get a proxy its namespace did not ask for.
"""

from __future__ import annotations

from collections.abc import Mapping

from minimesh.inject import names
from minimesh.inject.model import Obj, annotations, labels

TRUE_VALUES = ("y", "yes", "true", "on")  # Istio's reading of http://yaml.org/type/bool.html

HOST_NETWORK = "host_network"
ALREADY_INJECTED = "already_injected"
OPTED_OUT = "opted_out"
IGNORED_NAMESPACE = "ignored_namespace"
NAMESPACE_NOT_ENABLED = "namespace_not_enabled"
SKIP_REASONS = (HOST_NETWORK, ALREADY_INJECTED, OPTED_OUT, IGNORED_NAMESPACE, NAMESPACE_NOT_ENABLED)


def already_injected(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return names.STATUS_ANNOTATION in annotations(pod) or any(
        isinstance(c, dict) and c.get("name") == names.PROXY_CONTAINER for c in containers
    )


def opt_in_value(pod: Obj) -> str | None:
    """The pod's own say (label first, then annotation), or None when it says nothing."""
    value = labels(pod).get(names.INJECT_KEY)
    if value is None:
        value = annotations(pod).get(names.INJECT_KEY)
    return value


def skip_reason(pod: Obj, namespace: str, namespace_labels: Mapping[str, str] | None) -> str | None:
    """Why this pod must not be injected, or None to inject it.

    `namespace_labels` is None when the namespace is not known (offline injection, no API access):
    then only the pod itself decides, as `istioctl kube-inject` does.
    """
    if (pod.get("spec") or {}).get("hostNetwork"):
        return HOST_NETWORK
    if already_injected(pod):
        return ALREADY_INJECTED
    if namespace in names.IGNORED_NAMESPACES:
        return IGNORED_NAMESPACE
    value = opt_in_value(pod)
    if value is not None and value.strip().lower() not in TRUE_VALUES:
        return OPTED_OUT
    if namespace_labels is not None and namespace_labels.get(names.NAMESPACE_LABEL) != names.NAMESPACE_ENABLED:
        return NAMESPACE_NOT_ENABLED
    return None


def describe(reason: str, namespace: str) -> str:
    """A sentence for the log."""
    return {
        HOST_NETWORK: "the pod uses hostNetwork (capture rules would change the node's own traffic)",
        ALREADY_INJECTED: f"the pod already has {names.STATUS_ANNOTATION} or a {names.PROXY_CONTAINER} container",
        OPTED_OUT: f"the pod opted out with {names.INJECT_KEY}",
        IGNORED_NAMESPACE: f"namespace {namespace} is never injected",
        NAMESPACE_NOT_ENABLED: f"namespace {namespace} is not labelled {names.NAMESPACE_LABEL}={names.NAMESPACE_ENABLED}",
    }.get(reason, reason)
