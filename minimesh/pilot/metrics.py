"""The push server's Prometheus metrics, with istiod's names (one registry per server instance)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # istiod exposes no *_created series either

# Convergence and debounce are tens of milliseconds to seconds; config sizes bytes to megabytes.
TIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 3, 5, 10, 20, 30)
SIZE_BUCKETS = (1, 10_000, 100_000, 1_000_000, 10_000_000)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.pushes = Counter("pilot_xds_pushes", "Pushes (responses sent) by xDS type.", ["type"], registry=r)
        self.convergence = Histogram(
            "pilot_proxy_convergence_time", "Seconds from a change seen by the server to the proxy's ACK of the push"
            " that carries it.", buckets=TIME_BUCKETS, registry=r)
        self.config_size = Histogram("pilot_xds_config_size_bytes", "Size of each xDS response, by type.", ["type"],
                                     buckets=SIZE_BUCKETS, registry=r)
        self.rejects = Counter("pilot_total_xds_rejects", "Responses the proxies rejected (NACKs), by type.", ["type"],
                               registry=r)
        self.expired_nonce = Counter("pilot_xds_expired_nonce", "Requests with a stale nonce (ignored), by type.",
                                     ["type"], registry=r)
        self.connected = Gauge("pilot_xds", "Connected proxies.", registry=r)
        self.debounce = Histogram("pilot_debounce_time", "Seconds changes waited in the debouncer before a push.",
                                  buckets=TIME_BUCKETS, registry=r)
        self.triggers = Counter("pilot_push_triggers", "Changes that triggered a push, by type.", ["type"], registry=r)
        self.full_pushes = Counter("pilot_full_pushes", "Push rounds that regenerated all config (not EDS only).",
                                   registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
