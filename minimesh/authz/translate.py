"""AuthorizationPolicy → Envoy RBAC filters, as istiod's authz builder does it. Pure.

For the policies that apply to one workload (`engine.policies_for`):

- HTTP chains get up to two `envoy.filters.http.rbac` filters before the router: DENY first, then ALLOW
  (only when some ALLOW policy applies). TCP chains get `envoy.filters.network.rbac` the same way.
- Each rule `i` of policy `NS/NAME` becomes one RBAC policy `ns[NS]-policy[NAME]-rule[i]`: its `to`
  operations are the permissions (one per operation, OR'd; `when` conditions on the destination are AND'ed
  into each), its `from` sources the principals (one per source; the other `when` conditions AND'ed in).
  A policy without rules becomes one that never matches (so an ALLOW `spec: {}` denies everything).
- Values: principals and namespaces match the peer certificate's SPIFFE id (`authenticated.principal_name`),
  methods/hosts are the `:method` / `:authority` headers, paths `url_path` (the normalised path), ports
  `destination_port`, ipBlocks `direct_remote_ip` (`source_ip` on TCP), remoteIpBlocks `remote_ip`.
- For TCP (Istio): an ALLOW rule with HTTP-only fields is skipped; a DENY rule loses those fields.
- Presence (`*`) means a non-empty value, as Istio documents it.

A policy that cannot be parsed fails closed: a DENY (or CUSTOM) policy denies everything on the workloads it
selects, an ALLOW policy allows nothing, and the error is reported by the push server. (As in Istio, the
validating webhook refuses such policies at admission — `minimesh.pilot.validation`; this is for those stored
while it was not there: the push server must never widen access.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from minimesh.authz.engine import rule_for_tcp
from minimesh.authz.model import (
    API_VERSIONS,
    KIND,
    AuthorizationPolicy,
    Condition,
    Network,
    Operation,
    PolicyError,
    Rule,
    Source,
    parse_policy,
)

HTTP_RBAC = "envoy.filters.http.rbac"
HTTP_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
NETWORK_RBAC = "envoy.filters.network.rbac"
NETWORK_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TCP_STAT_PREFIX = "tcp."
SPIFFE = "spiffe://"

Json = dict[str, Any]
ANY_RULE: Json = {"any": True}
NEVER: Json = {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}
ALWAYS: Json = {"permissions": [{"any": True}], "principals": [{"any": True}]}


@dataclass(frozen=True)
class Invalid:
    """A policy the push server could not parse: it still takes part, failing closed."""

    name: str
    namespace: str
    action: str  # what its spec asked for (DENY/CUSTOM fail closed as "deny all")
    error: str
    match_labels: Mapping[str, str] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def policy_name(namespace: str, name: str, rule: int | str) -> str:
    return f"ns[{namespace}]-policy[{name}]-rule[{rule}]"


# ---- parsing, failing closed --------------------------------------------------------------------


def parse(namespace: str, name: str, spec: Mapping[str, Any]) -> AuthorizationPolicy | Invalid:
    """The policy, or an `Invalid` that says why (the push server keeps serving the others)."""
    obj = {"apiVersion": API_VERSIONS[0], "kind": KIND, "metadata": {"name": name, "namespace": namespace},
           "spec": dict(spec or {})}
    try:
        return parse_policy(obj)
    except PolicyError as e:
        raw = spec or {}
        sel = raw.get("selector") if isinstance(raw, Mapping) else None
        labels = sel.get("matchLabels") if isinstance(sel, Mapping) else None
        action = raw.get("action") if isinstance(raw, Mapping) else None
        labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else None
        return Invalid(name, namespace, str(action or "ALLOW"), str(e), labels or None)


# ---- values -----------------------------------------------------------------------------------


def string_match(pattern: str, *, ignore_case: bool = False, prefix: str = "") -> Json:
    """An Istio pattern as an Envoy StringMatcher (`prefix` is prepended to the value, e.g. spiffe://)."""
    extra = {"ignore_case": True} if ignore_case else {}
    if pattern == "*":
        return {"safe_regex": {"regex": re.escape(prefix) + ".+"}}
    if pattern.endswith("*"):
        return {"prefix": prefix + pattern[:-1], **extra}
    if pattern.startswith("*"):
        if prefix:  # the value must still start with the prefix
            return {"safe_regex": {"regex": f"{re.escape(prefix)}.*{re.escape(pattern[1:])}"}}
        return {"suffix": pattern[1:], **extra}
    return {"exact": prefix + pattern, **extra}


def _header(name: str, pattern: str, *, ignore_case: bool = False) -> Json:
    if pattern == "*":
        return {"header": {"name": name, "string_match": {"safe_regex": {"regex": ".+"}}}}
    return {"header": {"name": name, "string_match": string_match(pattern, ignore_case=ignore_case)}}


def _regex_part(pattern: str, wildcard: str) -> str:
    """A prefix (`abc*`), suffix (`*abc`) or exact Istio pattern as a regex, `wildcard` standing for its `*`."""
    if pattern.endswith("*"):
        return re.escape(pattern[:-1]) + wildcard
    if pattern.startswith("*"):
        return wildcard + re.escape(pattern[1:])
    return re.escape(pattern)


def _header_values(name: str, pattern: str) -> Json:
    """`when: request.headers[name]`: Istio's regex over a comma-joined repeated header."""
    if pattern == "*":
        return {"header": {"name": name, "safe_regex_match": {"regex": ".+"}}}
    v = _regex_part(pattern, ".*")
    regex = f"^{v}$|^{v},.*|.*,{v},.*|.*,{v}$"
    return {"header": {"name": name, "safe_regex_match": {"regex": regex}}}


def _principal(pattern: str) -> Json:
    return {"authenticated": {"principal_name": string_match(pattern, prefix=SPIFFE)}}


def _namespace(pattern: str) -> Json:
    """A namespace is the `ns/<NS>/` part of the SPIFFE id (`[^/]` keeps a wildcard inside that segment)."""
    part = "[^/]+" if pattern == "*" else _regex_part(pattern, "[^/]*")
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{part}/.*"}}}}


def _cidr(key: str, net: Network) -> Json:
    return {key: {"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}}


def _path(pattern: str) -> Json:
    return {"url_path": {"path": string_match(pattern)}}


# ---- trees ----------------------------------------------------------------------------------------


def _or(kind: str, items: list[Json]) -> Json:
    """`or_rules`/`or_ids` of one field's values (kind: "rules" or "ids")."""
    return {f"or_{kind}": {kind: items}}


def _pair(kind: str, values: Sequence[Any], not_values: Sequence[Any], leaf: Any) -> list[Json]:
    """A field and its not-twin: `or(values)` and `not(or(not_values))`, when set."""
    out = []
    if values:
        out.append(_or(kind, [leaf(v) for v in values]))
    if not_values:
        out.append({"not_rule" if kind == "rules" else "not_id": _or(kind, [leaf(v) for v in not_values])})
    return out


def _operation(op: Operation) -> list[Json]:
    r = "rules"
    return [
        *_pair(r, op.hosts, op.not_hosts, lambda p: _header(":authority", p, ignore_case=True)),
        *_pair(r, op.methods, op.not_methods, lambda p: _header(":method", p)),
        *_pair(r, op.paths, op.not_paths, _path),
        *_pair(r, op.ports, op.not_ports, lambda p: {"destination_port": p}),
    ]


def _source(src: Source, tcp: bool) -> list[Json]:
    i = "ids"
    direct = "source_ip" if tcp else "direct_remote_ip"
    return [
        *_pair(i, src.principals, src.not_principals, _principal),
        *_pair(i, src.namespaces, src.not_namespaces, _namespace),
        *_pair(i, src.ip_blocks, src.not_ip_blocks, lambda n: _cidr(direct, n)),
        *_pair(i, src.remote_ip_blocks, src.not_remote_ip_blocks, lambda n: _cidr("remote_ip", n)),
    ]


def _condition(c: Condition, tcp: bool) -> tuple[str, list[Json]]:
    """("permission" or "principal", the matchers of one `when` entry)."""
    if c.key == "destination.port":
        return "permission", _pair("rules", c.values, c.not_values, lambda p: {"destination_port": p})
    if c.key == "destination.ip":
        return "permission", _pair("rules", c.values, c.not_values, lambda n: _cidr("destination_ip", n))
    if c.key == "request.headers":
        return "principal", _pair("ids", c.values, c.not_values, lambda p: _header_values(c.header or "", p))
    leaf = {
        "source.ip": lambda n: _cidr("source_ip" if tcp else "direct_remote_ip", n),
        "remote.ip": lambda n: _cidr("remote_ip", n),
        "source.namespace": _namespace,
        "source.principal": _principal,
    }[c.key]
    return "principal", _pair("ids", c.values, c.not_values, leaf)


def rule_policy(rule: Rule, tcp: bool = False) -> Json:
    """One Istio rule as one Envoy RBAC policy (permissions × principals)."""
    on_permission: list[Json] = []
    on_principal: list[Json] = []
    for c in rule.conditions:
        side, matchers = _condition(c, tcp)
        (on_permission if side == "permission" else on_principal).extend(matchers)
    ops = [_operation(o) for o in rule.operations] or [[]]
    srcs = [_source(s, tcp) for s in rule.sources] or [[]]
    return {
        "permissions": [{"and_rules": {"rules": (o + on_permission) or [ANY_RULE]}} for o in ops],
        "principals": [{"and_ids": {"ids": (s + on_principal) or [ANY_RULE]}} for s in srcs],
    }


# ---- filters -----------------------------------------------------------------------------------


def rbac_rules(policies: Sequence[AuthorizationPolicy | Invalid], action: str, tcp: bool) -> Json | None:
    """The `rules` of the RBAC filter for one action, or None when no policy has that action."""
    out: dict[str, Json] = {}
    chosen = False
    for p in policies:
        if isinstance(p, Invalid):
            closed = "DENY" if p.action in ("DENY", "CUSTOM") else "ALLOW"
            if closed == action:
                chosen = True
                out[policy_name(p.namespace, p.name, "invalid")] = ALWAYS if action == "DENY" else NEVER
            continue
        if p.action != action:
            continue
        chosen = True
        if not p.rules:
            out[policy_name(p.namespace, p.name, 0)] = NEVER
        for i, rule in enumerate(p.rules):
            effective = rule_for_tcp(rule, action) if tcp else rule
            if effective is not None:
                out[policy_name(p.namespace, p.name, i)] = rule_policy(effective, tcp)
    if not chosen:
        return None
    rules: Json = {"policies": out} if out else {}
    if action != "ALLOW":
        rules = {"action": action, **rules}
    return rules


def _filters(policies: Sequence[AuthorizationPolicy | Invalid], tcp: bool) -> list[Json]:
    name, type_url = (NETWORK_RBAC, NETWORK_RBAC_TYPE) if tcp else (HTTP_RBAC, HTTP_RBAC_TYPE)
    out = []
    for action in ("DENY", "ALLOW"):
        rules = rbac_rules(policies, action, tcp)
        if rules is not None:
            config: Json = {"@type": type_url, **({"stat_prefix": TCP_STAT_PREFIX} if tcp else {}), "rules": rules}
            out.append({"name": name, "typed_config": config})
    return out


def http_filters(policies: Sequence[AuthorizationPolicy | Invalid]) -> list[Json]:
    """The RBAC http filters for a workload's HTTP chains (DENY, then ALLOW), before the router."""
    return _filters(policies, tcp=False)


def network_filters(policies: Sequence[AuthorizationPolicy | Invalid]) -> list[Json]:
    """The RBAC network filters for a workload's TCP chains (DENY, then ALLOW), before tcp_proxy."""
    return _filters(policies, tcp=True)
