"""Translation: the mesh (a PushContext) + one proxy → its clusters, endpoints, listeners and routes.

Pure: the same snapshot and proxy always give the same config. Each resource is produced by one call
`make(builder, *args)` (e.g. `make(outbound_cluster, service, port)`): with the default `make` that is
just `builder(*args)` and you get Envoy-shaped dicts; the push server passes a `make` that caches the
serialized resource per (builder, args), so a Service that did not change is never translated twice
and proxies with the same view share the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from minimesh.pilot import authorization, clusters, listeners, mtls, routes, virtualservices
from minimesh.pilot.context import PushContext, Scope
from minimesh.pilot.model import Proxy, Service, ServicePort
from minimesh.pilot.protocol import Protocol, detect_protocol
from minimesh.pilot.sidecar import labels_match
from minimesh.xds import resources as xr

T = TypeVar("T")
Make = Callable[..., Any]


def plain(builder: Callable[..., T], *args: Any) -> T:
    return builder(*args)


def outbound_ports(scope: Scope) -> list[tuple[Service, ServicePort, Protocol]]:
    """Every (service, port, protocol) the scoped proxy may call; UDP is not proxied."""
    out = []
    for svc in scope.services:
        for port in svc.ports:
            protocol = detect_protocol(port)
            if protocol is not Protocol.UDP:
                out.append((svc, port, protocol))
    return out


def inbound_ports(ctx: PushContext, proxy: Proxy) -> tuple[tuple[int, Protocol], ...]:
    """(target port, protocol) of every Service port that selects this proxy's pod.

    A named targetPort is looked up among the pod's container ports (from the Pod object).
    """
    pod = ctx.pod(proxy)
    memo_key = ("inbound", proxy.namespace, proxy.labels, pod.ports if pod else None)
    memo = ctx._memo.get(memo_key)  # replicas of one workload share the answer within a snapshot
    if memo is not None:
        return memo  # type: ignore[no-any-return]
    found: dict[int, Protocol] = {}
    for svc in ctx.services_in(proxy.namespace):
        if not svc.selector or not labels_match(svc.selector, proxy.labels):
            continue
        for port in svc.ports:
            protocol = detect_protocol(port)
            if protocol is Protocol.UDP:
                continue
            target = port.target_port
            if isinstance(target, str):
                named = [c.port for c in (pod.ports if pod else ()) if c.name == target]
                if not named:
                    continue  # cannot resolve the name (yet): no inbound chain for it
                target = named[0]
            found.setdefault(target, protocol)
    result = ctx._memo[memo_key] = tuple(sorted(found.items()))
    return result


def client_tls(ctx: PushContext, namespace: str, svc: Service, port: ServicePort) -> tuple[Any, ...]:
    """Stage 6: how a proxy in `namespace` secures calls to svc:port (see mtls.py): the identities the
    server may present, and a DestinationRule's tls mode and subjectAltNames."""
    key = ("client-tls", namespace, svc.key, port.port)
    found = ctx._memo.get(key)
    if found is None:
        ids_key = ("mtls-identities", svc.key)
        ids = ctx._memo.get(ids_key)
        if ids is None:
            ids = ctx._memo[ids_key] = mtls.service_identities(svc, ctx.service_slices(svc), ctx.pods)
        mode, sans = mtls.destination_tls(ctx.configs.get(mtls.DESTINATION_RULE, ()), namespace, svc, port.port)
        found = ctx._memo[key] = (ids, mode, sans)
    return found  # type: ignore[no-any-return]


def inbound_port_modes(ctx: PushContext, proxy: Proxy) -> tuple[tuple[int, Protocol, mtls.Mode], ...]:
    """Stage 6: (target port, protocol, PeerAuthentication mode) of the pod's inbound ports. Proxies of one
    view share listeners only when these are equal too (a policy may select some workloads only)."""
    key = ("inbound-modes", proxy.namespace, proxy.labels, inbound_ports(ctx, proxy))
    found = ctx._memo.get(key)
    if found is None:
        found = ctx._memo[key] = mtls.inbound_port_modes(ctx.configs.get(mtls.PEER_AUTHENTICATION, ()),
                                                         proxy.namespace, proxy.label_map(), inbound_ports(ctx, proxy))
    return found  # type: ignore[no-any-return]


def build_clusters(ctx: PushContext, proxy: Proxy, make: Make = plain) -> list[Any]:
    """CDS: outbound clusters for what the proxy may call, inbound ones for its pod, and the fallbacks.
    Outbound clusters carry auto mTLS (stage 6, mtls.py) around the lab-04 cluster."""
    scope = ctx.scope(proxy)
    out = [make(mtls.outbound_cluster, svc, port, *client_tls(ctx, proxy.namespace, svc, port))
           for svc, port, _ in outbound_ports(scope)]
    out += [make(clusters.inbound_cluster, port) for port, _ in inbound_ports(ctx, proxy)]
    out += [make(clusters.passthrough_cluster), make(clusters.blackhole_cluster),
            make(clusters.inbound_passthrough_cluster)]
    return out


def build_load_assignments(ctx: PushContext, names: Iterable[str], make: Make = plain) -> list[Any]:
    """EDS: the assignment of each requested cluster that exists (unknown names are skipped)."""
    index = ctx.cluster_index()
    out = []
    for name in names:
        found = index.get(name)
        if found is not None:
            svc, port = found
            slices = ctx.service_slices(svc)
            secured = mtls.mtls_endpoints(svc, slices, ctx.pods, ctx.configs.get(mtls.PEER_AUTHENTICATION, ()),
                                          port.name)  # stage 6: endpoints with a sidecar get mTLS
            out.append(make(mtls.load_assignment, svc, port, slices, secured))
    return out


def build_listeners(ctx: PushContext, proxy: Proxy, make: Make = plain) -> list[Any]:
    """LDS: virtualOutbound, virtualInbound (with stage 6's mTLS chains and stage 7's RBAC filters),
    `0.0.0.0_<port>` per HTTP port, `<ip>_<port>` per TCP port."""
    scope = ctx.scope(proxy)
    out = [make(listeners.virtual_outbound, scope.outbound_policy),
           make(authorization.virtual_inbound, inbound_port_modes(ctx, proxy),
                authorization.workload_policies(ctx, proxy))]
    http_ports: set[int] = set()
    for svc, port, protocol in outbound_ports(scope):
        if protocol.is_http:
            http_ports.add(port.port)
        elif svc.cluster_ip:  # a headless TCP service has no address to listen on
            out.append(make(listeners.outbound_tcp_listener, svc, port))
    out += [make(listeners.outbound_http_listener, p) for p in sorted(http_ports)]
    return out


def build_routes(ctx: PushContext, proxy: Proxy, names: Iterable[str], make: Make = plain) -> list[Any]:
    """RDS: route configuration `<port>` for each requested HTTP port."""
    scope = ctx.scope(proxy)
    by_port: dict[int, list[tuple[Service, ServicePort]]] = {}
    for svc, port, protocol in outbound_ports(scope):
        if protocol.is_http:
            by_port.setdefault(port.port, []).append((svc, port))
    all_vs = ctx.configs.get("VirtualService", ())
    out = []
    for name in names:
        if name.isdigit() and int(name) in by_port:
            port = int(name)
            services = tuple(by_port[port])
            vs = tuple(v for v in all_vs if any(virtualservices.applies_to(v, s) for s, _ in services))
            args = (port, services, proxy.namespace, scope.outbound_policy, *((vs,) if vs else ()))
            out.append(make(routes.route_configuration, *args))
    return out


def subscriptions(ctx: PushContext, proxy: Proxy) -> tuple[list[str], list[str]]:
    """The EDS and RDS names a proxy will ask for once it has its clusters and listeners."""
    ports = outbound_ports(ctx.scope(proxy))
    eds_names = [xr.outbound_cluster_name(p.port, s.hostname) for s, p, _ in ports]
    rds_names = sorted({xr.route_config_name(p.port) for _, p, proto in ports if proto.is_http}, key=int)
    return eds_names, rds_names


def translate(ctx: PushContext, proxy: Proxy, make: Make = plain) -> dict[str, list[Any]]:
    """The whole config of one proxy, by type URL (what it holds after CDS, EDS, LDS and RDS)."""
    eds_names, rds_names = subscriptions(ctx, proxy)
    return {
        xr.CLUSTER_TYPE: build_clusters(ctx, proxy, make),
        xr.ENDPOINT_TYPE: build_load_assignments(ctx, eds_names, make),
        xr.LISTENER_TYPE: build_listeners(ctx, proxy, make),
        xr.ROUTE_TYPE: build_routes(ctx, proxy, rds_names, make),
    }
