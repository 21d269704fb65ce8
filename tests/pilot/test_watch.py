"""The push server against a real Kubernetes API: the kit's own API server on loopback (HTTPS, throwaway
PKI), driven through the official client. The mesh CRDs are installed from minimesh/manifests/crds."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes import client, config

import minimesh
from minimesh.pilot.server import DiscoveryServer, serve_grpc
from minimesh.pilot.watch import KubeWatcher
from minimesh.xds import resources as xr
from minimesh.xds.backoff import Backoff
from minimesh.xds.client import AdsClient

CRD_DIR = Path(minimesh.__file__).parent / "manifests" / "crds"


def _apiserver_support() -> Any:
    """The API-server test helpers (tests/apiserver/conftest.py), loaded by path."""
    name = "mm_apiserver_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "apiserver" / "conftest.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    support = _apiserver_support()
    d = tmp_path_factory.mktemp("pilot-apiserver")
    pki = support.make_pki(d)
    (d / "pods").mkdir()
    srv = support.ServerThread(pki, d / "etcd.sqlite3", d / "pods", bookmark_interval=1.0)
    srv.start()
    path = support.write_kubeconfig(d / "kubeconfig", srv.url, pki.ca_cert, pki.token)
    try:
        api = config.new_client_from_config(config_file=str(path))
        ext = client.ApiextensionsV1Api(api)
        for f in sorted(CRD_DIR.glob("*.yaml")):
            ext.create_custom_resource_definition(yaml.safe_load(f.read_text()))
        yield path
    finally:
        srv.close()


def fresh(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].pop("resourceVersion", None)  # a create must not carry one
    return obj


def apply_bookinfo_slice(api: client.ApiClient, ns: str, mm: Any) -> None:
    core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    svc = fresh(mm.service("details", ns=ns, ip=None))
    del svc["spec"]["clusterIP"]  # let the API server allocate one
    core.create_namespaced_service(ns, svc)
    disc.create_namespaced_endpoint_slice(ns, mm.endpoint_slice("details", ns=ns, ips=["10.244.7.5"]))
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "networking.minimesh.io", "v1", ns, "sidecars", fresh(mm.sidecar("default", ns, ["./*", "mesh-system/*"])))


def test_watches_feed_the_push_server_and_changes_reach_the_proxy(arun, mm, kubeconfig: Path) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    ns = f"pilot-{uuid.uuid4().hex[:6]}"
    apply_bookinfo_slice(api, ns, mm)

    async def body() -> None:
        ds = DiscoveryServer(debounce_quiet=0.05, debounce_max=0.5)
        ds.start()
        synced = asyncio.Event()
        watcher = KubeWatcher(config.new_client_from_config(config_file=str(kubeconfig)), asyncio.get_running_loop(),
                              on_replace=ds.replace, on_event=ds.apply, on_synced=synced.set, retry_delay=0.5)
        watcher.start()
        server, port = await serve_grpc(ds, "127.0.0.1", 0)
        rec = mm.Recorder()
        ads = AdsClient(f"127.0.0.1:{port}", mm.node("productpage-v1-x", ns=ns), rec, backoff=Backoff(0.05, 0.5))
        try:
            await asyncio.wait_for(synced.wait(), 20)
            await mm.eventually(lambda: f"{ns}/default" in ds.store.objects["Sidecar"], 20, "the Sidecar")
            hostname = f"details.{ns}.svc.cluster.local"
            cluster = f"outbound|9080||{hostname}"
            assert ds.ctx.service(hostname) is not None or ds.store.objects["Service"].get(f"{ns}/details")
            ads.start()

            def endpoints() -> list[str]:
                eds = rec.latest(xr.ENDPOINT_TYPE) or []
                return sorted(e["endpoint"]["address"]["socket_address"]["address"]
                              for c in eds if c["cluster_name"] == cluster
                              for loc in c.get("endpoints", []) for e in loc["lb_endpoints"])

            await mm.eventually(lambda: endpoints() == ["10.244.7.5"], 20, "the details endpoints")
            # The Sidecar scoped it: only its own namespace (no kubernetes.default service etc.).
            outbound = [c["name"] for c in rec.latest(xr.CLUSTER_TYPE) if c["name"].startswith("outbound|")]
            assert outbound == [cluster]

            # An endpoint change through the API reaches the proxy as an EDS-only push. First let the
            # pushes that the initial watch events queued drain (nothing debounced, nothing left to send),
            # so that only the slice change below can move the counters.
            await mm.eventually(
                lambda: ds.debouncer.deadline() is None
                and all(c.pending_push is None for c in ds.connections.values()), 20, "a quiet push server")
            cds_before = ds.metrics.pushes.labels("cds")._value.get()
            disc = client.DiscoveryV1Api(api)
            await asyncio.to_thread(disc.replace_namespaced_endpoint_slice, "details-abcde", ns,
                                    mm.endpoint_slice("details", ns=ns, ips=["10.244.7.5", "10.244.7.6"]))
            await mm.eventually(lambda: endpoints() == ["10.244.7.5", "10.244.7.6"], 20, "the new endpoint")
            assert ds.metrics.pushes.labels("cds")._value.get() == cds_before

            # Deleting the service removes its cluster.
            await asyncio.to_thread(client.CoreV1Api(api).delete_namespaced_service, "details", ns)
            await mm.eventually(lambda: not any(c["name"] == cluster for c in rec.latest(xr.CLUSTER_TYPE)), 20,
                                "the cluster to go away")
        finally:
            await ads.stop()
            watcher.stop()
            await ds.stop()
            await server.stop(0)

    arun(body())


def test_pilot_main_serves_ads_and_debug_from_a_kubeconfig(mm, kubeconfig: Path, tmp_path: Path) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    ns = f"pilot-{uuid.uuid4().hex[:6]}"
    apply_bookinfo_slice(api, ns, mm)
    log = tmp_path / "pilot.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "minimesh.pilot", "--kubeconfig", str(kubeconfig), "--listen",
                                 "127.0.0.1", "--grpc-port", "0", "--http-port", "0"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ})
    try:
        deadline = time.monotonic() + 20
        ports = None
        while ports is None:
            found = re.search(r"ADS on 127\.0\.0\.1:(\d+), debug/metrics on 127\.0\.0\.1:(\d+)", log.read_text())
            if found:
                ports = int(found.group(1)), int(found.group(2))
            elif time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"pilot did not start:\n{log.read_text()}")
            else:
                time.sleep(0.05)
        grpc_port, http_port = ports

        async def body() -> None:
            async with aiohttp.ClientSession() as s:
                async def ready() -> int:
                    async with s.get(f"http://127.0.0.1:{http_port}/ready") as r:
                        return r.status

                for _ in range(200):
                    if await ready() == 200:
                        break
                    await asyncio.sleep(0.05)
                assert await ready() == 200
            rec = mm.Recorder()
            ads = AdsClient(f"127.0.0.1:{grpc_port}", mm.node("productpage-v1-x", ns=ns), rec, backoff=Backoff(0.05, 0.5))
            ads.start()
            try:
                await mm.eventually(lambda: any(c["name"] == f"outbound|9080||details.{ns}.svc.cluster.local"
                                                for c in rec.latest(xr.CLUSTER_TYPE) or []), 20, "the details cluster")
            finally:
                await ads.stop()

        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        proc.terminate()
        try:
            assert proc.wait(10) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
