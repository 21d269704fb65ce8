"""envoy.filters.http.fault: inject delays and aborts (Envoy's HTTPFault config shape).

Per route, `typed_per_filter_config["envoy.filters.http.fault"]` replaces the filter's own config (what
Istio does for VirtualService `fault`). Delay runs first, then abort; flags DI / FI in the access log.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from minimesh.proxy.config._reader import Node, format_duration
from minimesh.proxy.config.route import HeaderMatcher, parse_header_matcher
from minimesh.proxy.filters.base import FilterEnv, LocalReply, RequestContext
from minimesh.proxy.filters.registry import HttpFilterType, register

NAME = "envoy.filters.http.fault"
TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


@dataclass(frozen=True, slots=True)
class Percent:
    numerator: int = 0
    denominator: str = "HUNDRED"

    def hit(self, rng: random.Random) -> bool:
        return rng.randrange(_DENOMINATORS[self.denominator]) < self.numerator

    def to_dict(self) -> dict[str, Any]:
        return {"numerator": self.numerator, "denominator": self.denominator}


def _percent(node: Node) -> Percent:
    den = node.enum("denominator", tuple(_DENOMINATORS), "HUNDRED")
    return Percent(node.int("numerator", 0, minimum=0, maximum=_DENOMINATORS[den]), den)


@dataclass(frozen=True, slots=True)
class FaultConfig:
    delay: float | None = None  # fixed_delay in seconds
    delay_percent: Percent = Percent()
    header_delay: bool = False
    abort_status: int | None = None
    abort_percent: Percent = Percent()
    header_abort: bool = False
    headers: tuple[HeaderMatcher, ...] = ()
    upstream_cluster: str = ""
    max_active_faults: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"@type": TYPE_URL}
        if self.delay is not None or self.header_delay:
            d["delay"] = {"percentage": self.delay_percent.to_dict(),
                          **({"header_delay": {}} if self.header_delay else {"fixed_delay": format_duration(self.delay or 0)})}
        if self.abort_status is not None or self.header_abort:
            d["abort"] = {"percentage": self.abort_percent.to_dict(),
                          **({"header_abort": {}} if self.header_abort else {"http_status": self.abort_status})}
        if self.headers:
            d["headers"] = [h.to_dict() for h in self.headers]
        if self.upstream_cluster:
            d["upstream_cluster"] = self.upstream_cluster
        if self.max_active_faults is not None:
            d["max_active_faults"] = self.max_active_faults
        return d


def parse_fault(node: Node) -> FaultConfig:
    def delay(n: Node) -> tuple[float | None, Percent, bool]:
        which = n.one_of("fixed_delay", "header_delay")
        pct = n.obj("percentage", _percent) or Percent()
        if which == "header_delay":
            n.mapping("header_delay")
            return None, pct, True
        return n.duration("fixed_delay"), pct, False

    def abort(n: Node) -> tuple[int | None, Percent, bool]:
        which = n.one_of("http_status", "grpc_status", "header_abort")
        if which == "grpc_status":
            raise n.error("grpc_status aborts are not supported (HTTP/1.1 only)", which)
        pct = n.obj("percentage", _percent) or Percent()
        if which == "header_abort":
            n.mapping("header_abort")
            return None, pct, True
        return n.int("http_status", minimum=200, maximum=599), pct, False

    d = node.obj("delay", delay) or (None, Percent(), False)
    a = node.obj("abort", abort) or (None, Percent(), False)
    node.ignore("downstream_nodes", "delay_percent_runtime", "abort_percent_runtime", "delay_duration_runtime",
                "abort_http_status_runtime", "max_active_faults_runtime", "response_rate_limit_percent_runtime",
                "abort_grpc_status_runtime", "disable_downstream_cluster_stats", "filter_metadata", "response_rate_limit")
    max_active = node.uint32_wrapper("max_active_faults", 0) if node.has("max_active_faults") else None
    return FaultConfig(d[0], d[1], d[2], a[0], a[1], a[2], node.items("headers", lambda n: n.done(parse_header_matcher)),
                       node.str("upstream_cluster", ""), max_active)


class FaultFilter:
    name = NAME

    def __init__(self, config: FaultConfig, env: FilterEnv, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        scope = env.stats.scope("http", f"{env.stat_prefix}.fault", "envoy_http_conn_manager_prefix")
        self.delays_injected = scope.counter("delays_injected")
        self.aborts_injected = scope.counter("aborts_injected")
        self.faults_overflow = scope.counter("faults_overflow")
        self.active = scope.gauge("active_faults")

    def on_request(self, ctx: RequestContext) -> Any:
        cfg: FaultConfig = ctx.per_filter_config(NAME) or self.config
        if cfg.delay is None and not cfg.header_delay and cfg.abort_status is None and not cfg.header_abort:
            return None
        if cfg.upstream_cluster and cfg.upstream_cluster not in ctx.route_clusters:
            return None
        if cfg.headers:
            from minimesh.proxy.routing import header_matches  # the stage-3 exercise

            if not all(header_matches(h, ctx.headers.get(h.name)) for h in cfg.headers):
                return None
        if cfg.max_active_faults is not None and self.active.value >= cfg.max_active_faults:
            self.faults_overflow.inc()
            return None
        delay = self._delay(cfg, ctx)
        abort = self._abort(cfg, ctx)
        if delay is None and abort is None:
            return None
        return self._inject(ctx, delay, abort)

    def _delay(self, cfg: FaultConfig, ctx: RequestContext) -> float | None:
        if cfg.header_delay:
            raw = ctx.headers.get("x-envoy-fault-delay-request")
            if raw is None or not raw.isdigit() or not cfg.delay_percent.hit(self.rng):
                return None
            return int(raw) / 1000
        if cfg.delay is not None and cfg.delay_percent.hit(self.rng):
            return cfg.delay
        return None

    def _abort(self, cfg: FaultConfig, ctx: RequestContext) -> int | None:
        if cfg.header_abort:
            raw = ctx.headers.get("x-envoy-fault-abort-request")
            if raw is None or not raw.isdigit() or not 200 <= int(raw) <= 599 or not cfg.abort_percent.hit(self.rng):
                return None
            return int(raw)
        if cfg.abort_status is not None and cfg.abort_percent.hit(self.rng):
            return cfg.abort_status
        return None

    async def _inject(self, ctx: RequestContext, delay: float | None, abort: int | None) -> LocalReply | None:
        self.active.inc()
        try:
            if delay is not None:
                self.delays_injected.inc()
                ctx.flags.append("DI")
                await asyncio.sleep(delay)
            if abort is not None:
                self.aborts_injected.inc()
                return LocalReply(abort, "fault filter abort", flag="FI", details="fault_filter_abort")
            return None
        finally:
            self.active.dec()


register(HttpFilterType(NAME, TYPE_URL, parse_fault, lambda cfg, env: FaultFilter(cfg, env),
                        parse_per_route=parse_fault))
