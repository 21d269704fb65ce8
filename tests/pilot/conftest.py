"""Shared pieces for the push-server tests: Kubernetes objects built with the official client's models
(serialized exactly as the API server sends them), and a harness that runs the real push server (grpcio
ADS + aiohttp debug) on loopback with ports picked by the kernel."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client as k

from minimesh.pilot.debug import serve_http
from minimesh.pilot.server import DiscoveryServer, serve_grpc
from minimesh.xds import node as xnode
from minimesh.xds.backoff import Backoff
from minimesh.xds.client import AdsClient

_API = k.ApiClient()


def as_json(obj: Any) -> dict[str, Any]:
    return _API.sanitize_for_serialization(obj)  # type: ignore[no-any-return]


def service(name: str, ns: str = "default", ip: str | None = "10.96.0.10", ports: Any = (("http", 9080),),
            selector: dict[str, str] | None = None) -> dict[str, Any]:
    return as_json(k.V1Service(
        metadata=k.V1ObjectMeta(name=name, namespace=ns, resource_version="1"),
        spec=k.V1ServiceSpec(cluster_ip=ip or "None", selector=selector if selector is not None else {"app": name},
                             ports=[k.V1ServicePort(name=n, port=p, target_port=p) for n, p in ports]),
    ))


def endpoint_slice(svc: str, ns: str = "default", ips: Any = ("10.244.0.5",), port: int = 9080,
                   port_name: str = "http", ready: Any = True, name: str | None = None) -> dict[str, Any]:
    readiness = ready if isinstance(ready, list | tuple) else [ready] * len(ips)
    return as_json(k.V1EndpointSlice(
        metadata=k.V1ObjectMeta(name=name or f"{svc}-abcde", namespace=ns,
                                labels={"kubernetes.io/service-name": svc}),
        address_type="IPv4",
        ports=[k.DiscoveryV1EndpointPort(name=port_name, port=port, protocol="TCP")],
        endpoints=[k.V1Endpoint(addresses=[ip], conditions=k.V1EndpointConditions(ready=r))
                   for ip, r in zip(ips, readiness, strict=True)],
    ))


def pod(name: str, ns: str = "default", ip: str = "10.244.0.5", labels: dict[str, str] | None = None,
        ports: Any = (("http", 9080),)) -> dict[str, Any]:
    return as_json(k.V1Pod(
        metadata=k.V1ObjectMeta(name=name, namespace=ns, labels=labels or {}),
        spec=k.V1PodSpec(containers=[k.V1Container(name="app", image="app",
                                                   ports=[k.V1ContainerPort(name=n, container_port=p) for n, p in ports])]),
        status=k.V1PodStatus(pod_ip=ip),
    ))


def sidecar(name: str, ns: str, hosts: list[str], selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"egress": [{"hosts": hosts}]}
    if selector is not None:
        spec["workloadSelector"] = {"labels": selector}
    return {"apiVersion": "networking.minimesh.io/v1", "kind": "Sidecar",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"}, "spec": spec}


def node(pod_name: str, ns: str = "default", ip: str = "10.244.0.9", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return xnode.node_dict(ip, pod_name, ns, labels=labels or {"app": pod_name.split("-")[0]})


@dataclass
class Recorder:
    """An on_update that records deliveries and can be told to reject some (→ NACK)."""

    updates: list[tuple[str, str, list[Any]]] = field(default_factory=list)
    reject: Callable[[str, str, list[Any]], str | None] | None = None

    def __call__(self, type_url: str, version: str, resources: list[Any]) -> None:
        if self.reject is not None:
            why = self.reject(type_url, version, resources)
            if why:
                raise ValueError(why)
        self.updates.append((type_url, version, resources))

    def latest(self, type_url: str) -> list[Any] | None:
        for t, _, res in reversed(self.updates):
            if t == type_url:
                return res
        return None


class Harness:
    def __init__(self, quiet: float = 0.1, max_delay: float = 1.0) -> None:
        self.ds = DiscoveryServer(debounce_quiet=quiet, debounce_max=max_delay)
        self.clients: list[AdsClient] = []

    async def start(self) -> None:
        self.ds.start()
        self.grpc, self.port = await serve_grpc(self.ds, "127.0.0.1", 0)
        self.http, self.http_port = await serve_http(self.ds, "127.0.0.1", 0)

    async def close(self) -> None:
        for c in self.clients:
            await c.stop()
        await self.ds.stop()
        await self.grpc.stop(0)
        await self.http.cleanup()

    def load(self, *objs: tuple[str, dict[str, Any]]) -> None:
        """Feed objects and push right away (as after the initial list)."""
        for kind, obj in objs:
            self.ds.apply(kind, "ADDED", obj)
        self.flush()

    def flush(self) -> None:
        taken = self.ds.debouncer.take(time.monotonic() + 3600)
        if taken is not None:
            self.ds.push(taken[0])

    def client(self, node_dict: dict[str, Any], recorder: Recorder | None = None, **kw: Any) -> tuple[AdsClient, Recorder]:
        rec = recorder or Recorder()
        c = AdsClient(f"127.0.0.1:{self.port}", node_dict, rec, backoff=Backoff(0.02, 0.2), **kw)
        self.clients.append(c)
        c.start()
        return c, rec


@contextlib.asynccontextmanager
async def harness(**kw: Any) -> AsyncIterator[Harness]:
    h = Harness(**kw)
    await h.start()
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
def arun() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run(asyncio.wait_for(coro, 60))

    return run


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def mm() -> SimpleNamespace:
    """The helpers above, for test modules (conftest modules are not importable by name)."""
    return SimpleNamespace(service=service, endpoint_slice=endpoint_slice, pod=pod, sidecar=sidecar, node=node,
                           Recorder=Recorder, harness=harness, eventually=eventually, as_json=as_json)
