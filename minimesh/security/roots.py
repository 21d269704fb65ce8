"""Publish the mesh root certificate to every namespace: ConfigMap `minimesh-ca-root-cert` (`root-cert.pem`).

Istio's istiod does the same with `istio-ca-root-cert`: the injected sidecar mounts that ConfigMap, so
its agent can verify the CA's serving certificate before it sends its token, and the proxy trusts the
certificates of its peers. Namespaces come and go, and anyone may edit or delete the ConfigMap, so the
publisher watches both and puts it back. The decisions are pure; `RootCertPublisher` talks to the API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

CONFIGMAP = "minimesh-ca-root-cert"
KEY = "root-cert.pem"
LABELS = {"app.kubernetes.io/part-of": "minimesh", "minimesh.io/config": "root-cert"}
# Istio leaves these alone (nothing is injected there)
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def desired(namespace: str, root_pem: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": namespace, "labels": dict(LABELS)},
            "data": {KEY: root_pem}}


def needs_write(existing: Mapping[str, Any] | None, root_pem: str) -> bool:
    """Whether the ConfigMap (its dict form, None when absent) must be created or corrected."""
    if existing is None:
        return True
    return (existing.get("data") or {}).get(KEY) != root_pem


def publishes_to(namespace: Mapping[str, Any]) -> bool:
    meta = namespace.get("metadata") or {}
    if meta.get("name") in IGNORED_NAMESPACES or meta.get("deletionTimestamp"):
        return False
    return (namespace.get("status") or {}).get("phase") != "Terminating"


class RootCertPublisher:
    """Keeps ConfigMap minimesh-ca-root-cert right in every namespace (two watch threads)."""

    def __init__(self, api_client: Any, root_pem: str, retry_delay: float = 5.0) -> None:
        from kubernetes import client

        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.root_pem = root_pem
        self.retry_delay = retry_delay
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.writes = 0

    # ---- one namespace ---------------------------------------------------------------------------
    def ensure(self, namespace: str) -> bool:
        """Create or fix the ConfigMap in `namespace`; True when something was written."""
        from kubernetes.client.exceptions import ApiException

        try:
            existing = self.api.sanitize_for_serialization(self.core.read_namespaced_config_map(CONFIGMAP, namespace))
        except ApiException as e:
            if e.status != 404:
                raise
            existing = None
        if not needs_write(existing, self.root_pem):
            return False
        body = desired(namespace, self.root_pem)
        try:
            if existing is None:
                self.core.create_namespaced_config_map(namespace, body)
            else:
                body["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
                self.core.replace_namespaced_config_map(CONFIGMAP, namespace, body)
        except ApiException as e:
            if e.status in (409, 404, 403):  # raced with another writer, or the namespace is going away
                log.info("root cert: %s/%s not written (%s %s); will retry on the next event", namespace, CONFIGMAP,
                         e.status, e.reason)
                return False
            raise
        self.writes += 1
        log.info("root cert: %s %s/%s", "created" if existing is None else "corrected", namespace, CONFIGMAP)
        return True

    # ---- watching ----------------------------------------------------------------------------------
    def start(self) -> None:
        for name, target in (("namespaces", self._watch_namespaces), ("configmaps", self._watch_configmaps)):
            t = threading.Thread(target=self._forever, args=(target,), name=f"root-cert-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def _forever(self, target: Any) -> None:
        while not self._stop.is_set():
            try:
                target()
            except Exception as e:  # the API server restarts, a watch expires: list and watch again
                log.info("root cert: watch ended (%s); retrying in %gs", e, self.retry_delay)
            self._stop.wait(self.retry_delay)

    def _watch_namespaces(self) -> None:
        from kubernetes import watch

        listed = self.core.list_namespace()
        for ns in listed.items:
            obj = self.api.sanitize_for_serialization(ns)
            if publishes_to(obj):
                self.ensure(obj["metadata"]["name"])
        w = watch.Watch()
        for ev in w.stream(self.core.list_namespace, resource_version=listed.metadata.resource_version,
                           timeout_seconds=300):
            if self._stop.is_set():
                w.stop()
                return
            obj = self.api.sanitize_for_serialization(ev["object"])
            if ev["type"] in ("ADDED", "MODIFIED") and publishes_to(obj):
                self.ensure(obj["metadata"]["name"])

    def _watch_configmaps(self) -> None:
        from kubernetes import watch

        selector = f"metadata.name={CONFIGMAP}"
        listed = self.core.list_config_map_for_all_namespaces(field_selector=selector)
        w = watch.Watch()
        for ev in w.stream(self.core.list_config_map_for_all_namespaces, field_selector=selector,
                           resource_version=listed.metadata.resource_version, timeout_seconds=300):
            if self._stop.is_set():
                w.stop()
                return
            obj = self.api.sanitize_for_serialization(ev["object"])
            ns = obj["metadata"]["namespace"]
            if (ev["type"] == "MODIFIED" and needs_write(obj, self.root_pem)) or ev["type"] == "DELETED":
                time.sleep(0.05)  # a deleted namespace takes its ConfigMaps first: let the namespace event land
                self._ensure_if_live(ns)

    def _ensure_if_live(self, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            ns = self.api.sanitize_for_serialization(self.core.read_namespace(namespace))
        except ApiException as e:
            if e.status == 404:
                return
            raise
        if publishes_to(ns):
            self.ensure(namespace)
