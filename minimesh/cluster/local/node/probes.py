"""Container probes (startup, readiness, liveness) as the kubelet's prober runs them.

`ProbeState` is the pure threshold logic; `run_probe` performs one check (httpGet and tcpSocket from
the node's network namespace to the pod IP, exec inside the container, grpc health); `ProbeWorker`
loops with the probe's timing and reports result changes to the pod worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minimesh.cluster.local import runtime_state

USER_AGENT = "kube-probe/1.32"
MAX_EXEC_OUTPUT = 10 * 1024


@dataclass
class ProbeSpec:
    kind: str  # startup | readiness | liveness
    probe: dict[str, Any]

    @property
    def initial_delay(self) -> float:
        return float(self.probe.get("initialDelaySeconds", 0))

    @property
    def period(self) -> float:
        return float(self.probe.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.probe.get("timeoutSeconds", 1))

    @property
    def success_threshold(self) -> int:
        return int(self.probe.get("successThreshold", 1))

    @property
    def failure_threshold(self) -> int:
        return int(self.probe.get("failureThreshold", 3))


class ProbeState:
    """Consecutive-result thresholds. `result` is the probe's verdict: True, False, or None (not yet).

    Initial verdicts are the kubelet's: readiness starts False (not ready), liveness True (alive until
    proven otherwise), startup unknown (None) until it succeeds or fails failureThreshold times.
    """

    def __init__(self, spec: ProbeSpec):
        self.spec = spec
        self.result: bool | None = {"liveness": True, "readiness": False}.get(spec.kind)
        self.successes = 0
        self.failures = 0

    def observe(self, ok: bool) -> bool:
        """Record one probe outcome; returns True when the verdict changed."""
        before = self.result
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.spec.success_threshold:
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.spec.failure_threshold:
                self.result = False
        return before != self.result


def named_port(container: dict[str, Any], port: Any) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"unknown port name {port!r}")


async def http_probe(host: str, port: int, action: dict[str, Any], timeout: float) -> tuple[bool, str]:
    scheme = (action.get("scheme") or "HTTP").upper()
    path = action.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    ctx = None
    if scheme == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    headers = {"Host": f"{host}:{port}", "User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
    for h in action.get("httpHeaders") or []:
        headers[h["name"]] = h["value"]
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    url = f"{scheme.lower()}://{host}:{port}{path}"

    async def go() -> tuple[bool, str]:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        try:
            writer.write(request.encode())
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        parts = line.decode(errors="replace").split()
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f'Get "{url}": malformed HTTP response {line[:80]!r}'
        code = int(parts[1])
        if 200 <= code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {code}"

    try:
        return await asyncio.wait_for(go(), timeout)
    except TimeoutError:
        return False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    except OSError as e:
        reason = "connect: connection refused" if isinstance(e, ConnectionRefusedError) else str(e)
        return False, f'Get "{url}": dial tcp {host}:{port}: {reason}'


async def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.close()
        return True, ""
    except TimeoutError:
        return False, f"dial tcp {host}:{port}: i/o timeout"
    except OSError:
        return False, f"dial tcp {host}:{port}: connect: connection refused"


async def exec_probe(rec: runtime_state.ContainerExec | None, command: list[str], timeout: float) -> tuple[bool, str]:
    if rec is None:
        return False, "container is not running"
    proc = await asyncio.create_subprocess_exec(
        *runtime_state.enter_argv(rec, command), env=rec.env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False, f"command {command!r} timed out"
    if proc.returncode == 0:
        return True, ""
    text = out[:MAX_EXEC_OUTPUT].decode(errors="replace").strip()
    return False, text or f"command {command!r} exited with {proc.returncode}"


async def grpc_probe(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    import grpc  # only pods with grpc probes pay for the import

    # grpc.health.v1.HealthCheckRequest{service} / HealthCheckResponse{status}; 1 = SERVING
    req = (b"\x0a" + bytes([len(service)]) + service.encode()) if service else b""
    try:
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            call = channel.unary_unary("/grpc.health.v1.Health/Check",
                                       request_serializer=lambda b: b, response_deserializer=lambda b: b)
            resp = await asyncio.wait_for(call(req), timeout)
    except (TimeoutError, grpc.RpcError) as e:
        return False, f"failed to connect service {host}:{port} within {timeout}s: {e}"
    status = 0
    if len(resp) >= 2 and resp[0] == 0x08:
        status = resp[1]
    if status == 1:
        return True, ""
    return False, f"service unhealthy (responded with {struct.pack('B', status).hex()})"


async def run_probe(probe: dict[str, Any], container: dict[str, Any], pod_ip: str,
                    exec_rec: Callable[[], runtime_state.ContainerExec | None]) -> tuple[bool, str]:
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            act = probe["httpGet"]
            return await http_probe(act.get("host") or pod_ip, named_port(container, act["port"]), act, timeout)
        if "tcpSocket" in probe:
            act = probe["tcpSocket"]
            return await tcp_probe(act.get("host") or pod_ip, named_port(container, act["port"]), timeout)
        if "exec" in probe:
            return await exec_probe(exec_rec(), list(probe["exec"].get("command") or []), timeout)
        if "grpc" in probe:
            act = probe["grpc"]
            return await grpc_probe(pod_ip, int(act["port"]), act.get("service") or "", timeout)
    except ValueError as e:
        return False, str(e)
    return False, "probe has no handler (httpGet, tcpSocket, exec or grpc)"


class ProbeWorker:
    """Runs one probe of one container run until cancelled; `on_change(kind, result, message)` on verdict changes,
    `on_failure(kind, message)` on every failed attempt (events)."""

    def __init__(self, spec: ProbeSpec, container: dict[str, Any], pod_ip: str,
                 exec_rec: Callable[[], runtime_state.ContainerExec | None],
                 on_change: Callable[[str, bool | None, str], None], on_failure: Callable[[str, str], None],
                 gate: Callable[[], bool] = lambda: True):
        self.spec = spec
        self.state = ProbeState(spec)
        self.container = container
        self.pod_ip = pod_ip
        self.exec_rec = exec_rec
        self.on_change = on_change
        self.on_failure = on_failure
        self.gate = gate  # readiness/liveness wait until the startup probe has succeeded
        self.wake = asyncio.Event()

    async def run(self) -> None:
        await asyncio.sleep(self.spec.initial_delay)
        while True:
            if self.gate():
                ok, message = await run_probe(self.spec.probe, self.container, self.pod_ip, self.exec_rec)
                if not ok:
                    self.on_failure(self.spec.kind, message)
                if self.state.observe(ok):
                    self.on_change(self.spec.kind, self.state.result, message)
                if self.spec.kind == "startup" and self.state.result:
                    return  # a startup probe stops once it has succeeded
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.spec.period)
