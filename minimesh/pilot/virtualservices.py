"""VirtualService HTTP routes for a service's virtual host (the part of Istio's translation stage 4 uses).

A VirtualService in namespace `ns` with `hosts: [details]` (or `details.ns`, or the FQDN) replaces the
default route of every virtual host of that service by its `http` routes, in order:

    http:
    - match: [{uri: {prefix: /details}}, {uri: {regex: "/v[0-9]+/.*"}}]   one Envoy route per match entry
      route: [{destination: {host: details, port: {number: 9080}}, weight: 100}]

- `uri` exact/prefix/regex → Envoy's `path` / `prefix` / `safe_regex`; `headers` likewise as
  `string_match`; no match → prefix "/".
- one destination → `cluster`; several → `weighted_clusters` (weights as given); a destination host is
  resolved in the VirtualService's namespace; `subset` names `outbound|<port>|<subset>|<host>` (the
  DestinationRule that defines subsets comes in stage 8).

Like istiod without its validating webhook, the translation passes what it cannot judge (a regex) on to
the proxies: an invalid one is rejected there (a NACK, `pilot_total_xds_rejects`) and the proxies keep
their last good routes. Everything else of a VirtualService (gateways, retries, faults, timeouts, ...)
is stage 8's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from minimesh.pilot.model import Config, Service
from minimesh.xds.resources import outbound_cluster_name


def _fqdn(host: str, namespace: str, domain: str) -> str:
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.{domain}"
    if len(parts) == 2:
        return f"{host}.svc.{domain}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.{domain}"
    return host


def applies_to(vs: Config, service: Service) -> bool:
    """Does the VirtualService name this service among its hosts (resolved in its own namespace)?"""
    hosts = vs.spec.get("hosts") or []
    return any(isinstance(h, str) and _fqdn(h, vs.namespace, service.domain) == service.hostname for h in hosts)


def _string_match(m: Mapping[str, Any]) -> dict[str, Any]:
    if "exact" in m:
        return {"exact": str(m["exact"])}
    if "prefix" in m:
        return {"prefix": str(m["prefix"])}
    if "regex" in m:
        return {"safe_regex": {"regex": str(m["regex"])}}
    return {"prefix": ""}  # an empty matcher matches anything


def _match(m: Mapping[str, Any]) -> dict[str, Any]:
    uri = m.get("uri") or {}
    if "exact" in uri:
        out: dict[str, Any] = {"path": str(uri["exact"])}
    elif "regex" in uri:
        out = {"safe_regex": {"regex": str(uri["regex"])}}
    else:
        out = {"prefix": str(uri.get("prefix", "/"))}
    headers = m.get("headers") or {}
    if headers:
        out["headers"] = [{"name": name, "string_match": _string_match(spec or {})} for name, spec in sorted(headers.items())]
    return out


def _cluster(dest: Mapping[str, Any], vs: Config, service: Service, port: int) -> str:
    host = _fqdn(str(dest.get("host", "")), vs.namespace, service.domain)
    number = (dest.get("port") or {}).get("number") or port
    return outbound_cluster_name(int(number), host, str(dest.get("subset") or ""))


def http_routes(vs: Config, service: Service, port: int) -> list[dict[str, Any]]:
    """The Envoy routes of one VirtualService for the virtual host of `service` on `port`."""
    out = []
    for i, rule in enumerate(vs.spec.get("http") or []):
        dests = [d for d in rule.get("route") or [] if isinstance(d, Mapping) and d.get("destination")]
        if not dests:
            continue  # redirects, direct responses: stage 8
        if len(dests) == 1:
            action: dict[str, Any] = {"cluster": _cluster(dests[0]["destination"], vs, service, port)}
        else:
            action = {"weighted_clusters": {"clusters": [
                {"name": _cluster(d["destination"], vs, service, port), "weight": int(d.get("weight", 0))}
                for d in dests]}}
        action["timeout"] = "0s"
        name = str(rule.get("name") or f"{vs.namespace}/{vs.name}[{i}]")
        for m in rule.get("match") or [{}]:
            out.append({"name": name, "match": _match(m or {}), "route": dict(action)})
    return out


def for_service(virtual_services: Iterable[Config], service: Service) -> tuple[Config, ...]:
    """The VirtualServices that route `service` (oldest name first, as Istio merges by creation time)."""
    return tuple(sorted((vs for vs in virtual_services if applies_to(vs, service)), key=lambda v: (v.namespace, v.name)))
