"""The proxy as the agent's child process, and the proxy's admin API as the agent uses it.

The child is `python -m minimesh.proxy -c <bootstrap>` with the agent's stdout/stderr (its access log
and its own log end up in `kubectl logs -c minimesh-proxy`). The agent talks to it only through the
admin API on 127.0.0.1: `/ready`, `/stats/prometheus`, `POST /healthcheck/fail`, `/drain_listeners`,
`/quitquitquit`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import aiohttp

log = logging.getLogger("minimesh.agent")


class ProxyProcess:
    def __init__(self, bootstrap_path: str, *, log_level: str = "info", extra_args: Sequence[str] = ()) -> None:
        self.argv = [sys.executable, "-m", "minimesh.proxy", "-c", bootstrap_path, "--log-level", log_level,
                     *extra_args]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.DEVNULL)
        log.info("agent: started the proxy (pid %d): %s", self.proc.pid, " ".join(self.argv[1:]))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def stop(self, grace: float) -> int:
        """Wait up to `grace` for the proxy to exit on its own, then SIGTERM, then SIGKILL."""
        assert self.proc is not None
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                log.warning("agent: proxy still running; sending %s", signal.Signals(sig).name)
                self.signal(sig)
            try:
                return await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace if sig != signal.SIGKILL else 10)
            except TimeoutError:
                continue
        return self.proc.returncode if self.proc.returncode is not None else -signal.SIGKILL


class Admin:
    """HTTP calls to the proxy's admin API (loopback, short timeouts: it answers from memory)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> None:
        self.base = f"http://{host}:{port}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str) -> tuple[int, str]:
        """(status, body); status 0 when the admin server does not answer."""
        try:
            async with self._s().get(self.base + path) as r:
                return r.status, await r.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            errno = getattr(e, "errno", None)
            why = os.strerror(errno) if errno else str(e) or type(e).__name__
            return 0, f"proxy admin {self.base} not answering: {why}"

    async def post(self, path: str) -> bool:
        try:
            async with self._s().post(self.base + path) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
