"""The HTTP filter seam: what a filter sees for each request and what it may answer.

A filter is created once per HTTP connection manager config (`create(config, env)`) and called for each
request with a `RequestContext`, before the router. It may return a `LocalReply` to answer the request
itself (fault abort, RBAC denial) or None to let it continue. Filters run in `http_filters` order.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from minimesh.proxy.config import NodeInfo, Route, VirtualHost
    from minimesh.proxy.headers import Headers
    from minimesh.proxy.stats import Scope, Stats


@dataclass(slots=True)
class LocalReply:
    """An answer made by the proxy itself."""

    status: int
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    flag: str = ""  # response flag for the access log, e.g. "FI" (fault abort), "RBAC", "NR"
    details: str = ""  # %RESPONSE_CODE_DETAILS%, e.g. "fault_filter_abort", "rbac_access_denied_matched_policy[x]"


@dataclass(slots=True)
class ConnectionInfo:
    """What is known about the downstream connection."""

    remote: tuple[str, int]  # the peer (client) address
    local: tuple[str, int]  # the address the client connected to (the original destination when redirected)
    listener: str = ""  # name of the listener that handled the connection
    direction: str = "UNSPECIFIED"  # the listener's traffic_direction: INBOUND / OUTBOUND
    tls: bool = False
    sni: str = ""
    alpn: str = ""
    peer_sans: tuple[str, ...] = ()  # URI SANs of a verified peer certificate (mTLS)

    @property
    def peer_principal(self) -> str | None:
        """Istio's principal of the peer: its SPIFFE id without "spiffe://" (None without mTLS)."""
        for san in self.peer_sans:
            if san.startswith("spiffe://"):
                return san[len("spiffe://"):]
        return None


@dataclass(slots=True)
class RequestContext:
    """One request as filters see it. Filters may change `headers` (sent upstream as they are)."""

    method: str
    path: str
    authority: str
    headers: Headers
    connection: ConnectionInfo
    virtual_host: VirtualHost | None = None
    route: Route | None = None
    flags: list[str] = field(default_factory=list)  # response flags added by filters (e.g. "DI")

    def per_filter_config(self, name: str) -> Any:
        """The most specific `typed_per_filter_config[name]` (route, then virtual host), or None."""
        if self.route is not None and name in self.route.typed_per_filter_config:
            return self.route.typed_per_filter_config[name]
        if self.virtual_host is not None and name in self.virtual_host.typed_per_filter_config:
            return self.virtual_host.typed_per_filter_config[name]
        return None

    @property
    def route_clusters(self) -> tuple[str, ...]:
        if self.route is None or self.route.route is None:
            return ()
        return self.route.route.cluster_names()


@dataclass(frozen=True, slots=True)
class FilterEnv:
    """What a filter gets at creation: the HCM's stats scope and prefix, the whole stats store, the node."""

    stat_prefix: str
    scope: Scope
    stats: Stats
    node: NodeInfo


class HttpFilter(Protocol):
    name: str

    def on_request(self, ctx: RequestContext) -> LocalReply | Awaitable[LocalReply | None] | None:
        """Called with the request head; return a LocalReply to answer, None to continue (may be async)."""
        ...
