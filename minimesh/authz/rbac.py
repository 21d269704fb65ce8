"""Envoy's RBAC (envoy.config.rbac.v3): what a sidecar really enforces. Pure: parse, then decide.

Envoy never sees an AuthorizationPolicy. The push server compiles the policies of a workload into RBAC
rules (`translate.py`, as istiod does) and the proxy's `envoy.filters.http.rbac` / `envoy.filters.network.rbac`
filters run them against each request or connection:

- `rules.action` ALLOW: the request is allowed when some policy matches; DENY: denied when some policy matches.
  A filter without `rules` enforces nothing; `rules: {}` (ALLOW, no policies) denies everything.
- A policy matches when ANY of its `permissions` matches (what is done) AND ANY of its `principals` matches
  (who does it). Both are trees of and/or/not over leaf matchers.
- Policies are tried by name (Envoy keeps them in a sorted map); the first match names the decision, e.g.
  `rbac_access_denied_matched_policy[ns[default]-policy[deny-post]-rule[0]]`.

Leaf matchers supported: any, header (with the HTTP/2 pseudo-headers :method, :path, :authority), url_path,
destination_ip, destination_port, destination_port_range, requested_server_name; principals: any,
authenticated (principal_name against the peer certificate's URI SANs), direct_remote_ip, remote_ip,
source_ip, header, url_path. Anything else is a `ConfigError` naming the field (the proxy NACKs it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from minimesh.proxy.config._reader import Node
from minimesh.proxy.config.common import StringMatcher, parse_string_matcher
from minimesh.proxy.config.route import HeaderMatcher, parse_header_matcher

ACTIONS = ("ALLOW", "DENY", "LOG")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class HeaderLookup(Protocol):
    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Attributes:
    """What the matchers read about one request, or one TCP connection (`headers` None)."""

    destination_ip: str
    destination_port: int
    direct_remote_ip: str  # the peer of the connection
    remote_ip: str = ""  # the original client (the last X-Forwarded-For hop); defaults to direct_remote_ip
    headers: HeaderLookup | None = None  # with :method, :path, :authority; None for plain TCP
    url_path: str | None = None  # the normalised path without the query; None for plain TCP
    peer_sans: tuple[str, ...] = ()  # URI SANs of the verified client certificate
    authenticated: bool = False  # the connection is TLS with a verified client certificate
    sni: str = ""

    def __post_init__(self) -> None:
        if not self.remote_ip:
            object.__setattr__(self, "remote_ip", self.direct_remote_ip)


Matcher = Callable[[Attributes], bool]


def _any(_: Attributes) -> bool:
    return True


def _ip_in(network: Network) -> Callable[[str], bool]:
    def test(ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.version == network.version and addr in network

    return test


def header_matcher(m: HeaderMatcher) -> Matcher:
    """Envoy's HeaderMatcher on the request headers (never matches plain TCP). The same rule as stage 3's
    `routing.header_matches`, kept here so that RBAC never runs exercise code: an absent header matches only
    presence checks that want it absent; `invert_match` flips the result."""
    sm = None if m.present is not None or m.regex is not None else \
        StringMatcher(m.exact, m.prefix, m.suffix, m.contains, None, m.ignore_case)

    def test(a: Attributes) -> bool:
        if a.headers is None:
            return False
        value = a.headers.get(m.name)
        if value is None:
            return m.present is not None and m.present == m.invert_match
        if m.present is not None:
            result = m.present
        elif m.regex is not None:
            result = m.regex.fullmatch(value) is not None
        else:
            result = sm.matches(value)  # type: ignore[union-attr]
        return result != m.invert_match

    return test


def _cidr(node: Node) -> Network:
    prefix = node.nonempty_str("address_prefix")
    length = node.uint32_wrapper("prefix_len", 32 if ":" not in prefix else 128)
    try:
        return ipaddress.ip_network(f"{prefix}/{length}", strict=False)
    except ValueError as e:
        raise node.error(f"not a CIDR range: {e}") from None


def _tree(node: Node, leaves: Mapping[str, Callable[[Node, str], Matcher]], and_key: str, or_key: str,
          not_key: str, list_key: str, parse: Callable[[Node], Matcher]) -> Matcher:
    """One Permission or Principal: a oneof of and/or/not (recursing with `parse`) or a leaf."""
    keys = (and_key, or_key, not_key, *leaves)
    which = node.one_of(*keys, required=False)
    if which is None:
        unknown = [k for k in node if k not in keys]
        raise node.error(f"{unknown[0]!r} is not supported by minimesh (supported: {', '.join(keys)})"
                         if unknown else f"set one of {', '.join(keys)}")
    if which in (and_key, or_key):
        inner = node.obj(which, lambda n: n.items(list_key, parse, required=True))
        items = tuple(inner or ())
        if which == and_key:
            return lambda a: all(m(a) for m in items)
        return lambda a: any(m(a) for m in items)
    if which == not_key:
        negated = node.obj(which, parse)
        assert negated is not None
        return lambda a: not negated(a)
    return leaves[which](node, which)


def _flag(node: Node, key: str) -> Matcher:
    if not node.bool(key):
        raise node.error("must be true (`any: false` matches nothing; use not_rule/not_id)", key)
    return _any


def _string(get: Callable[[Attributes], str | None]) -> Callable[[Node, str], Matcher]:
    def leaf(node: Node, key: str) -> Matcher:
        sm: StringMatcher | None = node.obj(key, parse_string_matcher)
        assert sm is not None

        def test(a: Attributes) -> bool:
            value = get(a)
            return value is not None and sm.matches(value)

        return test

    return leaf


def _ip_leaf(get: Callable[[Attributes], str]) -> Callable[[Node, str], Matcher]:
    def leaf(node: Node, key: str) -> Matcher:
        net = node.obj(key, _cidr)
        assert net is not None
        inside = _ip_in(net)
        return lambda a: inside(get(a))

    return leaf


def _header(node: Node, key: str) -> Matcher:
    m = node.obj(key, parse_header_matcher)
    assert m is not None
    return header_matcher(m)


def _url_path(node: Node, key: str) -> Matcher:
    def path_matcher(n: Node) -> StringMatcher:
        n.ignore("@type")
        sm = n.obj("path", parse_string_matcher, required=True)
        assert sm is not None
        return sm

    sm = node.obj(key, path_matcher)
    assert sm is not None
    return lambda a: a.url_path is not None and sm.matches(a.url_path)


def _port(node: Node, key: str) -> Matcher:
    port = node.int(key, minimum=0, maximum=65535)
    return lambda a: a.destination_port == port


def _port_range(node: Node, key: str) -> Matcher:
    def rng(n: Node) -> tuple[int, int]:
        return n.int("start", 0, minimum=0, maximum=65536), n.int("end", 0, minimum=0, maximum=65536)

    r = node.obj(key, rng)
    assert r is not None
    start, end = r
    return lambda a: start <= a.destination_port < end  # [start, end)


def _authenticated(node: Node, key: str) -> Matcher:
    def auth(n: Node) -> StringMatcher | None:
        return n.obj("principal_name", parse_string_matcher)

    raw = node.raw(key)
    sm = node.obj(key, auth) if raw else None

    def test(a: Attributes) -> bool:
        if not a.authenticated:
            return False
        return sm is None or any(sm.matches(san) for san in a.peer_sans)

    return test


PERMISSION_LEAVES: dict[str, Callable[[Node, str], Matcher]] = {
    "any": _flag,
    "header": _header,
    "url_path": _url_path,
    "destination_ip": _ip_leaf(lambda a: a.destination_ip),
    "destination_port": _port,
    "destination_port_range": _port_range,
    "requested_server_name": _string(lambda a: a.sni),
}
PRINCIPAL_LEAVES: dict[str, Callable[[Node, str], Matcher]] = {
    "any": _flag,
    "authenticated": _authenticated,
    "direct_remote_ip": _ip_leaf(lambda a: a.direct_remote_ip),
    "remote_ip": _ip_leaf(lambda a: a.remote_ip),
    "source_ip": _ip_leaf(lambda a: a.direct_remote_ip),  # deprecated alias of direct_remote_ip
    "header": _header,
    "url_path": _url_path,
}


def parse_permission(node: Node) -> Matcher:
    return _tree(node, PERMISSION_LEAVES, "and_rules", "or_rules", "not_rule", "rules", parse_permission)


def parse_principal(node: Node) -> Matcher:
    return _tree(node, PRINCIPAL_LEAVES, "and_ids", "or_ids", "not_id", "ids", parse_principal)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    permissions: tuple[Matcher, ...]
    principals: tuple[Matcher, ...]

    def matches(self, a: Attributes) -> bool:
        return any(p(a) for p in self.permissions) and any(p(a) for p in self.principals)


@dataclass(frozen=True, slots=True)
class Rules:
    """envoy.config.rbac.v3.RBAC: an action and named policies (kept sorted by name, as Envoy does)."""

    action: str = "ALLOW"
    policies: tuple[Policy, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # as configured, for config_dump

    def matched(self, a: Attributes) -> str | None:
        """The name of the first policy that matches, or None."""
        for p in self.policies:
            if p.matches(a):
                return p.name
        return None

    def decide(self, a: Attributes) -> Decision:
        name = self.matched(a)
        if self.action == "DENY":
            return Decision(name is None, name)
        if self.action == "LOG":
            return Decision(True, name)
        return Decision(name is not None, name)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str | None  # the policy that matched (None: none did)

    @property
    def details(self) -> str:
        """Envoy's %RESPONSE_CODE_DETAILS% for a denial."""
        return f"rbac_access_denied_matched_policy[{self.policy or 'none'}]"


def parse_rules(node: Node) -> Rules:
    raw = node.value()
    action = node.enum("action", ACTIONS, "ALLOW")

    def policy(name: str, value: Any) -> Policy:
        n = Node(value, f"{node.sub('policies')}[{name!r}]")
        permissions = n.items("permissions", parse_permission, required=True)
        principals = n.items("principals", parse_principal, required=True)
        if not permissions:
            raise n.error("needs at least one permission", "permissions")
        if not principals:
            raise n.error("needs at least one principal", "principals")
        for unsupported in ("condition", "checked_condition", "cel_config"):
            if n.raw(unsupported) is not None:
                raise n.error("CEL conditions are not supported by minimesh", unsupported)
        n.finish()
        return Policy(name, permissions, principals)

    policies = node.mapping("policies")
    if node.raw("audit_logging_options") is not None:
        raise node.error("audit logging is not supported by minimesh", "audit_logging_options")
    return Rules(action, tuple(policy(k, policies[k]) for k in sorted(policies)), raw)


def rules_from_dict(raw: Any, path: str = "rules") -> Rules:
    """Parse `rules` given as a dict (ConfigError names the field under `path`)."""
    return Node(raw, path).done(parse_rules)
