"""AuthorizationPolicy in the translation (stage 7): RBAC filters on the workload's inbound chains. Pure.

The policies that select a workload (its namespace's and the root namespace's, by `selector.matchLabels`)
become Envoy RBAC filters (`minimesh.authz.translate`, as istiod's builder): the HTTP connection manager
of every inbound HTTP chain gets `envoy.filters.http.rbac` (DENY, then ALLOW) before the router, and every
TCP chain of `virtualInbound` (declared TCP ports, the passthrough chains) gets `envoy.filters.network.rbac`
before its tcp_proxy, so `spec: {}` closes undeclared ports too. Inbound HTTP connection managers also
normalise paths (Istio's default pathNormalization BASE), so `/details/../admin` is matched as `/admin`.
"""

from __future__ import annotations

from typing import Any

from minimesh.authz import translate as authz
from minimesh.authz.engine import policies_for
from minimesh.authz.model import KIND as AUTHORIZATION_POLICY
from minimesh.pilot import mtls
from minimesh.pilot.context import PushContext
from minimesh.pilot.model import Config, Proxy
from minimesh.pilot.protocol import Protocol

HCM = "envoy.filters.network.http_connection_manager"


def parsed(ctx: PushContext, policy: Config) -> Any:
    """The AuthorizationPolicy of a config record (or `translate.Invalid`), parsed once per snapshot."""
    key = ("authz-parsed", policy)
    found = ctx._memo.get(key)
    if found is None:
        found = ctx._memo[key] = authz.parse(policy.namespace, policy.name, policy.spec)
    return found


def workload_policies(ctx: PushContext, proxy: Proxy) -> tuple[Config, ...]:
    """The AuthorizationPolicy records that select this proxy's workload (the cache key of its listener)."""
    key = ("authz-policies", proxy.namespace, proxy.labels)
    found = ctx._memo.get(key)
    if found is None:
        configs = {(c.namespace, c.name): c for c in ctx.configs.get(AUTHORIZATION_POLICY, ())}
        chosen = policies_for(proxy.label_map(), proxy.namespace, [parsed(ctx, c) for c in configs.values()],
                              root_namespace=mtls.ROOT_NAMESPACE)
        found = ctx._memo[key] = tuple(configs[(p.namespace, p.name)] for p in chosen)
    return found  # type: ignore[no-any-return]


def _with_filters(chain: dict[str, Any], http: list[dict[str, Any]], network: list[dict[str, Any]]) -> dict[str, Any]:
    filters = chain["filters"]
    terminal = filters[-1]
    if terminal["name"] == HCM:
        hcm = dict(terminal["typed_config"])
        hcm["normalize_path"] = True
        hcm["http_filters"] = http + list(hcm.get("http_filters") or [])
        return {**chain, "filters": [*filters[:-1], {**terminal, "typed_config": hcm}]}
    return {**chain, "filters": [*network, *filters]}


def virtual_inbound(port_modes: tuple[tuple[int, Protocol, mtls.Mode], ...],
                    policies: tuple[Config, ...] = ()) -> dict[str, Any]:
    """LDS: stage 6's `virtualInbound` with the RBAC filters of the workload's policies on every chain."""
    base = mtls.virtual_inbound(port_modes)
    parsed_policies = [authz.parse(p.namespace, p.name, p.spec) for p in policies]
    http, network = authz.http_filters(parsed_policies), authz.network_filters(parsed_policies)
    return {**base, "filter_chains": [_with_filters(c, http, network) for c in base["filter_chains"]]}


def errors(ctx: PushContext) -> dict[str, str]:
    """`namespace/name` -> why an AuthorizationPolicy could not be used (it fails closed meanwhile)."""
    out = {}
    for c in ctx.configs.get(AUTHORIZATION_POLICY, ()):
        p = parsed(ctx, c)
        if isinstance(p, authz.Invalid):
            out[p.key] = p.error
    return out
