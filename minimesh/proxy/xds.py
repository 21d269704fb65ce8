"""The proxy's side of xDS: ADS updates from the push server become `Proxy.apply(Snapshot)` calls.

A bootstrap with `dynamic_resources.ads_config` (Envoy's and Istio's shape) names a static cluster, by
convention `xds-grpc`, whose endpoint is the push server:

    dynamic_resources:
      ads_config: {api_type: GRPC, transport_api_version: V3,
                   grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]}
      cds_config: {ads: {}, resource_api_version: V3}
      lds_config: {ads: {}, resource_api_version: V3}
    static_resources:
      clusters: [{name: xds-grpc, type: STRICT_DNS, load_assignment: ...minimeshd.mesh-system.svc:15010}]

`XdsPlan.from_bootstrap` reads that (pure; a bad section is a ConfigError naming the field);
`XdsRuntime` runs the ADS client (`minimesh.xds.client`, reconnecting with back-off) and feeds what
arrives through `Warming`, Envoy's warming rules as a pure state machine:

- a response is parsed and validated against the proxy's config first: an error raises, and the client
  NACKs it with the error text while the proxy keeps its last good config;
- a CDS update whose EDS clusters have no ClusterLoadAssignment yet waits (warms) until EDS delivers
  them; an LDS update whose HTTP listeners name route configurations not received yet waits for RDS;
  after WARM_TIMEOUT (Envoy's initial_fetch_timeout) it is applied anyway (no endpoints: 503 UH; no
  routes: 404 NR), so one missing resource cannot hold everything back forever;
- nothing is applied before the first complete set (CDS+EDS and LDS+RDS): then all of it at once, and
  `/ready` turns LIVE (Envoy's init manager).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minimesh.proxy.config import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Bootstrap,
    ConfigError,
    HttpConnectionManager,
    Resources,
    Snapshot,
    parse_resource,
)

if TYPE_CHECKING:
    from minimesh.proxy.server import Proxy
    from minimesh.xds.client import AdsClient

log = logging.getLogger("minimesh.proxy.xds")

KIND = {CLUSTER_TYPE: "clusters", ENDPOINT_TYPE: "endpoints", LISTENER_TYPE: "listeners", ROUTE_TYPE: "routes"}
SHORT = {"clusters": "cds", "endpoints": "eds", "listeners": "lds", "routes": "rds"}
WARM_TIMEOUT = 15.0  # seconds; Envoy's default initial_fetch_timeout


# ---- the bootstrap's ADS section (pure) -----------------------------------------------------------


@dataclass(frozen=True)
class XdsPlan:
    """Where the push server is and how to reach it, read from the bootstrap."""

    host: str
    port: int
    cluster: str  # the static cluster that names the server (xds-grpc)
    tls: Any = None  # the cluster's UpstreamTlsContext, if any (stage 6: mTLS to the control plane)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def from_bootstrap(cls, boot: Bootstrap) -> XdsPlan | None:
        """None without `dynamic_resources`; ConfigError for anything this proxy cannot follow."""
        dyn = boot.dynamic_resources
        if not dyn:
            return None
        where = "dynamic_resources"
        for key in ("cds_config", "lds_config"):
            source = dyn.get(key)
            if source is not None and "ads" not in source:
                raise ConfigError(f"{where}.{key}", "only ADS is supported: want {ads: {}}")
        ads = dyn.get("ads_config")
        if not ads:
            raise ConfigError(f"{where}.ads_config", "required when cds_config/lds_config are set (only ADS is supported)")
        api = ads.get("api_type", "GRPC")
        if api != "GRPC":
            raise ConfigError(f"{where}.ads_config.api_type", f"{api!r} is not supported, want GRPC (state of the world)")
        services = ads.get("grpc_services")
        if not isinstance(services, list) or len(services) != 1 or not isinstance(services[0], Mapping):
            raise ConfigError(f"{where}.ads_config.grpc_services", "want exactly one grpc service")
        target = services[0].get("envoy_grpc")
        name = target.get("cluster_name") if isinstance(target, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.ads_config.grpc_services[0].envoy_grpc.cluster_name",
                              "required: the static cluster of the push server (e.g. xds-grpc)")
        clusters = {c.name: c for c in boot.clusters}
        cluster = clusters.get(name)
        if cluster is None:
            raise ConfigError(f"{where}.ads_config.grpc_services[0].envoy_grpc.cluster_name",
                              f"no static cluster {name!r} (static clusters: {', '.join(sorted(clusters)) or 'none'})")
        endpoints = cluster.load_assignment.all_endpoints() if cluster.load_assignment else []
        if cluster.type not in ("STATIC", "STRICT_DNS") or not endpoints:
            raise ConfigError(f"static_resources.clusters[{name!r}]",
                              "the xDS cluster needs type STATIC or STRICT_DNS and one endpoint (the push server)")
        address = endpoints[0][1].address
        return cls(address.address, address.port_value, name, cluster.transport_socket)


# ---- warming (pure) -------------------------------------------------------------------------------


@dataclass
class Pending:
    items: tuple[Any, ...]
    version: str
    since: float  # when this kind started waiting (kept across newer versions of the same kind)


def eds_names(clusters: tuple[Any, ...]) -> set[str]:
    return {c.eds_name for c in clusters if c.type == "EDS"}


def rds_names(listeners: tuple[Any, ...]) -> set[str]:
    out = set()
    for lst in listeners:
        for chain in lst.all_chains():
            cfg = chain.terminal.config
            if isinstance(cfg, HttpConnectionManager) and cfg.route_config is None and cfg.rds_route_config_name:
                out.add(cfg.rds_route_config_name)
    return out


@dataclass
class Warming:
    """What has arrived but is not applied yet, and when it may be applied. No I/O, no clock of its own."""

    timeout: float = WARM_TIMEOUT
    pending: dict[str, Pending] = field(default_factory=dict)
    initialized: bool = False  # the first complete set has been applied

    def offer(self, kind: str, items: tuple[Any, ...], version: str, now: float) -> None:
        old = self.pending.get(kind)
        self.pending[kind] = Pending(items, version, old.since if old else now)

    def candidate(self) -> Snapshot:
        """Everything pending as one snapshot (to validate a new arrival against the rest)."""
        return Snapshot(**{k: p.items for k, p in self.pending.items()},
                        version_info={k: p.version for k, p in self.pending.items()})

    def _known(self, kind: str, applied: Resources) -> set[str]:
        p = self.pending.get(kind)
        if p is not None:
            return {(r.cluster_name if kind == "endpoints" else r.name) for r in p.items}
        return set(getattr(applied, kind))

    def _warm(self, kind: str, applied: Resources, now: float) -> bool:
        p = self.pending[kind]
        if now - p.since >= self.timeout:
            return True
        if kind == "clusters":
            return eds_names(p.items) <= self._known("endpoints", applied)
        if kind == "listeners":
            return rds_names(p.items) <= self._known("routes", applied)
        return True  # endpoints and routes apply as they come

    def missing(self, applied: Resources) -> dict[str, list[str]]:
        """What the waiting kinds still wait for (for logs and tests)."""
        out = {}
        if "clusters" in self.pending:
            out["endpoints"] = sorted(eds_names(self.pending["clusters"].items) - self._known("endpoints", applied))
        if "listeners" in self.pending:
            out["routes"] = sorted(rds_names(self.pending["listeners"].items) - self._known("routes", applied))
        return {k: v for k, v in out.items() if v}

    def ready(self, applied: Resources, now: float) -> Snapshot | None:
        """The snapshot to apply now, or None while everything pending must wait."""
        if not self.pending:
            return None
        if not self.initialized:
            # Envoy's init manager: the first config is CDS (warmed by EDS) and LDS (warmed by RDS), all at once.
            if not {"clusters", "listeners"} <= set(self.pending):
                return None
            if not all(self._warm(k, applied, now) for k in self.pending):
                return None
            take = list(self.pending)
        else:
            take = [k for k in self.pending if self._warm(k, applied, now)]
        if not take:
            return None
        return Snapshot(**{k: self.pending[k].items for k in take},
                        version_info={k: self.pending[k].version for k in take})

    def deadline(self) -> float | None:
        """When the oldest waiting kind stops waiting (the caller re-checks then)."""
        return min((p.since + self.timeout for p in self.pending.values()), default=None)

    def applied(self, snap: Snapshot) -> None:
        for kind in KIND.values():
            if getattr(snap, kind) is not None:
                self.pending.pop(kind, None)
        self.initialized = True

    def dropped(self, snap: Snapshot) -> None:
        """The proxy refused `snap`: forget it (the push server re-sends on its next push)."""
        for kind in KIND.values():
            if getattr(snap, kind) is not None:
                self.pending.pop(kind, None)


# ---- the I/O: ADS client -> Proxy.apply -----------------------------------------------------------


def parse_update(type_url: str, resources: list[Any]) -> tuple[str, tuple[Any, ...]]:
    """(kind, parsed resources) of one ADS update; ConfigError names the resource and the field."""
    kind = KIND.get(type_url)
    if kind is None:
        raise ConfigError(type_url, "this proxy does not use that resource type")
    parsed = []
    for i, data in enumerate(resources):
        key = "cluster_name" if kind == "endpoints" else "name"
        name = data.get(key) if isinstance(data, Mapping) else None
        parsed.append(parse_resource(type_url, data, f"{kind}[{name!r}]" if name else f"{kind}[{i}]"))
    return kind, tuple(parsed)


class XdsRuntime:
    """Runs the ADS client for one Proxy. `start()` after `proxy.start()`, `await stop()` at the end."""

    def __init__(self, proxy: Proxy, plan: XdsPlan, *, warm_timeout: float = WARM_TIMEOUT) -> None:
        self.proxy = proxy
        self.plan = plan
        self.warming = Warming(warm_timeout)
        self.client: AdsClient | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        cp = proxy.stats.scope("control_plane")
        self.g_connected = cp.gauge("connected_state")
        self.stats = {short: {s: cp.counter(f"{short}.{s}") for s in ("update_attempt", "update_success",
                                                                        "update_rejected")}
                      for short in SHORT.values()}

    def start(self) -> None:
        from minimesh.xds.backoff import Backoff
        from minimesh.xds.client import AdsClient

        node = self.proxy.node
        ctx = None
        if self.plan.tls is not None:
            from minimesh.proxy.tls import client_context

            ctx = client_context(self.plan.tls)
        self.client = AdsClient(self.plan.address, {"id": node.id, "cluster": node.cluster,
                                                    "metadata": dict(node.metadata),
                                                    "user_agent_name": "minimesh-proxy"},
                                self.on_update, ssl=ctx, server_hostname=getattr(self.plan.tls, "sni", None) or None,
                                backoff=Backoff(0.5, 15.0))
        log.info("xds: ADS to %s (cluster %s)", self.plan.address, self.plan.cluster)
        self.client.start()
        self._spawn(self._track_connection())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.client is not None:
            await self.client.stop()

    async def _track_connection(self) -> None:
        assert self.client is not None
        client = self.client
        while True:
            state = client.connected
            self.g_connected.set(1 if state else 0)
            await client.wait_until(lambda c, s=state: c.connected != s, timeout=None)  # type: ignore[arg-type]

    async def on_update(self, type_url: str, version: str, resources: list[Any]) -> None:
        """One ADS response (the complete set of its type). Raising = NACK with the message."""
        short = SHORT.get(KIND.get(type_url, ""), "other")
        counters = self.stats.get(short)
        if counters:
            counters["update_attempt"].inc()
        try:
            kind, items = parse_update(type_url, resources)
            async with self._lock:
                # Validate against the applied config plus everything still waiting (pure; changes nothing).
                trial = Warming(self.warming.timeout, dict(self.warming.pending))
                trial.offer(kind, items, version, time.monotonic())
                self.proxy.resources.merge(trial.candidate())
                self.warming.offer(kind, items, version, time.monotonic())
                await self._apply_ready(raise_errors=True)
        except ConfigError:
            if counters:
                counters["update_rejected"].inc()
            raise
        if counters:
            counters["update_success"].inc()

    async def _apply_ready(self, *, raise_errors: bool) -> None:
        snap = self.warming.ready(self.proxy.resources, time.monotonic())
        if snap is not None:
            try:
                await self.proxy.apply(snap)
            except ConfigError as e:
                self.warming.dropped(snap)
                log.warning("xds: config rejected (%s): %s", ", ".join(
                    f"{SHORT[k]} {v}" for k, v in snap.version_info.items()), e)
                if raise_errors:
                    raise
            else:
                first = not self.warming.initialized
                self.warming.applied(snap)
                log.log(logging.INFO if first else logging.DEBUG, "xds: applied %s%s", ", ".join(
                    f"{SHORT[k]} {v}" for k, v in snap.version_info.items()), " (ready)" if first else "")
        waiting = self.warming.missing(self.proxy.resources)
        if waiting:
            log.debug("xds: warming, waiting for %s", waiting)
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.warming.deadline()
        if due is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0.0, due - time.monotonic()) + 0.01,
                                       lambda: self._spawn(self._expire()))

    async def _expire(self) -> None:
        async with self._lock:
            if self.warming.pending:
                log.warning("xds: warming timed out after %gs; applying without %s", self.warming.timeout,
                            self.warming.missing(self.proxy.resources) or "nothing")
            await self._apply_ready(raise_errors=False)


def start_xds(proxy: Proxy, plan: XdsPlan | None = None) -> XdsRuntime | None:
    """Start ADS when the proxy's bootstrap asks for it (after `proxy.start()`); None otherwise."""
    plan = plan or XdsPlan.from_bootstrap(proxy.bootstrap)
    if plan is None:
        return None
    runtime = XdsRuntime(proxy, plan)
    runtime.start()
    return runtime
