"""Namespace labels for the injector's own check, from a list+watch through the official client.

One daemon thread lists the namespaces, then watches from the list's resourceVersion; a timed-out watch
resumes from the last version seen, a 410 Gone (version too old) relists, any other error retries after
a pause. The cache can lag the API server by a moment (a namespace labelled just before its first
pod is created), so when it says "not enabled", `labels` asks the API server once more before the pod is
skipped. None means the namespace could not be read at all: then the webhook's namespaceSelector, which
the API server has just checked, is trusted.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from minimesh.inject import names

log = logging.getLogger(__name__)


class NamespaceWatch:
    def __init__(self, api: client.ApiClient, *, watch_timeout: int = 300, retry_delay: float = 5.0) -> None:
        self._core = client.CoreV1Api(api)
        self._timeout = watch_timeout
        self._retry = retry_delay
        self._labels: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="namespace-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=2)

    def labels(self, name: str) -> dict[str, str] | None:
        """The namespace's labels (blocking: may ask the API server; call it off the event loop)."""
        with self._lock:
            got = self._labels.get(name)
        if got is None or got.get(names.NAMESPACE_LABEL) != names.NAMESPACE_ENABLED:
            fresh = self._read(name)
            if fresh is not None:
                got = fresh
        return dict(got) if got is not None else None

    def _read(self, name: str) -> dict[str, str] | None:
        try:
            ns = self._core.read_namespace(name, _request_timeout=5)
        except Exception as e:  # keep what the cache says; the log tells why the fresh read failed
            log.warning("namespaces: cannot read namespace %s (%s: %s); using the cache", name, type(e).__name__, e)
            return None
        labels = dict(ns.metadata.labels or {})
        with self._lock:
            self._labels[name] = labels
        return labels

    def _relist(self) -> str:
        listed = self._core.list_namespace(_request_timeout=30)
        with self._lock:
            self._labels = {ns.metadata.name: dict(ns.metadata.labels or {}) for ns in listed.items}
        self.synced.set()
        log.info("namespaces: listed %d", len(listed.items))
        return str(listed.metadata.resource_version)

    def _apply(self, event: dict[str, Any]) -> str | None:
        obj = event["raw_object"]
        meta = obj.get("metadata") or {}
        if event["type"] == "BOOKMARK":
            return meta.get("resourceVersion")
        with self._lock:
            if event["type"] == "DELETED":
                self._labels.pop(meta.get("name", ""), None)
            elif event["type"] in ("ADDED", "MODIFIED"):
                self._labels[meta.get("name", "")] = dict(meta.get("labels") or {})
        return meta.get("resourceVersion")

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                self._watch = watch.Watch()
                for event in self._watch.stream(self._core.list_namespace, resource_version=version,
                                                timeout_seconds=self._timeout, allow_watch_bookmarks=True):
                    if event["type"] == "ERROR":
                        code = (event["raw_object"] or {}).get("code")
                        version = None if code == 410 else version
                        if code != 410:
                            log.warning("namespaces: watch error %s; retrying in %.0fs", event["raw_object"], self._retry)
                            self._stop.wait(self._retry)
                        break
                    version = self._apply(event) or version
                    if self._stop.is_set():
                        return
            except ApiException as e:
                version = None if e.status == 410 else version
                if e.status != 410:
                    log.warning("namespaces: watch failed (%s %s); retrying in %.0fs", e.status, e.reason, self._retry)
                    self._stop.wait(self._retry)
            except Exception as e:  # connection errors: the API server restarts, the network blips
                if self._stop.is_set():
                    return
                log.warning("namespaces: watch failed (%s: %s); retrying in %.0fs", type(e).__name__, e, self._retry)
                version = None
                self._stop.wait(self._retry)
