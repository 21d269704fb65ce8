"""Watch semantics: ordered events, resume from a resourceVersion, 410 Expired, bookmarks, selectors,
sendInitialEvents, timeouts."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def _events(core: client.CoreV1Api, ns: str, **kw: Any) -> list[tuple[str, str, str]]:
    out = []
    for ev in watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=kw.pop("timeout", 2), **kw):
        o = ev["object"]
        out.append((ev["type"], o.metadata.name, o.metadata.resource_version))
    return out


def test_watch_sees_changes_in_order_and_resumes(cluster: Any) -> None:
    ns = cluster.namespace("w")
    core = client.CoreV1Api(cluster.client())
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    got: list[tuple[str, str, str]] = []

    def run() -> None:
        got.extend(_events(core, ns, resource_version=start, timeout=3))

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "v"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "b"}})
    core.delete_namespaced_config_map("a", ns)
    t.join()
    assert [(e[0], e[1]) for e in got] == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    rvs = [int(e[2]) for e in got]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4
    # resume from the middle: only what came after
    later = _events(core, ns, resource_version=got[1][2], timeout=1)
    assert [(e[0], e[1]) for e in later] == [("ADDED", "b"), ("DELETED", "a")]
    # no resourceVersion: synthetic ADDED for the current state
    now = _events(core, ns, timeout=1)
    assert [(e[0], e[1]) for e in now] == [("ADDED", "b")]


def test_watch_label_selector_transitions(cluster: Any) -> None:
    ns = cluster.namespace("wsel")
    core = client.CoreV1Api(cluster.client())
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "x", "labels": {"app": "no"}}})
    core.patch_namespaced_config_map("x", ns, {"metadata": {"labels": {"app": "yes"}}})
    core.patch_namespaced_config_map("x", ns, {"metadata": {"labels": {"app": "no"}}})
    got = _events(core, ns, resource_version=start, label_selector="app=yes", timeout=1)
    # entering the selection is ADDED, leaving it is DELETED (as the watch cache does)
    assert [(e[0], e[1]) for e in got] == [("ADDED", "x"), ("DELETED", "x")]


def test_too_old_resource_version_is_410(cluster: Any) -> None:
    ns = cluster.namespace("old")
    core = client.CoreV1Api(cluster.client())
    store = cluster.srv.server.store
    saved = store.floor
    store.floor = store.rv  # as if the history had been compacted
    try:
        with pytest.raises(ApiException) as e:
            _events(core, ns, resource_version="1", timeout=1)
        assert e.value.status == 410
    finally:
        store.floor = saved
    # raw: HTTP 200 with an ERROR event carrying the Expired Status
    api = cluster.client()
    store.floor = store.rv
    try:
        resp = api.call_api(*api.param_serialize("GET", f"/api/v1/namespaces/{ns}/configmaps",
                                                  query_params=[("watch", "true"), ("resourceVersion", "1")],
                                                  auth_settings=["BearerToken"]))
        resp.read()
        ev = json.loads(resp.data.decode().splitlines()[0])
    finally:
        store.floor = saved
    assert ev["type"] == "ERROR"
    assert ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
    assert ev["object"]["message"].startswith("too old resource version: 1 (")


def _raw_watch(cluster: Any, path: str, params: list[tuple[str, str]], stop_after: float) -> list[dict[str, Any]]:
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(cluster.dir / "ca.crt"))
    qs = "&".join(f"{k}={v}" for k, v in params)
    req = urllib.request.Request(f"{cluster.srv.url}{path}?{qs}",
                                 headers={"Authorization": f"Bearer {cluster.srv.pki.token}"})
    out = []
    deadline = time.monotonic() + stop_after
    with urllib.request.urlopen(req, context=ctx, timeout=stop_after + 5) as resp:
        for line in resp:
            out.append(json.loads(line))
            if time.monotonic() > deadline:
                break
    return out


def test_bookmarks_and_timeout(cluster: Any) -> None:
    ns = cluster.namespace("bm")
    core = client.CoreV1Api(cluster.client())
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    events = _raw_watch(cluster, f"/api/v1/namespaces/{ns}/configmaps",
                        [("watch", "1"), ("allowWatchBookmarks", "true"), ("resourceVersion", rv), ("timeoutSeconds", "3")], 10)
    # the test server sends bookmarks every second; the stream ends at timeoutSeconds
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert len(bookmarks) >= 2
    assert bookmarks[0]["object"]["kind"] == "ConfigMap" and int(bookmarks[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_send_initial_events(cluster: Any) -> None:
    ns = cluster.namespace("sie")
    core = client.CoreV1Api(cluster.client())
    core.create_namespaced_config_map(ns, {"metadata": {"name": "one"}})
    events = _raw_watch(cluster, f"/api/v1/namespaces/{ns}/configmaps",
                        [("watch", "1"), ("allowWatchBookmarks", "true"), ("sendInitialEvents", "true"),
                         ("resourceVersionMatch", "NotOlderThan"), ("timeoutSeconds", "1")], 5)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "one"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_all_namespaces_with_field_selector(cluster: Any) -> None:
    ns = cluster.namespace("wall")
    core = client.CoreV1Api(cluster.client())
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}})
    core.create_namespaced_pod(ns, {"metadata": {"name": "q"}, "spec": {"nodeName": "n9", "containers": [{"name": "a", "image": "x"}]}})
    got = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_pod_for_all_namespaces, resource_version=rv, field_selector="spec.nodeName=n9", timeout_seconds=1)]
    assert got == [("ADDED", "q")]
