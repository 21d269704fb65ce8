"""Known HTTP filters, and non-terminal network filters, by name: how to parse their typed_config (and
per-route config) and create them.

Later stages add filters with `register(HttpFilterType(...))` (e.g. envoy.filters.http.rbac) and
`register_network(NetworkFilterType(...))` (e.g. envoy.filters.network.rbac, run before tcp_proxy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minimesh.proxy.config._reader import ConfigError, Node
from minimesh.proxy.filters.base import FilterEnv, HttpFilter


@dataclass(frozen=True)
class HttpFilterType:
    name: str  # "envoy.filters.http.fault"
    type_url: str  # its typed_config @type
    parse: Callable[[Node], Any]  # typed_config -> config object with to_dict()
    create: Callable[[Any, FilterEnv], HttpFilter]
    parse_per_route: Callable[[Node], Any] | None = None  # typed_per_filter_config entry -> config
    per_route_type_url: str | None = None


@dataclass(frozen=True)
class NetworkFilterType:
    """A network filter that runs before the terminal one (http_connection_manager / tcp_proxy).

    `create(config, stats)` gives an object with `allows(ConnectionInfo) -> str | None`: None lets the
    connection go on, a string closes it (the string is Envoy's connection termination details)."""

    name: str
    type_url: str
    parse: Callable[[Node], Any]
    create: Callable[[Any, Any], Any]


_TYPES: dict[str, HttpFilterType] = {}
_NETWORK_TYPES: dict[str, NetworkFilterType] = {}
# Modules of later stages that register a filter when imported, loaded if they exist.
EXTENSION_MODULES = ("minimesh.authz.rbac_filter",)
_loaded = False


def register(t: HttpFilterType) -> None:
    _TYPES[t.name] = t


def register_network(t: NetworkFilterType) -> None:
    _NETWORK_TYPES[t.name] = t


def network_filter(name: str) -> NetworkFilterType | None:
    """The registered non-terminal network filter of that name, or None."""
    _builtin()
    return _NETWORK_TYPES.get(name)


def _builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    import minimesh.proxy.filters  # noqa: F401  (registers the built-in filters)

    for name in EXTENSION_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


def get(name: str) -> HttpFilterType:
    _builtin()
    return _TYPES[name]


def known() -> list[str]:
    _builtin()
    return sorted(_TYPES)


def known_network() -> list[str]:
    _builtin()
    return sorted(_NETWORK_TYPES)


def parse_http_filter(name: str, typed: object, path: str) -> Any:
    _builtin()
    t = _TYPES.get(name)
    if t is None:
        raise ConfigError(path.rsplit(".", 1)[0], f'unknown http filter "{name}" (known: {", ".join(known())}, '
                          "envoy.filters.http.router)")
    node = Node(typed if typed is not None else {}, path)
    got = node.str("@type", t.type_url)
    if got != t.type_url:
        raise node.error(f"filter {name} wants {t.type_url}, got {got}", "@type")
    return node.done(t.parse)


def parse_per_route_config(name: str, typed: object, path: str) -> Any:
    _builtin()
    t = _TYPES.get(name)
    if t is None or t.parse_per_route is None:
        raise ConfigError(path, f'no per-route config for filter "{name}"'
                          f" (filters with one: {', '.join(n for n, x in sorted(_TYPES.items()) if x.parse_per_route)})")
    node = Node(typed, path)
    want = t.per_route_type_url or t.type_url
    got = node.str("@type", want)
    if got != want:
        raise node.error(f"want {want}, got {got}", "@type")
    return node.done(t.parse_per_route)
