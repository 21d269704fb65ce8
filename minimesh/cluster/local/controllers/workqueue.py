"""A work queue with client-go's guarantees, for asyncio.

- a key waits at most once (adding it again while it waits is a no-op);
- a key is handed to one worker at a time; added while being processed, it is handed out again after
  `done`, so a change observed mid-sync is never lost and one object is never synced concurrently;
- `add_after` keeps only the earliest pending wake-up per key (timers, not polling);
- `add_rate_limited` backs off per key exponentially (failures), `forget` resets it.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ShutDown(Exception):
    pass


class WorkQueue:
    def __init__(self, name: str, *, base_delay: float = 0.005, max_delay: float = 60.0):
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[str, int] = {}
        self._shut = False

    # ---- adding ----------------------------------------------------------------------------------
    def add(self, key: str) -> None:
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # handed out again by done()
        self._queue.append(key)
        self._wake()

    def add_after(self, key: str, delay: float) -> None:
        if self._shut:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return  # an earlier wake-up is already armed
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def add_rate_limited(self, key: str) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = min(self.base_delay * (2**n), self.max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    # ---- consuming -------------------------------------------------------------------------------
    async def get(self) -> str:
        while not self._queue:
            if self._shut:
                raise ShutDown(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake()  # pass the wake-up on to another worker
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake()

    def shutdown(self) -> None:
        self._shut = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    # ---- introspection (tests, debugging) ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._queue)

    def pending_timers(self) -> int:
        return len(self._timers)
