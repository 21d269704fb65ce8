"""A set of xDS resources to apply at once, and the validated state they merge into.

`Snapshot` carries any subset of the four resource types (None = keep what is there; a tuple, even empty,
replaces all dynamic resources of that type, like a state-of-the-world xDS response). `Resources.merge`
returns a new state or raises ConfigError; nothing is applied until the whole state is valid.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from minimesh.proxy.config._reader import ConfigError, Node
from minimesh.proxy.config.bootstrap import Bootstrap
from minimesh.proxy.config.cluster import (
    Cluster,
    ClusterLoadAssignment,
    parse_cluster,
    parse_cluster_load_assignment,
)
from minimesh.proxy.config.listener import HttpConnectionManager, Listener, TcpProxy, parse_listener
from minimesh.proxy.config.route import RouteConfiguration, parse_route_configuration

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
KINDS = ("listeners", "clusters", "routes", "endpoints")
TYPE_URLS = {"listeners": LISTENER_TYPE, "clusters": CLUSTER_TYPE, "routes": ROUTE_TYPE, "endpoints": ENDPOINT_TYPE}
KIND_OF_TYPE = {v: k for k, v in TYPE_URLS.items()}

R = TypeVar("R")
IMPLICIT_CLUSTERS = frozenset({"PassthroughCluster", "BlackHoleCluster"})  # always there (see upstream.py)


def parse_resource(type_url: str, data: object, path: str = "resource") -> Any:
    """Parse one xDS resource of `type_url` (for the ADS client)."""
    parsers = {LISTENER_TYPE: parse_listener, CLUSTER_TYPE: parse_cluster, ROUTE_TYPE: parse_route_configuration,
               ENDPOINT_TYPE: parse_cluster_load_assignment}
    if type_url not in parsers:
        raise ConfigError(path, f"unknown resource type {type_url!r}")
    return Node(data, path).done(parsers[type_url])


@dataclass(frozen=True)
class Snapshot:
    listeners: tuple[Listener, ...] | None = None
    clusters: tuple[Cluster, ...] | None = None
    routes: tuple[RouteConfiguration, ...] | None = None
    endpoints: tuple[ClusterLoadAssignment, ...] | None = None
    version_info: Mapping[str, str] = field(default_factory=dict)  # kind ("listeners", ...) -> version

    @classmethod
    def from_dict(cls, data: object) -> Snapshot:
        """`{listeners: [...], clusters: [...], routes: [...], endpoints: [...], version_info: {kind: v}}`."""
        root = Node(data, "")
        kinds: dict[str, Any] = {}
        for kind in KINDS:
            if root.has(kind):
                kinds[kind] = root.items(kind, lambda n, k=kind: n.done(_PARSERS[k]))
            else:
                root.ignore(kind)
        versions = root.mapping("version_info")
        for k, v in versions.items():
            if k not in KINDS or not isinstance(v, str):
                raise ConfigError(f"version_info.{k}", f"want one of {', '.join(KINDS)} mapped to a string")
        root.finish()
        return cls(**kinds, version_info=versions)


_PARSERS = {"listeners": parse_listener, "clusters": parse_cluster, "routes": parse_route_configuration,
            "endpoints": parse_cluster_load_assignment}


@dataclass(frozen=True, slots=True)
class Entry(Generic[R]):
    """One resource with where it came from (static bootstrap or dynamic apply) and when."""

    resource: R
    static: bool
    version_info: str = ""
    last_updated: float = 0.0


def _name(kind: str, r: Any) -> str:
    return r.cluster_name if kind == "endpoints" else r.name


@dataclass(frozen=True)
class Resources:
    """The proxy's whole config: resources by kind and name, plus the last version applied per kind."""

    listeners: Mapping[str, Entry[Listener]] = field(default_factory=dict)
    clusters: Mapping[str, Entry[Cluster]] = field(default_factory=dict)
    routes: Mapping[str, Entry[RouteConfiguration]] = field(default_factory=dict)
    endpoints: Mapping[str, Entry[ClusterLoadAssignment]] = field(default_factory=dict)
    version_info: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False

    @classmethod
    def from_bootstrap(cls, boot: Bootstrap) -> Resources:
        now = time.time()
        state = cls(
            listeners=_index("listeners", boot.listeners, static=True, version="", now=now),
            clusters=_index("clusters", boot.clusters, static=True, version="", now=now),
            strict=True)
        state.validate()
        return state

    def merge(self, snap: Snapshot) -> Resources:
        """The state after applying `snap` (validated; raises ConfigError, self is unchanged)."""
        now = time.time()
        new: dict[str, Mapping[str, Entry[Any]]] = {}
        versions = dict(self.version_info)
        for kind in KINDS:
            incoming = getattr(snap, kind)
            current: Mapping[str, Entry[Any]] = getattr(self, kind)
            if incoming is None:
                new[kind] = current
                continue
            version = snap.version_info.get(kind, "")
            fresh = _index(kind, incoming, static=False, version=version, now=now)
            for name in fresh:
                if name in current and current[name].static:
                    raise ConfigError(f"{kind}[{name!r}]", "a static (bootstrap) resource of that name exists; "
                                      "static resources cannot be replaced")
            merged = {n: e for n, e in current.items() if e.static}
            for name, entry in fresh.items():
                old = current.get(name)
                # unchanged resources keep their version and timestamp, like Envoy's config_dump
                merged[name] = old if old is not None and old.resource == entry.resource else entry
            new[kind] = MappingProxyType(merged)
            versions[kind] = version
        state = Resources(new["listeners"], new["clusters"], new["routes"], new["endpoints"],
                          MappingProxyType(versions), strict=False)
        state.validate()
        return state

    def validate(self) -> None:
        bound: dict[tuple[str, int, bool], str] = {}
        for name, e in self.listeners.items():
            lst = e.resource
            key = (lst.address.address, lst.address.port_value, lst.bind_to_port)
            if key in bound and lst.address.port_value != 0:
                raise ConfigError(f"listeners[{name!r}].address",
                                  f"{lst.address.hostport} is already used by listener {bound[key]!r}")
            bound[key] = name
            for ci, chain in enumerate(lst.all_chains()):
                where = f"listeners[{name!r}].filter_chains[{ci}].filters[{len(chain.filters) - 1}]"
                cfg = chain.terminal.config
                if isinstance(cfg, TcpProxy) and self.strict and cfg.cluster not in self.clusters \
                        and cfg.cluster not in IMPLICIT_CLUSTERS:
                    raise ConfigError(where, f"unknown cluster {cfg.cluster!r}")
                if isinstance(cfg, HttpConnectionManager):
                    rc = cfg.route_config
                    if rc is None and self.strict and cfg.rds_route_config_name not in self.routes:
                        raise ConfigError(where, f"unknown route configuration {cfg.rds_route_config_name!r}")
                    if rc is not None and (rc.validate_clusters if rc.validate_clusters is not None else self.strict):
                        self._check_clusters(rc, f"{where}.route_config")
        for name, e in self.routes.items():
            if e.resource.validate_clusters:
                self._check_clusters(e.resource, f"routes[{name!r}]")

    def _check_clusters(self, rc: RouteConfiguration, where: str) -> None:
        missing = sorted(rc.cluster_names() - set(self.clusters) - IMPLICIT_CLUSTERS)
        if missing:
            raise ConfigError(where, f"route to unknown cluster {missing[0]!r} "
                              f"(known: {', '.join(sorted(self.clusters)) or 'none'})")

    def route_config(self, name: str) -> RouteConfiguration | None:
        e = self.routes.get(name)
        return e.resource if e else None

    def load_assignment(self, cluster: Cluster) -> ClusterLoadAssignment | None:
        if cluster.type != "EDS":
            return cluster.load_assignment
        e = self.endpoints.get(cluster.eds_name)
        return e.resource if e else None


def _index(kind: str, items: tuple[Any, ...], *, static: bool, version: str, now: float) -> Mapping[str, Entry[Any]]:
    out: dict[str, Entry[Any]] = {}
    for i, r in enumerate(items):
        name = _name(kind, r)
        if not name:
            raise ConfigError(f"{kind}[{i}].name", "required field is missing")
        if name in out:
            raise ConfigError(f"{kind}[{i}].name", f"duplicate name {name!r}")
        out[name] = Entry(r, static, version, now)
    return MappingProxyType(out)
