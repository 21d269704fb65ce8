"""mTLS in the translation (stage 6): PeerAuthentication modes, auto mTLS, and the TLS config Istio sends.

Server side (the pod's own inbound ports, listener `virtualInbound`), by the effective PeerAuthentication
mode of the workload and port:
- PERMISSIVE (the default): two chains on the port, told apart by the tls_inspector: TLS whose ClientHello
  offers the mesh ALPN `minimesh` → terminate mTLS (client certificate required, from the mesh root);
  anything else → plaintext, as before (a third chain passes other TLS through to the app);
- STRICT: only the mTLS chain: plaintext (and TLS without a mesh certificate) is closed;
- DISABLE: only plaintext.

Client side (auto mTLS, Istio's transport_socket_matches): every outbound cluster carries two matches,
`{tlsMode: minimesh}` → TLS with the workload certificate, SNI `outbound_.<port>_._.<host>`, ALPN
`minimesh` and the destination's SPIFFE identities as the allowed SANs; `{}` → plaintext. EDS marks each
endpoint whose pod has a sidecar (label `security.minimesh.io/tlsMode: minimesh`) and does not DISABLE
mTLS on that port with `tlsMode: minimesh`, so sidecars talk mTLS to sidecars and plaintext to the rest.

A DestinationRule's `trafficPolicy.tls` (Istio's client-side setting) overrides auto mTLS for its host:
`ISTIO_MUTUAL` → always mTLS, `DISABLE` → always plaintext, and `subjectAltNames` replaces the identities
the server must present (pin them, and any other identity is refused even with a valid mesh certificate).

Certificates come over SDS from the agent (`default`, `ROOTCA` on the `sds-grpc` cluster). PeerAuthentication
precedence (Istio): a workload policy (selector) beats the namespace policy beats the mesh-wide policy (root
namespace `mesh-system`, no selector); UNSET inherits; `portLevelMtls` (workload policies only) beats the
policy's own mode for that port; nothing at all → PERMISSIVE. Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from minimesh.pilot import clusters, listeners
from minimesh.pilot.model import Config, EndpointSlice, Pod, Service, ServicePort
from minimesh.pilot.protocol import Protocol
from minimesh.xds.resources import inbound_cluster_name, listener_name

ROOT_NAMESPACE = "mesh-system"
TRUST_DOMAIN = "cluster.local"
TLS_MODE_LABEL = "security.minimesh.io/tlsMode"  # set by the injector on pods with a sidecar
TLS_MODE = "minimesh"
MESH_ALPN = "minimesh"  # what a sidecar offers in its ClientHello (Istio: istio-peer-exchange, istio)
SDS_CLUSTER = "sds-grpc"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SOCKET_MATCH = "envoy.transport_socket_match"
TLS_TYPE_UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
TLS_TYPE_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
PEER_AUTHENTICATION = "PeerAuthentication"


class Mode(enum.Enum):
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


Labels = Mapping[str, str]


# ---- PeerAuthentication ---------------------------------------------------------------------------
def _selector(policy: Config) -> Mapping[str, str] | None:
    sel = (policy.spec or {}).get("selector")
    if not sel:
        return None
    return dict(sel.get("matchLabels") or {})


def _mode(value: Any) -> Mode | None:
    """A policy's `mode` (None for UNSET/absent: inherit)."""
    if isinstance(value, Mapping):
        value = value.get("mode")
    return Mode(value) if value in ("DISABLE", "PERMISSIVE", "STRICT") else None


def _oldest(policies: list[Config]) -> Config | None:
    # Istio picks the oldest when several apply at one level; minimesh's records have no timestamps:
    # the first by name is as deterministic
    return min(policies, key=lambda p: p.name) if policies else None


def effective_mode(policies: Iterable[Config], namespace: str, labels: Labels, port: int | None = None,
                   root_namespace: str = ROOT_NAMESPACE) -> Mode:
    """The PeerAuthentication mode for a workload (namespace + pod labels) on a target port."""
    workload, ns_wide, mesh = [], [], []
    for p in policies:
        if p.kind != PEER_AUTHENTICATION:
            continue
        sel = _selector(p)
        if p.namespace == namespace and sel is not None:
            if all(labels.get(k) == v for k, v in sel.items()):
                workload.append(p)
        elif p.namespace == namespace and sel is None:
            ns_wide.append(p)
        elif p.namespace == root_namespace and sel is None:
            mesh.append(p)
    chosen = [_oldest(workload), _oldest(ns_wide), _oldest(mesh)]
    w = chosen[0]
    if w is not None and port is not None:
        port_modes = (w.spec or {}).get("portLevelMtls") or {}
        found = _mode(port_modes.get(str(port)) or port_modes.get(port))  # type: ignore[call-overload]
        if found is not None:
            return found
    for p in chosen:
        if p is not None:
            found = _mode((p.spec or {}).get("mtls"))
            if found is not None:
                return found
    return Mode.PERMISSIVE


# ---- the TLS contexts -----------------------------------------------------------------------------
def sds_secret(name: str) -> dict[str, Any]:
    """An SDS secret from the agent (Istio's sds_config shape)."""
    return {"name": name, "sds_config": {
        "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                              "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}]},
        "resource_api_version": "V3"}}


def spiffe_id(namespace: str, service_account: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def sni(port: int, hostname: str) -> str:
    """Istio's SNI for mTLS to a service: `outbound_.9080_._.details.default.svc.cluster.local`."""
    return f"outbound_.{port}_._.{hostname}"


def upstream_tls(port: int, hostname: str, identities: Iterable[str]) -> dict[str, Any]:
    """UpstreamTlsContext of a sidecar calling `hostname:port`: present the workload certificate, verify
    the server against the mesh root and its SPIFFE id against the service's identities."""
    validation: dict[str, Any] = {}
    sans = sorted(set(identities))
    if sans:
        validation["match_subject_alt_names"] = [{"exact": s} for s in sans]
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": TLS_TYPE_UP,
        "sni": sni(port, hostname),
        "common_tls_context": {
            "alpn_protocols": [MESH_ALPN],
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            "tls_certificate_sds_secret_configs": [sds_secret(WORKLOAD_SECRET)],
            "combined_validation_context": {"default_validation_context": validation,
                                            "validation_context_sds_secret_config": sds_secret(ROOT_SECRET)},
        }}}


def downstream_tls() -> dict[str, Any]:
    """DownstreamTlsContext of an inbound mTLS chain: present the workload certificate, require one."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": TLS_TYPE_DOWN,
        "require_client_certificate": True,
        "common_tls_context": {
            "alpn_protocols": [MESH_ALPN],
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            "tls_certificate_sds_secret_configs": [sds_secret(WORKLOAD_SECRET)],
            "combined_validation_context": {"default_validation_context": {},
                                            "validation_context_sds_secret_config": sds_secret(ROOT_SECRET)},
        }}}


# ---- client side: auto mTLS -------------------------------------------------------------------------
def service_identities(service: Service, slices: Iterable[EndpointSlice], pods: Mapping[tuple[str, str], Pod],
                       trust_domain: str = TRUST_DOMAIN) -> tuple[str, ...]:
    """The SPIFFE ids of the pods behind a service (its endpoints' service accounts), sorted."""
    out = set()
    for eps in slices:
        for ep in eps.endpoints:
            pod = pods.get((service.namespace, ep.pod)) if ep.pod else None
            if pod is not None:
                out.add(spiffe_id(pod.namespace, pod.service_account, trust_domain))
    return tuple(sorted(out))


def with_auto_mtls(cluster: dict[str, Any], port: int, hostname: str, identities: tuple[str, ...]) -> dict[str, Any]:
    """An outbound cluster + Istio's auto-mTLS transport_socket_matches."""
    out = dict(cluster)
    out["transport_socket_matches"] = [
        {"name": f"tlsMode-{TLS_MODE}", "match": {"tlsMode": TLS_MODE},
         "transport_socket": upstream_tls(port, hostname, identities)},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": {"name": "envoy.transport_sockets.raw_buffer"}},
    ]
    return out


def mtls_endpoints(service: Service, slices: Iterable[EndpointSlice], pods: Mapping[tuple[str, str], Pod],
                   policies: Iterable[Config], slice_port_name: str) -> frozenset[str]:
    """Addresses of the service's endpoints to reach with mTLS: the pod has a sidecar and does not
    DISABLE mTLS on the port it serves."""
    policies = tuple(policies)
    out = set()
    for eps in slices:
        numbers = [p.port for p in eps.ports if p.name == slice_port_name]
        for ep in eps.endpoints:
            pod = pods.get((service.namespace, ep.pod)) if ep.pod else None
            if pod is None or dict(pod.labels).get(TLS_MODE_LABEL) != TLS_MODE:
                continue
            target = numbers[0] if numbers else None
            if effective_mode(policies, pod.namespace, dict(pod.labels), target) is Mode.DISABLE:
                continue
            out.update(ep.addresses)
    return frozenset(out)


def with_tls_mode(assignment: dict[str, Any], mtls_addresses: frozenset[str]) -> dict[str, Any]:
    """A ClusterLoadAssignment with `tlsMode: minimesh` on the endpoints in `mtls_addresses`."""
    out = dict(assignment)
    localities = []
    for loc in assignment.get("endpoints") or []:
        loc = dict(loc)
        eps = []
        for lb in loc.get("lb_endpoints") or []:
            ip = lb["endpoint"]["address"]["socket_address"]["address"]
            if ip in mtls_addresses:
                lb = {**lb, "metadata": {"filter_metadata": {SOCKET_MATCH: {"tlsMode": TLS_MODE}}}}
            eps.append(lb)
        loc["lb_endpoints"] = eps
        localities.append(loc)
    out["endpoints"] = localities
    return out


# ---- server side: inbound chains --------------------------------------------------------------------
def inbound_chains(port: int, protocol: Protocol, mode: Mode, network_filter: dict[str, Any]) -> list[dict[str, Any]]:
    """The filter chains of one inbound port for its mode (`network_filter`: the HCM or TCP proxy to the app)."""
    name = listener_name("0.0.0.0", port)
    mtls = {"name": f"{name}-mtls", "transport_socket": downstream_tls(), "filters": [network_filter],
            "filter_chain_match": {"destination_port": port, "transport_protocol": "tls",
                                   "application_protocols": [MESH_ALPN]}}
    plain = {"name": name, "filters": [network_filter],
             "filter_chain_match": {"destination_port": port, "transport_protocol": "raw_buffer"}}
    if mode is Mode.STRICT:
        return [mtls]
    if mode is Mode.DISABLE:
        return [{"name": name, "filters": [network_filter], "filter_chain_match": {"destination_port": port}}]
    # PERMISSIVE: mTLS from sidecars, plaintext from anyone, other TLS straight to the app
    passthrough = {"name": f"{name}-tls-passthrough",
                   "filter_chain_match": {"destination_port": port, "transport_protocol": "tls"},
                   "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                       "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                       "stat_prefix": inbound_cluster_name(port), "cluster": inbound_cluster_name(port)}}]}
    del protocol  # the app's protocol does not change the chains, only the network filter does
    return [mtls, plain, passthrough]


def inbound_port_modes(policies: Iterable[Config], namespace: str, labels: Labels,
                       ports: Iterable[tuple[int, Protocol]]) -> tuple[tuple[int, Protocol, Mode], ...]:
    policies = tuple(policies)
    return tuple((port, proto, effective_mode(policies, namespace, labels, port)) for port, proto in ports)


# ---- DestinationRule trafficPolicy.tls ---------------------------------------------------------------
DESTINATION_RULE = "DestinationRule"


def _dr_host_matches(rule: Config, service: Service) -> int:
    """0: no; else how specific the rule's host is for the service (exact FQDN beats a wildcard)."""
    host = str((rule.spec or {}).get("host") or "")
    if not host:
        return 0
    if "." not in host and host != "*":  # a short name, relative to the rule's namespace
        host = f"{host}.{rule.namespace}.svc.{service.domain}"
    if host == service.hostname:
        return 2
    if host == "*" or (host.startswith("*.") and service.hostname.endswith(host[1:])):
        return 1
    return 0


def destination_tls(configs: Iterable[Config], client_namespace: str, service: Service, port: int,
                    root_namespace: str = ROOT_NAMESPACE) -> tuple[str | None, tuple[str, ...]]:
    """(tls mode or None for auto, subjectAltNames) from the DestinationRule that applies (Istio's lookup
    order: the client's namespace, the service's, the root namespace; a port-level setting wins)."""
    rules = [c for c in configs if c.kind == DESTINATION_RULE]
    for ns in dict.fromkeys((client_namespace, service.namespace, root_namespace)):
        scored = [(_dr_host_matches(r, service), r.name, r) for r in rules if r.namespace == ns]
        scored = [t for t in scored if t[0]]
        if not scored:
            continue
        rule = max(scored, key=lambda t: (t[0], [-ord(ch) for ch in t[1]]))[2]
        policy = (rule.spec or {}).get("trafficPolicy") or {}
        tls = policy.get("tls") or {}
        for pls in policy.get("portLevelSettings") or []:
            if ((pls.get("port") or {}).get("number")) == port and pls.get("tls"):
                tls = pls["tls"]
        mode = tls.get("mode")
        return (mode if mode in ("ISTIO_MUTUAL", "DISABLE") else None), tuple(tls.get("subjectAltNames") or ())
    return None, ()


# ---- the builders translate.py calls (each result is cached by its arguments) ----------------------
def outbound_cluster(service: Service, port: ServicePort, identities: tuple[str, ...],
                     dr_mode: str | None = None, dr_sans: tuple[str, ...] = ()) -> dict[str, Any]:
    """CDS: `clusters.outbound_cluster` with auto mTLS to the service's identities (or what a
    DestinationRule says: always mTLS, never, and/or other identities to expect)."""
    cluster = clusters.outbound_cluster(service, port)
    sans = dr_sans or identities
    if dr_mode == "DISABLE":
        return cluster
    if dr_mode == "ISTIO_MUTUAL":
        return {**cluster, "transport_socket": upstream_tls(port.port, service.hostname, sans)}
    return with_auto_mtls(cluster, port.port, service.hostname, sans)


def load_assignment(service: Service, port: ServicePort, slices: tuple[EndpointSlice, ...],
                    mtls_addresses: frozenset[str]) -> dict[str, Any]:
    """EDS: `clusters.load_assignment` with the endpoints that take mTLS marked."""
    return with_tls_mode(clusters.load_assignment(service, port, slices), mtls_addresses)


def virtual_inbound(port_modes: tuple[tuple[int, Protocol, Mode], ...]) -> dict[str, Any]:
    """LDS: `listeners.virtual_inbound` with each port's chain replaced by the chains of its mode."""
    base = listeners.virtual_inbound([(port, proto) for port, proto, _ in port_modes])
    modes = {port: (proto, mode) for port, proto, mode in port_modes}
    chains: list[dict[str, Any]] = []
    for chain in base["filter_chains"]:
        port = (chain.get("filter_chain_match") or {}).get("destination_port")
        if port in modes:
            proto, mode = modes[port]
            chains += inbound_chains(port, proto, mode, chain["filters"][0])
        else:
            chains.append(chain)
    return {**base, "filter_chains": chains}
