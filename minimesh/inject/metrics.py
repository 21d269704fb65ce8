"""The webhook's Prometheus metrics, with Istio's names (one registry per server).

Every request counts once in `sidecar_injection_requests_total` and once in exactly one of
`_success_total` (a patch was sent), `_skip_total{reason}` or `_failure_total{type}`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

from minimesh.inject.review import FAILURE, SKIP, SUCCESS, Reply

disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("sidecar_injection_requests", "Injection requests received.", registry=r)
        self.success = Counter("sidecar_injection_success", "Pods injected (a patch was sent).", registry=r)
        self.skip = Counter("sidecar_injection_skip", "Pods left alone, by reason.", ["reason"], registry=r)
        self.failure = Counter("sidecar_injection_failure", "Requests that failed, by type.", ["type"], registry=r)
        self.time = Histogram("sidecar_injection_time_seconds", "Seconds spent answering a request.",
                              buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=r)

    def record(self, reply: Reply, seconds: float) -> None:
        self.requests.inc()
        self.time.observe(seconds)
        if reply.outcome == SUCCESS:
            self.success.inc()
        elif reply.outcome == SKIP:
            self.skip.labels(reply.reason).inc()
        elif reply.outcome == FAILURE:
            self.failure.labels(reply.reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
