"""The AuthorizationPolicy evaluator with Istio's semantics (stage 7). Pure: no sockets, no clock.

For the policies that apply to a workload (`policies_for`) and one request:

1. CUSTOM: not supported (rejected when parsing).
2. DENY policies first: if any of them matches, the request is denied.
3. If no ALLOW policy applies to the workload, the request is allowed.
4. Otherwise it is allowed only if some ALLOW policy matches.

A policy matches when one of its rules matches; a policy without rules matches nothing (so an ALLOW
`spec: {}` denies everything). A rule matches when every part present matches: some `from` source, some
`to` operation, every `when` condition. Within a field any value may match; a `not*` field must match
none. Values: exact, prefix `abc*`, suffix `*abc`, presence `*` (any non-empty value).

Principals are SPIFFE IDs without `spiffe://` (`cluster.local/ns/default/sa/bookinfo-productpage`);
without a peer certificate a request has no principal and no namespace. Paths are normalised first
(see `normalize.py`); a request Istio would reject (`%00`, lower-case method) gets 400, a denied one 403
with the body `RBAC: access denied`.

Plain TCP (no HTTP method): as Istio, an ALLOW rule that uses HTTP-only fields (hosts, methods, paths,
request.headers) cannot match, while a DENY rule ignores those fields, so it denies more, never less.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from minimesh.authz.model import AuthorizationPolicy, Condition, Operation, Rule, Source
from minimesh.authz.normalize import InvalidRequest, Mode, check_method, normalize_path

DENIED_BODY = "RBAC: access denied"
SPIFFE = "spiffe://"


@dataclass(frozen=True)
class Request:
    """What the proxy knows about one request when it authorizes it."""

    method: str | None = "GET"  # None: plain TCP, no HTTP
    path: str = "/"
    host: str = ""
    port: int = 0  # destination port
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = field(default_factory=dict)
    source_principal: str | None = None  # from the peer certificate's URI SAN
    source_namespace: str | None = None  # derived from the principal when not given
    source_ip: str | None = None
    remote_ip: str | None = None  # the original client (X-Forwarded-For); defaults to source_ip
    destination_ip: str | None = None

    def __post_init__(self) -> None:
        pairs = self.headers.items() if isinstance(self.headers, Mapping) else self.headers
        object.__setattr__(self, "headers", tuple((k.lower(), v) for k, v in pairs))
        principal = self.source_principal or None
        if principal and principal.startswith(SPIFFE):
            principal = principal[len(SPIFFE) :]
        object.__setattr__(self, "source_principal", principal)
        if self.source_namespace is None and principal:
            object.__setattr__(self, "source_namespace", namespace_of(principal))
        if self.remote_ip is None:
            object.__setattr__(self, "remote_ip", self.source_ip)

    @property
    def is_http(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The header's value; repeated headers are joined with ',' (as Istio does)."""
        values = [v for k, v in self.headers if k == name.lower()]  # type: ignore[misc]
        return ",".join(values) if values else None


def namespace_of(principal: str) -> str | None:
    """`cluster.local/ns/default/sa/x` -> `default`."""
    parts = principal.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == "ns":
            return parts[i + 1] or None
    return None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy_name: str | None  # "namespace/name" of the deciding policy, None when no policy decided
    reason: str
    bad_request: bool = False  # rejected before authorization (400)

    @property
    def status(self) -> int:
        return 200 if self.allowed else 400 if self.bad_request else 403

    @property
    def body(self) -> str:
        return "" if self.allowed else "Bad Request" if self.bad_request else DENIED_BODY


# ---- matching one value ------------------------------------------------------------------------


def string_matches(pattern: str, value: str | None, ignore_case: bool = False) -> bool:
    """Istio's string match: `*` presence, `abc*` prefix, `*abc` suffix, else exact. None never matches."""
    # BEGIN SOLUTION lab-07
    # TODO: match a value against an Istio pattern.
    #   None (attribute absent) matches nothing; "*" matches any non-empty value; "abc*" is a prefix,
    #   "*abc" a suffix, anything else must be equal. With ignore_case compare lower-cased.
    if value is None:
        return False
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern
    # END SOLUTION


def header_value_matches(pattern: str, value: str | None) -> bool:
    """`when: request.headers[...]`: a repeated header arrives joined by "," and Istio matches the pattern
    against the whole value or any comma-separated element of it (its regex `^v$|^v,.*|.*,v,.*|.*,v$`)."""
    if value is None:
        return False
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        p = pattern[:-1]
        return value.startswith(p) or f",{p}" in value
    if pattern.startswith("*"):
        s = pattern[1:]
        return value.endswith(s) or f"{s}," in value
    return value == pattern or value.startswith(f"{pattern},") or value.endswith(f",{pattern}") or f",{pattern}," in value


def ip_in(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network], ip: str | None) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in networks)


def field_matches(values: Sequence, not_values: Sequence, matches) -> bool:
    """A field pair such as principals/notPrincipals: some value matches (if any), no not-value does."""
    return (not values or any(matches(v) for v in values)) and not any(matches(v) for v in not_values)


def source_matches(source: Source, req: Request) -> bool:
    def text(actual: str | None):
        return lambda pattern: string_matches(pattern, actual)

    return (
        field_matches(source.principals, source.not_principals, text(req.source_principal))
        and field_matches(source.namespaces, source.not_namespaces, text(req.source_namespace))
        and field_matches(source.ip_blocks, source.not_ip_blocks, lambda n: ip_in([n], req.source_ip))
        and field_matches(
            source.remote_ip_blocks, source.not_remote_ip_blocks, lambda n: ip_in([n], req.remote_ip)
        )
    )


def operation_matches(op: Operation, req: Request) -> bool:
    return (
        field_matches(op.hosts, op.not_hosts, lambda p: string_matches(p, req.host, ignore_case=True))
        and field_matches(op.ports, op.not_ports, lambda p: p == req.port)
        and field_matches(op.methods, op.not_methods, lambda p: string_matches(p, req.method))
        and field_matches(op.paths, op.not_paths, lambda p: string_matches(p, req.path))
    )


def condition_matches(cond: Condition, req: Request) -> bool:
    if cond.key == "request.headers":
        actual = req.header(cond.header or "")
        return field_matches(cond.values, cond.not_values, lambda p: header_value_matches(p, actual))
    if cond.key in ("source.ip", "remote.ip", "destination.ip"):
        ip = {"source.ip": req.source_ip, "remote.ip": req.remote_ip, "destination.ip": req.destination_ip}[
            cond.key
        ]
        return field_matches(cond.values, cond.not_values, lambda n: ip_in([n], ip))
    if cond.key == "destination.port":
        return field_matches(cond.values, cond.not_values, lambda p: p == req.port)
    actual = req.source_namespace if cond.key == "source.namespace" else req.source_principal
    return field_matches(cond.values, cond.not_values, lambda p: string_matches(p, actual))


# ---- rules and policies ------------------------------------------------------------------------


def rule_matches(rule: Rule, req: Request) -> bool:
    """Does this rule of a policy match the request?"""
    # BEGIN SOLUTION lab-07
    # TODO: combine the parts of a rule.
    #   `from` (rule.sources) and `to` (rule.operations) are lists OR'd inside: one entry must match
    #   (use source_matches / operation_matches); an empty list matches anything. Every `when`
    #   condition (rule.conditions, condition_matches) must match. All present parts must match.
    return (
        (not rule.sources or any(source_matches(s, req) for s in rule.sources))
        and (not rule.operations or any(operation_matches(o, req) for o in rule.operations))
        and all(condition_matches(c, req) for c in rule.conditions)
    )
    # END SOLUTION


def matching_rule(policy: AuthorizationPolicy, req: Request) -> int | None:
    """Index of the first rule of the policy that matches, or None (no rules: None)."""
    return next((i for i, rule in enumerate(policy.rules) if rule_matches(rule, req)), None)


def rule_for_tcp(rule: Rule, action: str) -> Rule | None:
    """A rule as Istio applies it to plain TCP: an ALLOW rule with HTTP-only fields is dropped (None), a
    DENY rule loses its HTTP-only fields (so it denies more, never less)."""
    http = any(o.http_only for o in rule.operations) or any(c.http_only for c in rule.conditions)
    if action == "ALLOW":
        return None if http else rule
    stripped = tuple(
        replace(o, hosts=(), not_hosts=(), methods=(), not_methods=(), paths=(), not_paths=())
        for o in rule.operations
    )
    # An operation left empty matches any request, and so does the whole (OR'd) `to` list.
    operations = () if Operation() in stripped else stripped
    return Rule(rule.sources, operations, tuple(c for c in rule.conditions if not c.http_only))


def for_tcp(policy: AuthorizationPolicy) -> AuthorizationPolicy:
    """The policy as Istio applies it to plain TCP (see `rule_for_tcp`)."""
    rules = (rule_for_tcp(r, policy.action) for r in policy.rules)
    return replace(policy, rules=tuple(r for r in rules if r is not None))


def evaluate(
    policies: Sequence[AuthorizationPolicy], request: Request, normalization: Mode = "BASE"
) -> Decision:
    """Decide one request against the policies that apply to the workload (see `policies_for`)."""
    try:
        if request.is_http:
            request = replace(
                request,
                method=check_method(request.method or ""),
                path=normalize_path(request.path, normalization),
            )
    except InvalidRequest as e:
        return Decision(False, None, f"bad request: {e}", bad_request=True)
    if not request.is_http:
        policies = [for_tcp(p) for p in policies]
    # BEGIN SOLUTION lab-07
    # TODO: apply Istio's order: DENY policies, then ALLOW policies.
    #   Any matching DENY policy denies (name it). If no ALLOW policy applies, allow. Otherwise allow
    #   only when some ALLOW policy matches (matching_rule gives the index of the rule that matched),
    #   else deny. Say why in `reason`; policy_name is the deciding policy's `key` or None.
    for policy in policies:
        if policy.action == "DENY":
            rule = matching_rule(policy, request)
            if rule is not None:
                return Decision(False, policy.key, f"denied by DENY policy {policy.key} (rule {rule})")
    allow = [p for p in policies if p.action == "ALLOW"]
    if not allow:
        return Decision(True, None, "no ALLOW policy applies to the workload: allowed")
    for policy in allow:
        rule = matching_rule(policy, request)
        if rule is not None:
            return Decision(True, policy.key, f"allowed by ALLOW policy {policy.key} (rule {rule})")
    names = ", ".join(p.key for p in allow)
    return Decision(False, None, f"no ALLOW policy matched ({names} apply to the workload)")
    # END SOLUTION


def policies_for(
    workload_labels: Mapping[str, str] | None,
    namespace: str,
    all_policies: Iterable[AuthorizationPolicy],
    root_namespace: str = "mesh-system",
) -> list[AuthorizationPolicy]:
    """The policies that apply to a workload: its namespace's and the root namespace's (mesh-wide),
    whose selector.matchLabels all match the workload's labels (no selector: every workload)."""
    labels = workload_labels or {}
    chosen = [
        p
        for p in all_policies
        if p.namespace in (namespace, root_namespace)
        and all(labels.get(k) == v for k, v in (p.match_labels or {}).items())
    ]
    return sorted(chosen, key=lambda p: (p.namespace != root_namespace, p.namespace, p.name))
