"""Retry decisions (pure): may this outcome of an upstream attempt be retried under the policy?

Outcome kinds: "connect_failure" (UF), "reset" (connection closed before the response head, UC),
"protocol_error" (garbage from the upstream, UPE), "per_try_timeout", or a response status.
Envoy's meaning of retry_on: 5xx = any 5xx response, or no response at all (connect failure, reset,
timeout); gateway-error = 502/503/504 or no response; reset = no response; connect-failure = connect
failures only; retriable-4xx = 409; retriable-status-codes = the listed statuses.
"""

from __future__ import annotations

import random

from minimesh.proxy.config import RetryPolicy

NO_RESPONSE = frozenset({"connect_failure", "reset", "protocol_error", "per_try_timeout"})


def retriable(policy: RetryPolicy | None, kind: str, status: int = 0) -> bool:
    if policy is None or not policy.retry_on:
        return False
    on = policy.retry_on
    if kind in NO_RESPONSE:
        if "5xx" in on or "gateway-error" in on or "reset" in on:
            return True
        return kind == "connect_failure" and ("connect-failure" in on or "reset-before-request" in on)
    if status >= 500 and "5xx" in on:
        return True
    if status in (502, 503, 504) and "gateway-error" in on:
        return True
    if status == 409 and "retriable-4xx" in on:
        return True
    return "retriable-status-codes" in on and status in policy.retriable_status_codes


def backoff(policy: RetryPolicy, retry_number: int, rng: random.Random) -> float:
    """Envoy's jittered exponential back-off: uniform in [0, base * 2^(n-1)), capped at max_interval."""
    ceiling = min(policy.base_interval * (2 ** (retry_number - 1)), policy.max_interval)
    return rng.uniform(0, ceiling)
