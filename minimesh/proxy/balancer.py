"""Stage 3 exercise: which endpoint of a cluster gets the request? (Envoy's load balancers)

The proxy keeps one balancer object per cluster (its `lb_policy`) and calls `pick` for every request
(and again for each retry). An endpoint is anything with:
  * `address` — "10.244.0.7:9080";
  * `healthy` — False when the control plane marks it UNHEALTHY/DRAINING or outlier detection ejected it;
  * `weight`  — its load_balancing_weight (all 1 in this mesh).
`pick` returns None when no endpoint is healthy: the proxy answers 503 with response flag UH.
(Real Envoy has a "panic threshold": below 50 % healthy it balances over all endpoints. We don't.)
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar


class Endpoint(Protocol):
    @property
    def address(self) -> str: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def weight(self) -> int: ...


E = TypeVar("E", bound=Endpoint)


class RoundRobin:
    """ROUND_ROBIN: take the healthy endpoints in turn."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, endpoints: Sequence[E]) -> E | None:
        """Return the next healthy endpoint in turn, or None when none is healthy.

        Over n consecutive picks with n healthy endpoints, each one is returned exactly once. The list may
        change between calls (endpoints come and go); just keep going round what is there now.
        """
        # BEGIN EXERCISE lab-03
        # TODO: keep only healthy endpoints; return None if there are none, else the one at
        #   self._next modulo their number, and advance self._next.
        raise NotImplementedError("lab 03: pick: keep only healthy endpoints; return None if there are none, else the one at")
        # END EXERCISE


class LeastRequest:
    """LEAST_REQUEST: Envoy's "power of two choices" — sample two, keep the less busy one."""

    def __init__(self, choice_count: int = 2) -> None:
        self.choice_count = choice_count

    def pick(self, endpoints: Sequence[E], active_requests: Mapping[str, int], rng: random.Random) -> E | None:
        """Return a healthy endpoint with few requests in flight, or None when none is healthy.

        `active_requests[address]` is the number of requests in flight to that endpoint (missing = 0).
        Draw `self.choice_count` healthy endpoints at random with `rng` (with replacement, as Envoy does)
        and return the one with the fewest active requests (the first drawn on a tie). A single healthy
        endpoint is returned without drawing.
        """
        # BEGIN EXERCISE lab-03
        # TODO: keep only healthy endpoints (None if none); draw choice_count of them with
        #   rng.randrange and return the one with the fewest active_requests.
        raise NotImplementedError("lab 03: pick: keep only healthy endpoints (None if none); draw choice_count of them with")
        # END EXERCISE


class RandomPick:
    """RANDOM: any healthy endpoint, uniformly."""

    def pick(self, endpoints: Sequence[E], rng: random.Random) -> E | None:
        healthy = [e for e in endpoints if e.healthy]
        return rng.choice(healthy) if healthy else None
