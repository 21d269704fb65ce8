"""Controller expectations (k8s.io/kubernetes/pkg/controller ControllerExpectations).

A controller that just created N pods must not count them as missing before its informer has seen them,
or it would create them again. It records "I expect N creations / these deletions" and skips managing
replicas until the pod informer has observed them (or the record expired: a lost event must not wedge
the controller forever).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

EXPECTATIONS_TIMEOUT = 5 * 60.0  # as the real controllers


@dataclass
class _Record:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    stamp: float = 0.0


class Expectations:
    def __init__(self, clock: Callable[[], float] = time.monotonic, timeout: float = EXPECTATIONS_TIMEOUT):
        self._clock = clock
        self._timeout = timeout
        self._records: dict[str, _Record] = {}

    def satisfied(self, key: str) -> bool:
        rec = self._records.get(key)
        if rec is None:
            return True  # nothing expected (new controller, or after a restart)
        if rec.adds <= 0 and not rec.deletes:
            return True
        return self._clock() - rec.stamp > self._timeout

    def expect_creations(self, key: str, n: int) -> None:
        rec = self._records.setdefault(key, _Record())
        rec.adds = max(rec.adds, 0) + n
        rec.stamp = self._clock()

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        rec = self._records.setdefault(key, _Record())
        rec.deletes.update(pod_keys)
        rec.stamp = self._clock()

    def creation_observed(self, key: str) -> None:
        rec = self._records.get(key)
        if rec is not None:
            rec.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        rec = self._records.get(key)
        if rec is not None:
            rec.deletes.discard(pod_key)

    def delete(self, key: str) -> None:
        self._records.pop(key, None)

    def pending(self, key: str) -> tuple[int, int]:
        rec = self._records.get(key)
        return (max(rec.adds, 0), len(rec.deletes)) if rec else (0, 0)


class UIDTracking:
    """Pods whose tracking finalizer removal a Job controller is waiting to observe."""

    def __init__(self) -> None:
        self._uids: dict[str, set[str]] = {}

    def expect_removed(self, key: str, uids: Iterable[str]) -> None:
        self._uids.setdefault(key, set()).update(uids)

    def observed(self, key: str, uid: str) -> None:
        s = self._uids.get(key)
        if s is not None:
            s.discard(uid)
            if not s:
                del self._uids[key]

    def expected(self, key: str) -> set[str]:
        return set(self._uids.get(key, ()))

    def delete(self, key: str) -> None:
        self._uids.pop(key, None)
