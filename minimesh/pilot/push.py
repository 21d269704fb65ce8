"""Push requests and the debouncer (pure: time is passed in).

A burst of changes (a Deployment rolling 10 pods emits dozens of events) should become one push, not
dozens: the debouncer waits for a quiet period (100 ms without a new change) but never longer than a
maximum delay after the first change (1 s), like istiod's PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX.
Merged requests keep the earliest change time, from which convergence time is measured.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PushRequest:
    """What changed. `full=False` means only endpoints changed: an EDS-only (incremental) push."""

    full: bool
    services: frozenset[str] = frozenset()  # keys ns/name of Services whose object or endpoints changed
    namespaces: frozenset[str] = frozenset()  # namespaces where pods changed (their proxies' inbound side)
    everything: bool = False  # a change that may concern every proxy (Sidecar, Namespace, mesh config)
    clusters: frozenset[str] = frozenset()  # EDS-only: the cluster names whose endpoints changed
    reasons: Counter[str] = field(default_factory=Counter)  # trigger type -> count (pilot_push_triggers)
    start: float = 0.0  # monotonic time the first change was seen

    def merge(self, other: PushRequest) -> PushRequest:
        return PushRequest(
            full=self.full or other.full,
            services=self.services | other.services,
            namespaces=self.namespaces | other.namespaces,
            everything=self.everything or other.everything,
            clusters=self.clusters | other.clusters,
            reasons=self.reasons + other.reasons,
            start=min(self.start, other.start),
        )


class Debouncer:
    def __init__(self, quiet: float = 0.1, max_delay: float = 1.0) -> None:
        if quiet < 0 or max_delay < quiet:
            raise ValueError(f"debounce: want 0 <= quiet <= max_delay, got quiet={quiet} max_delay={max_delay}")
        self.quiet = quiet
        self.max_delay = max_delay
        self._pending: PushRequest | None = None
        self._first = 0.0
        self._last = 0.0
        self.events = 0  # changes merged into the pending request

    def add(self, request: PushRequest, now: float) -> None:
        if self._pending is None:
            self._pending, self._first = request, now
            self.events = 0
        else:
            self._pending = self._pending.merge(request)
        self._last = now
        self.events += 1

    def deadline(self) -> float | None:
        """When the pending request is due (None: nothing pending)."""
        if self._pending is None:
            return None
        return min(self._last + self.quiet, self._first + self.max_delay)

    def take(self, now: float) -> tuple[PushRequest, float] | None:
        """The merged request and how long it was held, once due; else None."""
        due = self.deadline()
        if due is None or now < due:
            return None
        request, held = self._pending, now - self._first
        self._pending = None
        assert request is not None
        return request, held
