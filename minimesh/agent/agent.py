"""The agent's lifecycle (Istio's pilot-agent): bootstrap, proxy child, status ports, signals, drain.

    start   write the bootstrap → start the status servers (15020, 15021) and the extensions → start
            the proxy (`python -m minimesh.proxy -c <bootstrap>`)
    run     report readiness from the proxy's /ready; run app probes; merge metrics
    SIGTERM drain: fail the proxy's health check (readiness 503: endpoints controllers take the pod out),
            drain its listeners, wait the termination drain duration (or until the proxy is gone), then
            POST /quitquitquit and wait for the proxy to exit; a second SIGTERM/SIGINT skips the wait
    exit    when the proxy exits, with its exit code (a proxy that dies on its own takes the container
            down, and the kubelet restarts it)

Extensions are the seam for what runs next to the proxy in later stages (stage 6: a certificate manager
that sends CSRs to the mesh CA and serves the proxy's certificates): each may add to the bootstrap before
it is written and is started before the proxy and stopped after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from minimesh.agent.bootstrap import BootstrapOptions, build_bootstrap
from minimesh.agent.identity import AgentConfigError, PodIdentity
from minimesh.agent.probers import Probe
from minimesh.agent.proxyproc import Admin, ProxyProcess
from minimesh.agent.status import StatusServer

log = logging.getLogger("minimesh.agent")
BOOTSTRAP_FILE = "envoy-rev.json"  # Istio's name for the bootstrap pilot-agent writes
_CONNECTED = re.compile(r"^control_plane\.connected_state: (\d+)$", re.M)


class Extension(Protocol):
    """Something the agent runs next to the proxy (see the module docstring)."""

    def contribute(self, bootstrap: dict[str, Any]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class AgentSettings:
    bootstrap: BootstrapOptions
    config_path: Path = Path("/etc/minimesh/proxy")
    listen: str = "0.0.0.0"
    status_port: int = 15020
    health_port: int = 15021
    termination_drain: float = 5.0  # Istio's terminationDrainDuration
    proxy_log_level: str = "info"


class Agent:
    def __init__(self, settings: AgentSettings, identity: PodIdentity, app_probers: dict[str, Probe], *,
                 app_metrics: tuple[int, str] | None = None, extensions: tuple[Extension, ...] = ()) -> None:
        self.settings = settings
        self.identity = identity
        self.extensions = extensions
        self.admin = Admin(settings.bootstrap.admin_port)
        self.status = StatusServer(self.admin, app_probers, readiness=self.readiness, quit=self.quit,
                                   app_metrics=app_metrics)
        self.proxy: ProxyProcess | None = None
        self.draining = False  # readiness says no from here on
        self.stopping = False  # we asked the proxy to stop (its exit is expected)
        self._tasks: set[asyncio.Task[None]] = set()
        self._skip_wait = asyncio.Event()

    # ---- startup ---------------------------------------------------------------------------------
    def write_bootstrap(self) -> Path:
        boot = build_bootstrap(self.identity, self.settings.bootstrap)
        for ext in self.extensions:
            ext.contribute(boot)
        path = self.settings.config_path / BOOTSTRAP_FILE
        tmp = path.with_suffix(".tmp")
        try:
            self.settings.config_path.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(boot, indent=2) + "\n")
            os.replace(tmp, path)
        except OSError as e:
            raise AgentConfigError(f"cannot write the proxy bootstrap to {path}: {e.strerror or e}"
                                   " (is the minimesh-envoy volume mounted there, and writable for uid 1337?)") from None
        return path

    async def run(self) -> int:
        path = self.write_bootstrap()
        log.info("agent: %s; bootstrap %s; push server %s", self.identity.node(self.settings.bootstrap.node_type,
                                                                              self.settings.bootstrap.domain)["id"],
                 path, self.settings.bootstrap.discovery_address)
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)
        await self.status.start(s.listen, s.status_port, s.health_port)
        started: list[Extension] = []
        try:
            for ext in self.extensions:
                await ext.start()
                started.append(ext)
            if self.stopping:  # told to stop before there was a proxy to drain
                return 0
            self.proxy = ProxyProcess(str(path), log_level=s.proxy_log_level)
            await self.proxy.start()
            if self.stopping:
                self._spawn(self._stop_proxy())
            code = await self.proxy.wait()
            if not self.stopping:
                log.error("agent: the proxy exited by itself with code %d; exiting too", code)
            else:
                log.info("agent: the proxy exited with code %d; done", code)
            return code
        finally:
            for task in list(self._tasks):
                task.cancel()
            for ext in reversed(started):
                await ext.stop()
            await self.status.stop()
            await self.admin.close()

    # ---- readiness -------------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining: the pod is shutting down"
        status, body = await self.admin.get("/ready")
        if status == 200:
            return True, "LIVE"
        if status == 0:
            return False, f"proxy not answering yet ({body})"
        why = f"proxy {body.strip() or status}"
        _, stats = await self.admin.get("/stats?filter=control_plane.connected_state")
        m = _CONNECTED.search(stats)
        address = self.settings.bootstrap.discovery_address
        if m is None or m.group(1) == "0":
            why += f": not connected to the push server {address} (retrying)"
        else:
            why += f": connected to {address}, waiting for its first complete config"
        return False, why

    # ---- stopping --------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_signal(self, sig: int) -> None:
        if self.stopping:
            log.info("agent: %s again: stopping the proxy now", signal.Signals(sig).name)
            self._skip_wait.set()
            return
        self.stopping = True
        if self.proxy is None:
            log.info("agent: %s before the proxy started: exiting", signal.Signals(sig).name)
            return
        log.info("agent: %s: draining for up to %gs, then stopping the proxy", signal.Signals(sig).name,
                 self.settings.termination_drain)
        self._spawn(self._drain())

    def quit(self) -> None:
        """POST /quitquitquit: stop now (a Job's main container is done)."""
        self.draining = True
        self._skip_wait.set()
        if not self.stopping:  # else a drain is running: it stops the proxy now that the wait is skipped
            self.stopping = True
            self._spawn(self._stop_proxy())

    async def _drain(self) -> None:
        self.draining = True
        await self.admin.post("/healthcheck/fail")
        await self.admin.post("/drain_listeners")
        assert self.proxy is not None
        while self.proxy.proc is None:  # the signal came while the proxy was being started
            await asyncio.sleep(0.05)
        waits = [asyncio.ensure_future(self._skip_wait.wait()), asyncio.ensure_future(self.proxy.wait())]
        try:
            await asyncio.wait(waits, timeout=self.settings.termination_drain, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        await self._stop_proxy()

    async def _stop_proxy(self) -> None:
        if self.proxy is None or not self.proxy.running:
            return
        if not await self.admin.post("/quitquitquit"):
            self.proxy.signal(signal.SIGTERM)
        await self.proxy.stop(grace=self.settings.bootstrap.drain_time + 2)
