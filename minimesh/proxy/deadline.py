"""A cheaper `asyncio.timeout` for the per-request hot path (one timer handle, no coroutine).

    dl = Deadline()            # for the current task
    with dl:
        dl.set(0.5)            # (re)arm; set(None) disarms
        await something()      # TimeoutError when the deadline passes

Nesting works like asyncio.timeout: each deadline only turns its OWN cancellation into TimeoutError.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    __slots__ = ("_cancelling", "_handle", "_loop", "_task", "expired")

    def __init__(self) -> None:
        task = asyncio.current_task()
        assert task is not None, "Deadline needs a running task"
        self._task = task
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self.expired = False

    def set(self, delay: float | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if delay is not None and not self.expired:
            self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.expired = True
        self._task.cancel()

    def __enter__(self) -> Deadline:
        self._cancelling = self._task.cancelling()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.expired and exc_type is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from exc
