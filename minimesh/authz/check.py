"""`minimesh authz check POD`: what a sidecar enforces and why a request would pass, like `istioctl x authz check`.

Two views of one question, side by side:
- the **evaluator** (`engine.evaluate`, stage 7's exercise) on the AuthorizationPolicies read from the API;
- the **sidecar**: the RBAC filters in the pod's own `/config_dump` (what the push server compiled and the
  proxy ACKed), run with `rbac.Rules.decide` — Envoy's semantics, not Istio's.

They agree when the evaluator is right and the proxy has the current config; a difference is a bug in the
evaluator or a push that has not arrived. Everything except `check()` is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minimesh.authz.engine import Decision, Request, evaluate, policies_for
from minimesh.authz.model import AuthorizationPolicy, PolicyError, parse_policy
from minimesh.authz.normalize import InvalidRequest, check_method, normalize_path
from minimesh.authz.rbac import Attributes, rules_from_dict
from minimesh.authz.translate import HTTP_RBAC, NETWORK_RBAC

ROOT_NAMESPACE = "mesh-system"
_NAME = re.compile(r"^ns\[(?P<ns>[^\]]*)\]-policy\[(?P<name>[^\]]*)\]-rule\[(?P<rule>[^\]]*)\]$")


@dataclass(frozen=True)
class RbacFilter:
    """One RBAC filter of an inbound chain, as the sidecar holds it."""

    chain: str
    kind: str  # "http" or "network"
    action: str
    rules: Mapping[str, Any] | None  # the filter's `rules` (None: enforces nothing)

    @property
    def policies(self) -> dict[str, list[str]]:
        """`namespace/name` -> its rule indices, from Istio's policy names `ns[..]-policy[..]-rule[..]`."""
        out: dict[str, list[str]] = {}
        for key in (self.rules or {}).get("policies") or {}:
            m = _NAME.match(key)
            name = f"{m['ns']}/{m['name']}" if m else key
            out.setdefault(name, []).append(m["rule"] if m else "?")
        return out


def _listeners(config_dump: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for section in config_dump.get("configs") or []:
        if "ListenersConfigDump" not in str(section.get("@type", "")):
            continue
        for entry in [*(section.get("static_listeners") or []), *(section.get("dynamic_listeners") or [])]:
            listener = entry.get("listener") or (entry.get("active_state") or {}).get("listener")
            if listener:
                yield listener


@dataclass(frozen=True)
class Chain:
    """One filter chain of `virtualInbound` and its RBAC filters."""

    name: str
    port: int | None
    mtls: bool  # terminates mTLS (only sidecars with a mesh certificate get in)
    filters: tuple[RbacFilter, ...]


def inbound_chains(config_dump: Mapping[str, Any], port: int | None = None) -> list[Chain]:
    """The chains of `virtualInbound` (those for `port`, when given, else every one) with their RBAC filters."""
    out: list[Chain] = []
    for listener in _listeners(config_dump):
        if listener.get("name") != "virtualInbound":
            continue
        for chain in listener.get("filter_chains") or []:
            match = chain.get("filter_chain_match") or {}
            chain_port = match.get("destination_port")
            if port is not None and chain_port != port:
                continue
            name = chain.get("name") or "?"
            filters = []
            for f in chain.get("filters") or []:
                tc = f.get("typed_config") or {}
                if f.get("name") == NETWORK_RBAC:
                    filters.append(RbacFilter(name, "network", (tc.get("rules") or {}).get("action", "ALLOW"),
                                              tc.get("rules")))
                for hf in tc.get("http_filters") or []:
                    if hf.get("name") == HTTP_RBAC:
                        rules = (hf.get("typed_config") or {}).get("rules")
                        filters.append(RbacFilter(name, "http", (rules or {}).get("action", "ALLOW"), rules))
            mtls = "transport_socket" in chain and match.get("transport_protocol") == "tls"
            out.append(Chain(name, chain_port, mtls, tuple(filters)))
    return out


def summary(chains: Iterable[Chain]) -> list[tuple[str, str, int]]:
    """Istio's `authz check` table: (ACTION, AuthorizationPolicy, RULES), each policy once."""
    seen: dict[tuple[str, str], int] = {}
    for c in chains:
        for f in c.filters:
            for name, rules in f.policies.items():
                seen[(f.action, name)] = max(seen.get((f.action, name), 0), len(rules))
    order = {"DENY": 0, "ALLOW": 1, "LOG": 2}
    return [(a, n, r) for (a, n), r in sorted(seen.items(), key=lambda kv: (order.get(kv[0][0], 3), kv[0][1]))]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    why: str


def attributes(req: Request) -> Attributes:
    """What an inbound sidecar's RBAC filters see of an evaluator `Request`: the peer certificate's SPIFFE id,
    and for HTTP the pseudo-headers, repeated headers joined by "," and the normalised path (raises
    InvalidRequest where the connection manager would answer 400)."""
    mtls = req.source_principal is not None
    sans = (f"spiffe://{req.source_principal}",) if mtls else ()
    if not req.is_http:
        return Attributes(req.destination_ip or "", req.port, req.source_ip or "", req.remote_ip or "",
                          peer_sans=sans, authenticated=mtls)
    check_method(req.method or "")
    path = normalize_path(req.path)
    headers = {":method": req.method or "", ":path": path, ":authority": req.host}
    for k, v in req.headers:  # type: ignore[misc]
        headers[k] = f"{headers[k]},{v}" if k in headers else v
    return Attributes(req.destination_ip or "", req.port, req.source_ip or "", req.remote_ip or "", headers,
                      path.partition("?")[0], sans, mtls)


def sidecar_decision(chains: Iterable[Chain], req: Request) -> Verdict:
    """Pick the chain the request would take (mTLS with a peer certificate, plaintext without) and run its
    HTTP RBAC filters in order, as the proxy does."""
    mtls = req.source_principal is not None
    candidates = [c for c in chains if c.port == req.port and c.mtls == mtls and not c.name.endswith("-tls-passthrough")]
    if not candidates:
        what = "mTLS" if mtls else "plaintext (STRICT allows only mTLS)"
        return Verdict(False, f"no filter chain on port {req.port} takes {what}: the connection is closed")
    try:
        attrs = attributes(req)
    except InvalidRequest as e:
        return Verdict(False, f"400: {e}")
    why = "no RBAC filter denied it"
    for f in candidates[0].filters:
        if f.kind != "http" or f.rules is None:
            continue
        decision = rules_from_dict(f.rules).decide(attrs)
        if not decision.allowed:
            return Verdict(False, decision.details)
        if decision.policy:
            why = f"allowed by {decision.policy}"
    return Verdict(True, why)


@dataclass
class Report:
    pod: str
    namespace: str
    labels: Mapping[str, str]
    chains: list[Chain]
    policies: list[AuthorizationPolicy] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # namespace/name -> why it cannot be parsed

    def decide(self, req: Request) -> tuple[Decision | Exception, Verdict]:
        """(the evaluator's decision, or its error; the sidecar's verdict)."""
        try:
            mine: Decision | Exception = evaluate(policies_for(self.labels, self.namespace, self.policies), req)
        except Exception as e:  # NotImplementedError until the exercise is written
            mine = e
        return mine, sidecar_decision(self.chains, req)


def parse_all(objs: Iterable[Mapping[str, Any]]) -> tuple[list[AuthorizationPolicy], dict[str, str]]:
    good, bad = [], {}
    for o in objs:
        meta = o.get("metadata") or {}
        try:
            good.append(parse_policy(o))
        except PolicyError as e:
            bad[f"{meta.get('namespace')}/{meta.get('name')}"] = str(e)
    return good, bad


def check(api_client: Any, pod: str, namespace: str = "default", container: str = "minimesh-proxy") -> Report:
    """Read the pod, the policies of its namespace and the root namespace, and its sidecar's config_dump."""
    from kubernetes import client

    from minimesh.k8s.stream import exec_in_pod

    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    p = core.read_namespaced_pod(pod, namespace)
    objs: list[Mapping[str, Any]] = []
    for ns in dict.fromkeys((namespace, ROOT_NAMESPACE)):
        found = custom.list_namespaced_custom_object("security.minimesh.io", "v1", ns, "authorizationpolicies")
        objs += found.get("items") or []
    policies, errors = parse_all(objs)
    out = exec_in_pod(core, namespace, pod, ["curl", "-s", "http://127.0.0.1:15000/config_dump"], container=container,
                      timeout=20)
    if out.returncode != 0 or not out.stdout.strip().startswith("{"):
        raise RuntimeError(f"cannot read {namespace}/{pod}'s /config_dump from container {container}: "
                           f"{(out.stderr or out.stdout).strip()[:200]} (is the pod injected?)")
    return Report(pod, namespace, dict(p.metadata.labels or {}), inbound_chains(json.loads(out.stdout)), policies,
                  errors)
