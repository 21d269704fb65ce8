"""List+watch through the official `kubernetes` client (works against every provider), one thread per kind.

Each thread lists (the full set replaces what the store had), then watches from the list's
resourceVersion, re-watching from the last seen version when a watch times out and re-listing when
the server says the version is too old (410 Gone). Events are handed to the asyncio loop with
`call_soon_threadsafe`, so the store and the push server are only ever touched from the loop.
Mesh CRDs may not be installed yet: their threads retry until they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from minimesh.pilot import store

log = logging.getLogger(__name__)

NETWORKING = ("networking.minimesh.io", "v1")
SECURITY = ("security.minimesh.io", "v1")
CRD_PLURALS = {
    store.SIDECAR: (*NETWORKING, "sidecars"),
    "VirtualService": (*NETWORKING, "virtualservices"),
    "DestinationRule": (*NETWORKING, "destinationrules"),
    "Gateway": (*NETWORKING, "gateways"),
    "PeerAuthentication": (*SECURITY, "peerauthentications"),
    "AuthorizationPolicy": (*SECURITY, "authorizationpolicies"),
}
REQUIRED = (store.SERVICE, store.ENDPOINT_SLICE, store.POD, store.NAMESPACE)  # /ready waits for these


@dataclass
class WatchSpec:
    kind: str
    list_fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    optional: bool = False  # a CRD that may not be installed


def specs(api: client.ApiClient) -> list[WatchSpec]:
    core, discovery, custom = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CustomObjectsApi(api)
    out = [
        WatchSpec(store.SERVICE, core.list_service_for_all_namespaces),
        WatchSpec(store.ENDPOINT_SLICE, discovery.list_endpoint_slice_for_all_namespaces),
        WatchSpec(store.POD, core.list_pod_for_all_namespaces),
        WatchSpec(store.NAMESPACE, core.list_namespace),
    ]
    for kind, (group, version, plural) in CRD_PLURALS.items():
        out.append(WatchSpec(kind, custom.list_cluster_custom_object,
                             {"group": group, "version": version, "plural": plural}, optional=True))
    return out


class KubeWatcher:
    """Runs the watches; `on_replace(kind, items)`, `on_event(kind, type, obj)` and `on_synced()` are
    called on `loop`."""

    def __init__(self, api: client.ApiClient, loop: asyncio.AbstractEventLoop, *,
                 on_replace: Callable[[str, list[dict[str, Any]]], None],
                 on_event: Callable[[str, str, dict[str, Any]], None],
                 on_synced: Callable[[], None], watch_timeout: int = 300, retry_delay: float = 5.0) -> None:
        self._specs = specs(api)
        self._loop = loop
        self._on_replace, self._on_event, self._on_synced = on_replace, on_event, on_synced
        self._timeout = watch_timeout
        self._retry = retry_delay
        self._stop = threading.Event()
        self._listed: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._watches: list[watch.Watch] = []

    def start(self) -> None:
        for spec in self._specs:
            t = threading.Thread(target=self._run, args=(spec,), name=f"watch-{spec.kind}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches):
            w.stop()

    def _listed_once(self, kind: str) -> None:
        with self._lock:
            self._listed.add(kind)
            done = all(k in self._listed for k in REQUIRED)
        if done:
            self._loop.call_soon_threadsafe(self._on_synced)

    def _run(self, spec: WatchSpec) -> None:
        missing_logged = False
        while not self._stop.is_set():
            try:
                version = self._list(spec)
                missing_logged = False
                self._watch(spec, version)
            except ApiException as e:
                if e.status == 410:
                    log.info("pilot: %s watch expired; listing again", spec.kind)
                    continue
                if e.status == 404 and spec.optional:
                    if not missing_logged:
                        log.warning("pilot: %s: the CRD is not installed; retrying every %.0fs", spec.kind, self._retry)
                        missing_logged = True
                    self._listed_once(spec.kind)
                else:
                    log.warning("pilot: %s: %s %s", spec.kind, e.status, e.reason)
                self._stop.wait(self._retry)
            except Exception as e:  # the API server restarting, a dropped connection: list again later
                log.warning("pilot: %s watch failed: %s", spec.kind, e)
                self._stop.wait(self._retry)

    def _list(self, spec: WatchSpec) -> str:
        response = spec.list_fn(**spec.kwargs, _preload_content=False, _request_timeout=60)
        data = json.loads(response.data)
        items = data.get("items") or []
        self._loop.call_soon_threadsafe(self._on_replace, spec.kind, items)
        self._listed_once(spec.kind)
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, spec: WatchSpec, version: str) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            self._watches.append(w)
            try:
                for event in w.stream(spec.list_fn, **spec.kwargs, resource_version=version,
                                      timeout_seconds=self._timeout, allow_watch_bookmarks=True,
                                      _request_timeout=self._timeout + 30):
                    obj = event.get("raw_object") or {}
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._loop.call_soon_threadsafe(self._on_event, spec.kind, event["type"], obj)
                    if self._stop.is_set():
                        return
            finally:
                self._watches.remove(w)
