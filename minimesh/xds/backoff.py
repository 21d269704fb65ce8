"""Jittered exponential back-off between reconnects (Envoy's JitteredExponentialBackOffStrategy).

Full jitter: the n-th delay is uniform in [0, min(max, base * 2**n)), so a thousand proxies that lost
the same push server do not all come back in the same millisecond.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float = 0.5, maximum: float = 30.0, rng: random.Random | None = None) -> None:
        if base <= 0 or maximum < base:
            raise ValueError(f"backoff: want 0 < base <= maximum, got base={base} maximum={maximum}")
        self.base = base
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        """After a healthy exchange (a response arrived), start again from `base`."""
        self.attempt = 0
