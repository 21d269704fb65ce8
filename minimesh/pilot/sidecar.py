"""The Sidecar resource: which services a proxy may reach, and therefore which config it receives.

Without a Sidecar every proxy gets clusters, listeners and routes for every service in the mesh, and
every change anywhere is pushed to every proxy. With `egress.hosts: ["./*", "mesh-system/*"]` a proxy
only learns its own namespace and the control plane's: config size and push work shrink with it.

An egress host is `namespace/dnsName`:
- namespace: `*` any namespace, `.` the proxy's own namespace, `~` no namespace, or a namespace name;
- dnsName: `*` every service, `*.suffix` a wildcard on the left-most label, or an exact FQDN
  (`details.default.svc.cluster.local`).

Which Sidecar applies to a proxy (Istio's rules): a Sidecar in the proxy's namespace whose
workloadSelector matches the proxy's labels; else the namespace's Sidecar without a selector; else
the root namespace's (`mesh-system`) Sidecar without a selector; else none (everything visible).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from minimesh.pilot.model import Proxy, Service, Sidecar

ROOT_NAMESPACE = "mesh-system"


class EgressHostError(ValueError):
    """An egress host that is not `namespace/dnsName`."""


def parse_egress_host(entry: str) -> tuple[str, str]:
    """`"./*"` → (".", "*"); raises EgressHostError with what is wrong."""
    if not isinstance(entry, str):
        raise EgressHostError(f"want a string 'namespace/dnsName', got {entry!r}")
    ns, sep, dns = entry.partition("/")
    if not sep or not ns or not dns or "/" in dns:
        raise EgressHostError(f"{entry!r}: want 'namespace/dnsName', e.g. './*' or 'mesh-system/*'")
    if "*" in dns and dns != "*" and not (dns.startswith("*.") and "*" not in dns[2:]):
        raise EgressHostError(f"{entry!r}: a wildcard is only allowed as the whole name or the left-most label ('*.example.com')")
    if "*" in ns and ns != "*":
        raise EgressHostError(f"{entry!r}: namespace must be '*', '.', '~' or a name")
    return ns, dns


def host_allowed(egress_hosts: Sequence[str], proxy_namespace: str, service: Service) -> bool:
    """May a proxy in `proxy_namespace`, scoped by `egress_hosts`, see `service`?

    True when at least one entry matches both the service's namespace and its hostname (FQDN).
    Entries are valid (`parse_egress_host` accepted them).
    """
    # BEGIN EXERCISE lab-04
    # TODO: for each "namespace/dnsName" entry (split it with parse_egress_host): the namespace part
    #   matches when it is "*", or "." and the service is in the proxy's namespace, or equal to the
    #   service's namespace ("~" matches nothing); the dnsName part matches when it is "*", or
    #   "*.suffix" and the hostname ends with ".suffix", or equal to service.hostname.
    #   Return True as soon as one entry matches both parts.
    raise NotImplementedError("lab 04: host_allowed: for each \"namespace/dnsName\" entry (split it with parse_egress_host): the namespace part")
    # END EXERCISE


def labels_match(selector: Iterable[tuple[str, str]], labels: Iterable[tuple[str, str]]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in selector)


def select_sidecar(sidecars: Iterable[Sidecar], proxy: Proxy) -> Sidecar | None:
    """The Sidecar that applies to `proxy`, by Istio's precedence (see the module docstring)."""
    namespace_default = root_default = None
    for sc in sorted(sidecars, key=lambda s: (s.namespace, s.name)):  # oldest-first in Istio; name here
        if sc.namespace == proxy.namespace:
            if sc.workload_selector is not None:
                if labels_match(sc.workload_selector, proxy.labels):
                    return sc
            elif namespace_default is None:
                namespace_default = sc
        elif sc.namespace == ROOT_NAMESPACE and sc.workload_selector is None and root_default is None:
            root_default = sc
    return namespace_default or root_default


def candidate_namespaces(egress_hosts: Iterable[str], proxy_namespace: str) -> set[str] | None:
    """The namespaces the entries can match at all (None: any), to skip the others quickly."""
    out: set[str] = set()
    for entry in egress_hosts:
        ns, _ = parse_egress_host(entry)
        if ns == "*":
            return None
        if ns != "~":
            out.add(proxy_namespace if ns == "." else ns)
    return out


def visible_services(services: Iterable[Service], sidecar: Sidecar | None, proxy_namespace: str) -> list[Service]:
    """Every service a proxy scoped by `sidecar` may see (all of them without a Sidecar)."""
    if sidecar is None:
        return list(services)
    namespaces = candidate_namespaces(sidecar.egress_hosts, proxy_namespace)
    return [s for s in services if (namespaces is None or s.namespace in namespaces)
            and host_allowed(sidecar.egress_hosts, proxy_namespace, s)]
