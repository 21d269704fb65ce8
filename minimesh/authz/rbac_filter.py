"""The proxy's RBAC filters: `envoy.filters.http.rbac` and `envoy.filters.network.rbac` (stage 7).

Imported by the proxy's filter registry (`EXTENSION_MODULES`), which is how a later stage plugs into the
proxy built in stage 3. The decisions are `rbac.Rules.decide` (pure); this module only gathers the request's
attributes and answers: HTTP 403 `RBAC: access denied` with %RESPONSE_CODE_DETAILS%
`rbac_access_denied_matched_policy[<policy>|none]`, or, for TCP, a closed connection.

Stats as Envoy's: `http.<hcm stat_prefix>.rbac.{allowed,denied,shadow_allowed,shadow_denied}` and
`<stat_prefix>rbac.{allowed,denied,...}` for the network filter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from minimesh.authz.rbac import Attributes, Rules, parse_rules
from minimesh.authz.translate import HTTP_RBAC, HTTP_RBAC_TYPE, NETWORK_RBAC, NETWORK_RBAC_TYPE
from minimesh.proxy.config._reader import Node
from minimesh.proxy.filters.base import ConnectionInfo, FilterEnv, LocalReply, RequestContext
from minimesh.proxy.filters.registry import HttpFilterType, NetworkFilterType, register, register_network
from minimesh.proxy.headers import RequestHeaderView
from minimesh.proxy.stats import Scope

log = logging.getLogger("minimesh.proxy.rbac")

DENIED_BODY = "RBAC: access denied"


@dataclass(frozen=True, slots=True)
class RbacConfig:
    """envoy.extensions.filters.{http,network}.rbac.v3.RBAC (the parts minimesh runs)."""

    type_url: str
    rules: Rules | None = None  # None: nothing enforced
    shadow_rules: Rules | None = None  # evaluated and counted only (Istio's dry-run)
    shadow_rules_stat_prefix: str = ""
    stat_prefix: str = ""  # network filter only

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"@type": self.type_url}
        if self.stat_prefix:
            d["stat_prefix"] = self.stat_prefix
        if self.rules is not None:
            d["rules"] = dict(self.rules.raw)
        if self.shadow_rules is not None:
            d["shadow_rules"] = dict(self.shadow_rules.raw)
        if self.shadow_rules_stat_prefix:
            d["shadow_rules_stat_prefix"] = self.shadow_rules_stat_prefix
        return d


def _parse(node: Node, type_url: str, network: bool) -> RbacConfig:
    if node.raw("matcher") is not None or node.raw("shadow_matcher") is not None:
        raise node.error("the matcher API is not supported by minimesh; use rules", "matcher")
    node.ignore("@type", "track_per_rule_stats", "rules_stat_prefix")
    stat_prefix = node.nonempty_str("stat_prefix") if network else ""
    if network:
        node.enum("enforcement_type", ("ONE_TIME_ON_FIRST_BYTE", "CONTINUOUS"), "ONE_TIME_ON_FIRST_BYTE")
        node.ignore("delay_deny")
    return RbacConfig(type_url, node.obj("rules", parse_rules), node.obj("shadow_rules", parse_rules),
                      node.str("shadow_rules_stat_prefix", ""), stat_prefix)


class _Counters:
    def __init__(self, scope: Scope, shadow_prefix: str) -> None:
        self.allowed, self.denied = scope.counter("allowed"), scope.counter("denied")
        self.shadow_allowed = scope.counter(f"{shadow_prefix}shadow_allowed")
        self.shadow_denied = scope.counter(f"{shadow_prefix}shadow_denied")

    def decide(self, cfg: RbacConfig, attrs: Attributes) -> Any:
        """The enforced decision (None when the filter has no rules); shadow rules are only counted."""
        if cfg.shadow_rules is not None:
            (self.shadow_allowed if cfg.shadow_rules.decide(attrs).allowed else self.shadow_denied).inc()
        if cfg.rules is None:
            return None
        decision = cfg.rules.decide(attrs)
        (self.allowed if decision.allowed else self.denied).inc()
        return decision


def _remote_ip(headers: Any, direct: str) -> str:
    """Envoy's remote address without use_remote_address: the last X-Forwarded-For hop, else the peer."""
    xff = headers.get("x-forwarded-for")
    if xff:
        last = xff.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return direct


def connection_attributes(conn: ConnectionInfo, **http: Any) -> Attributes:
    return Attributes(destination_ip=conn.local[0], destination_port=conn.local[1],
                      direct_remote_ip=conn.remote[0], peer_sans=conn.peer_sans,
                      authenticated=conn.tls and bool(conn.peer_sans), sni=conn.sni, **http)


class HttpRbacFilter:
    name = HTTP_RBAC

    def __init__(self, cfg: RbacConfig, env: FilterEnv) -> None:
        self.cfg = cfg
        scope = env.stats.scope("http", f"{env.stat_prefix}.rbac", "envoy_http_conn_manager_prefix")
        self.counters = _Counters(scope, cfg.shadow_rules_stat_prefix)

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        conn = ctx.connection
        view = RequestHeaderView(ctx.headers, ctx.method, ctx.path, ctx.authority, "https" if conn.tls else "http")
        path = ctx.path.partition("?")[0].partition("#")[0]
        attrs = connection_attributes(conn, remote_ip=_remote_ip(ctx.headers, conn.remote[0]), headers=view,
                                      url_path=path)
        decision = self.counters.decide(self.cfg, attrs)
        if decision is None or decision.allowed:
            return None
        log.debug("rbac: %s %s from %s denied: %s", ctx.method, ctx.path, conn.peer_principal or conn.remote[0],
                  decision.details)
        return LocalReply(403, DENIED_BODY, details=decision.details)


class NetworkRbacFilter:
    """Decides once per connection, before the terminal filter (ONE_TIME_ON_FIRST_BYTE)."""

    name = NETWORK_RBAC

    def __init__(self, cfg: RbacConfig, stats: Any) -> None:
        self.cfg = cfg
        kind = cfg.stat_prefix.split(".", 1)[0] or "rbac"
        self.counters = _Counters(Scope(stats, kind, None, f"{cfg.stat_prefix}rbac."), cfg.shadow_rules_stat_prefix)

    def allows(self, conn: ConnectionInfo) -> str | None:
        """None to go on, or the termination details of a denied connection."""
        decision = self.counters.decide(self.cfg, connection_attributes(conn))
        if decision is None or decision.allowed:
            return None
        return decision.details


register(HttpFilterType(HTTP_RBAC, HTTP_RBAC_TYPE, lambda n: _parse(n, HTTP_RBAC_TYPE, network=False),
                        lambda cfg, env: HttpRbacFilter(cfg, env)))
register_network(NetworkFilterType(NETWORK_RBAC, NETWORK_RBAC_TYPE, lambda n: _parse(n, NETWORK_RBAC_TYPE, network=True),
                                   lambda cfg, stats: NetworkRbacFilter(cfg, stats)))
