"""AuthorizationPolicy (security.minimesh.io/v1, the spec of Istio's security.istio.io/v1) as typed objects.

`parse_policy(obj)` validates a whole object and raises `PolicyError` naming the field, e.g.
`AuthorizationPolicy default/details-viewer: spec.rules[0].to[0].operation.methods[1]: 'get' ...`.
Unknown fields are errors too: a typo such as `form:` for `from:` would otherwise widen a rule silently.

Supported: selector.matchLabels, action ALLOW|DENY, rules[].from[].source (principals, namespaces,
ipBlocks, remoteIpBlocks and their not* twins), rules[].to[].operation (hosts, ports, methods, paths and
their not* twins), rules[].when[] with keys request.headers[NAME], source.ip, remote.ip,
source.namespace, source.principal, destination.ip, destination.port. Rejected with a clear message:
AUDIT and CUSTOM actions, requestPrincipals / request.auth.* (they need JWT RequestAuthentication),
path templates ({*}, {**}), targetRef(s).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

API_GROUP = "security.minimesh.io"
API_VERSIONS = (f"{API_GROUP}/v1", f"{API_GROUP}/v1beta1")
KIND = "AuthorizationPolicy"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Action = Literal["ALLOW", "DENY"]


class PolicyError(ValueError):
    """An AuthorizationPolicy that cannot be used; the message names the policy and the field."""


@dataclass(frozen=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[Network, ...] = ()
    not_ip_blocks: tuple[Network, ...] = ()
    remote_ip_blocks: tuple[Network, ...] = ()
    not_remote_ip_blocks: tuple[Network, ...] = ()


@dataclass(frozen=True)
class Operation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()

    @property
    def http_only(self) -> bool:
        """Uses fields that only exist for HTTP (Istio ignores/drops them for plain TCP)."""
        return bool(
            self.hosts or self.not_hosts or self.methods or self.not_methods or self.paths or self.not_paths
        )


ConditionKey = Literal[
    "request.headers",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
]


@dataclass(frozen=True)
class Condition:
    """One `when` entry. `key` is the attribute ("request.headers" with `header` set for headers)."""

    key: ConditionKey
    values: tuple[Any, ...] = ()  # str patterns, networks or ports, by key
    not_values: tuple[Any, ...] = ()
    header: str | None = None  # lower-case header name for request.headers[NAME]

    @property
    def http_only(self) -> bool:
        return self.key == "request.headers"


@dataclass(frozen=True)
class Rule:
    sources: tuple[Source, ...] = ()  # `from`: OR'd; empty = any source
    operations: tuple[Operation, ...] = ()  # `to`: OR'd; empty = any operation
    conditions: tuple[Condition, ...] = ()  # `when`: AND'd


@dataclass(frozen=True)
class AuthorizationPolicy:
    name: str
    namespace: str
    action: Action = "ALLOW"
    rules: tuple[Rule, ...] = ()  # omitted or empty: the policy matches no request
    match_labels: Mapping[str, str] | None = None  # None/{}: every workload of the namespace

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# ---- validation helpers ------------------------------------------------------------------------


class _Path:
    """A field path for messages: spec.rules[0].to[1].operation.methods[2]."""

    def __init__(self, policy: str, parts: str = "") -> None:
        self.policy, self.parts = policy, parts

    def __truediv__(self, name: str) -> _Path:
        return _Path(self.policy, f"{self.parts}.{name}" if self.parts else name)

    def __getitem__(self, i: int) -> _Path:
        return _Path(self.policy, f"{self.parts}[{i}]")

    def error(self, message: str) -> PolicyError:
        return PolicyError(f"{KIND} {self.policy}: {self.parts}: {message}")


def _mapping(
    value: Any, at: _Path, allowed: Sequence[str], unsupported: Mapping[str, str] | None = None
) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise at.error(f"want an object, got {type(value).__name__} {value!r}")
    for key in value:
        if unsupported and key in unsupported:
            raise (at / key).error(unsupported[key])
        if key not in allowed:
            raise (at / str(key)).error(f"unknown field; known fields here: {', '.join(allowed)}")
    return value


def _list(value: Any, at: _Path) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise at.error(f"want a list, got {type(value).__name__} {value!r}")
    return value


def _pattern(value: Any, at: _Path) -> str:
    """A string with Istio's wildcard forms: exact, `abc*`, `*abc` or `*`."""
    if not isinstance(value, str) or not value:
        raise at.error(f"want a non-empty string, got {value!r}")
    if "*" in value[1:-1] or (len(value) > 1 and value[0] == value[-1] == "*"):
        raise at.error(f"{value!r}: '*' may only be the whole value, a prefix ('*abc') or a suffix ('abc*')")
    return value


def _principal(value: Any, at: _Path) -> str:
    p = _pattern(value, at)
    if p.startswith("spiffe://"):
        raise at.error(
            f"{p!r}: write principals without 'spiffe://', e.g. {p[len('spiffe://') :]!r}"
            " (Istio compares the SPIFFE ID without its scheme)"
        )
    return p


def _network(value: Any, at: _Path) -> Network:
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise at.error(f"{value!r} is not an IP address or CIDR block") from None


def _port(value: Any, at: _Path) -> int:
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise at.error(f"{value!r} is not a port number (1-65535; wildcards are not allowed in ports)")
    return int(text)


_METHOD = re.compile(r"^\*?[A-Z]*\*?$")


def _method(value: Any, at: _Path) -> str:
    m = _pattern(value, at)
    if not _METHOD.match(m):
        hint = f"; did you mean {m.upper()!r}?" if m.upper() != m else ""
        raise at.error(f"{m!r} is not an upper-case HTTP method (methods are case-sensitive){hint}")
    return m


def _http_path(value: Any, at: _Path) -> str:
    if isinstance(value, str) and ("{" in value or "}" in value):
        raise at.error(
            f"{value!r}: path templates ({{*}}, {{**}}) are not supported by minimesh; use 'prefix*'"
        )
    p = _pattern(value, at)
    if not (p.startswith("/") or p.startswith("*")):
        raise at.error(f"{p!r} must start with '/' (or be a '*suffix' pattern)")
    return p


def _values(spec: Mapping, field: str, at: _Path, parse) -> tuple:
    return tuple(parse(v, (at / field)[i]) for i, v in enumerate(_list(spec.get(field), at / field)))


_JWT = "needs JWT authentication (RequestAuthentication), which minimesh does not implement"

SOURCE_FIELDS = {
    "principals": ("principals", _principal),
    "notPrincipals": ("not_principals", _principal),
    "namespaces": ("namespaces", _pattern),
    "notNamespaces": ("not_namespaces", _pattern),
    "ipBlocks": ("ip_blocks", _network),
    "notIpBlocks": ("not_ip_blocks", _network),
    "remoteIpBlocks": ("remote_ip_blocks", _network),
    "notRemoteIpBlocks": ("not_remote_ip_blocks", _network),
}
OPERATION_FIELDS = {
    "hosts": ("hosts", _pattern),
    "notHosts": ("not_hosts", _pattern),
    "ports": ("ports", _port),
    "notPorts": ("not_ports", _port),
    "methods": ("methods", _method),
    "notMethods": ("not_methods", _method),
    "paths": ("paths", _http_path),
    "notPaths": ("not_paths", _http_path),
}


def _source(value: Any, at: _Path) -> Source:
    spec = _mapping(
        value,
        at,
        list(SOURCE_FIELDS),
        {
            "requestPrincipals": f"requestPrincipals {_JWT}",
            "notRequestPrincipals": f"notRequestPrincipals {_JWT}",
        },
    )
    kwargs = {attr: _values(spec, field, at, parse) for field, (attr, parse) in SOURCE_FIELDS.items()}
    if not any(kwargs.values()):
        raise at.error(f"must not be empty: set at least one of {', '.join(SOURCE_FIELDS)}")
    return Source(**kwargs)


def _operation(value: Any, at: _Path) -> Operation:
    spec = _mapping(value, at, list(OPERATION_FIELDS))
    kwargs = {attr: _values(spec, field, at, parse) for field, (attr, parse) in OPERATION_FIELDS.items()}
    if not any(kwargs.values()):
        raise at.error(f"must not be empty: set at least one of {', '.join(OPERATION_FIELDS)}")
    return Operation(**kwargs)


_HEADER_KEY = re.compile(r"^request\.headers\[([^\[\]]+)\]$")
CONDITION_PARSERS = {
    "source.ip": _network,
    "remote.ip": _network,
    "destination.ip": _network,
    "destination.port": _port,
    "source.namespace": _pattern,
    "source.principal": _principal,
}
SUPPORTED_KEYS = ("request.headers[NAME]", *CONDITION_PARSERS)


def _condition(value: Any, at: _Path) -> Condition:
    spec = _mapping(value, at, ["key", "values", "notValues"])
    key = spec.get("key")
    if not isinstance(key, str) or not key:
        raise (at / "key").error("must be set (e.g. request.headers[version], source.ip)")
    header = None
    m = _HEADER_KEY.match(key)
    if m:
        header, parse, name = m.group(1).strip().lower(), _pattern, "request.headers"
    elif key in CONDITION_PARSERS:
        parse, name = CONDITION_PARSERS[key], key
    elif key.startswith("request.auth."):
        raise (at / "key").error(f"{key!r} {_JWT}")
    else:
        raise (at / "key").error(f"{key!r} is not supported; use one of: {', '.join(SUPPORTED_KEYS)}")
    values = _values(spec, "values", at, parse)
    not_values = _values(spec, "notValues", at, parse)
    if not values and not not_values:
        raise at.error("set values or notValues (or both)")
    return Condition(name, values, not_values, header)  # type: ignore[arg-type]


def _rule(value: Any, at: _Path) -> Rule:
    spec = _mapping(value, at, ["from", "to", "when"])
    sources = tuple(
        _source(_mapping(f, (at / "from")[i], ["source"]).get("source"), (at / "from")[i] / "source")
        for i, f in enumerate(_list(spec.get("from"), at / "from"))
    )
    operations = tuple(
        _operation(_mapping(t, (at / "to")[i], ["operation"]).get("operation"), (at / "to")[i] / "operation")
        for i, t in enumerate(_list(spec.get("to"), at / "to"))
    )
    conditions = tuple(
        _condition(w, (at / "when")[i]) for i, w in enumerate(_list(spec.get("when"), at / "when"))
    )
    return Rule(sources, operations, conditions)


def parse_policy(obj: Mapping[str, Any], default_namespace: str = "default") -> AuthorizationPolicy:
    """Validate an AuthorizationPolicy object (as from the Kubernetes API or YAML) into typed form."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = (meta.get("namespace") if isinstance(meta, Mapping) else None) or default_namespace
    root = _Path(f"{namespace}/{name or '?'}")
    if obj.get("apiVersion") not in API_VERSIONS:
        raise (root / "apiVersion").error(f"{obj.get('apiVersion')!r}: want {API_VERSIONS[0]}")
    if obj.get("kind") != KIND:
        raise (root / "kind").error(f"{obj.get('kind')!r}: want {KIND}")
    if not isinstance(name, str) or not name:
        raise (root / "metadata.name").error("must be set")
    spec_at = root / "spec"
    spec = _mapping(
        obj.get("spec"),
        spec_at,
        ["selector", "action", "rules"],
        {
            "provider": "CUSTOM actions with an external provider are not supported by minimesh; use ALLOW or DENY",
            "targetRef": "targetRef is not supported by minimesh; use selector.matchLabels",
            "targetRefs": "targetRefs is not supported by minimesh; use selector.matchLabels",
        },
    )
    action = spec.get("action", "ALLOW")
    if action in ("AUDIT", "CUSTOM"):
        what = "AUDIT needs a logging plugin" if action == "AUDIT" else "CUSTOM needs an external authorizer"
        raise (spec_at / "action").error(f"{action} is not supported by minimesh ({what}); use ALLOW or DENY")
    if action not in ("ALLOW", "DENY"):
        raise (spec_at / "action").error(f"{action!r}: want ALLOW or DENY")
    selector = _mapping(spec.get("selector"), spec_at / "selector", ["matchLabels"])
    labels = _mapping(
        selector.get("matchLabels"),
        spec_at / "selector" / "matchLabels",
        list(selector.get("matchLabels") or {}),
    )
    for k, v in labels.items():
        if not isinstance(v, str):
            raise (spec_at / "selector" / "matchLabels" / str(k)).error(
                f"label values are strings, got {v!r}"
            )
    rules = tuple(
        _rule(r, (spec_at / "rules")[i]) for i, r in enumerate(_list(spec.get("rules"), spec_at / "rules"))
    )
    return AuthorizationPolicy(name, namespace, action, rules, dict(labels) or None)


def parse_policies(
    objs: Sequence[Mapping[str, Any]], default_namespace: str = "default"
) -> list[AuthorizationPolicy]:
    """Parse several objects (e.g. the documents of a YAML file); the first bad one raises."""
    return [parse_policy(o, default_namespace) for o in objs if o]
