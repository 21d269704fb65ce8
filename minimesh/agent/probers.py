"""The app's original probes, run by the agent for the kubelet (Istio's app prober).

The injector points every httpGet/tcpSocket probe of an app container at the agent
(`:15020/app-health/<container>/readyz|livez|startupz`) and passes the originals in MESH_KUBE_APP_PROBERS
(Istio's ISTIO_KUBE_APP_PROBERS), a JSON object from those paths to `{"httpGet": {...}}` or
`{"tcpSocket": {...}}` with an optional `timeoutSeconds`. Once mTLS is STRICT the kubelet (no mesh
certificate) cannot reach the app through the proxy; the agent, inside the pod and running as the proxy's
uid (never captured), can.

`parse_probers` is pure; `run_probe` does the I/O. Results follow the kubelet: HTTP 200-399 is a success,
any other status or no answer a failure; TCP: the connection opens.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from minimesh.agent.identity import AgentConfigError

ENV = "MESH_KUBE_APP_PROBERS"
DEFAULT_TIMEOUT = 1.0  # the kubelet's default timeoutSeconds
KINDS = ("readyz", "livez", "startupz")


@dataclass(frozen=True)
class HttpProbe:
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    host: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class TcpProbe:
    port: int
    host: str = ""
    timeout: float = DEFAULT_TIMEOUT


Probe = HttpProbe | TcpProbe


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # what happened, for the response body and the kubelet's event


def _port(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise AgentConfigError(f"{ENV}: {where}.port: want a port number (named ports are resolved by the"
                               f" injector), got {value!r}")
    return value


def parse_probers(text: str | None) -> dict[str, Probe]:
    """`{"/app-health/details/readyz": {"httpGet": {"path": "/health", "port": 9080}}, ...}` → probes by path."""
    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AgentConfigError(f"{ENV}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, dict):
        raise AgentConfigError(f"{ENV}: want a JSON object from /app-health/<container>/<probe> paths to probes")
    out: dict[str, Probe] = {}
    for path, spec in data.items():
        parts = path.split("/")
        if len(parts) != 4 or parts[:2] != ["", "app-health"] or not parts[2] or parts[3] not in KINDS:
            raise AgentConfigError(f"{ENV}: key {path!r}: want /app-health/<container>/{{{','.join(KINDS)}}}")
        if not isinstance(spec, dict):
            raise AgentConfigError(f"{ENV}: {path}: want an object with httpGet or tcpSocket")
        timeout = spec.get("timeoutSeconds", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise AgentConfigError(f"{ENV}: {path}.timeoutSeconds: want a positive number, got {timeout!r}")
        if isinstance(spec.get("httpGet"), dict):
            h = spec["httpGet"]
            scheme = str(h.get("scheme") or "HTTP").upper()
            if scheme not in ("HTTP", "HTTPS"):
                raise AgentConfigError(f"{ENV}: {path}.httpGet.scheme: want HTTP or HTTPS, got {scheme!r}")
            headers = []
            for i, hh in enumerate(h.get("httpHeaders") or []):
                if not isinstance(hh, dict) or not isinstance(hh.get("name"), str) or not hh["name"]:
                    raise AgentConfigError(f"{ENV}: {path}.httpGet.httpHeaders[{i}]: want {{name, value}}")
                headers.append((hh["name"], str(hh.get("value", ""))))
            p = str(h.get("path") or "/")
            out[path] = HttpProbe(_port(h.get("port"), f"{path}.httpGet"), p if p.startswith("/") else "/" + p,
                                  scheme, str(h.get("host") or ""), tuple(headers), float(timeout))
        elif isinstance(spec.get("tcpSocket"), dict):
            t = spec["tcpSocket"]
            out[path] = TcpProbe(_port(t.get("port"), f"{path}.tcpSocket"), str(t.get("host") or ""), float(timeout))
        else:
            raise AgentConfigError(f"{ENV}: {path}: want httpGet or tcpSocket (exec and gRPC probes are not rewritten)")
    return out


async def run_probe(probe: Probe, default_host: str = "127.0.0.1") -> ProbeResult:
    """Run one probe against the app (in the pod's network namespace)."""
    host = probe.host or default_host
    if isinstance(probe, TcpProbe):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, probe.port), probe.timeout)
        except (OSError, TimeoutError) as e:
            return ProbeResult(False, f"tcp {host}:{probe.port}: {_why(e)}")
        writer.close()
        return ProbeResult(True, f"tcp {host}:{probe.port}: connected")
    return await _http(probe, host)


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    errno = getattr(e, "errno", None)
    if errno:
        import os

        return os.strerror(errno)  # asyncio's "Connect call failed" hides ECONNREFUSED's text
    return str(e) or type(e).__name__


async def _http(probe: HttpProbe, host: str) -> ProbeResult:
    import aiohttp

    scheme = probe.scheme.lower()
    netloc = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{netloc}:{probe.port}{probe.path}"
    headers: dict[str, str] = {"User-Agent": "kube-probe/1.32", "Accept": "*/*"}
    headers.update(probe.headers)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=probe.timeout)) as session, \
                session.get(url, headers=headers, allow_redirects=False, ssl=False) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        return ProbeResult(False, f"GET {url}: {_why(e)}")
    return ProbeResult(200 <= status < 400, f"GET {url}: HTTP {status}")


def probe_for(probers: Mapping[str, Probe], path: str) -> Probe | None:
    return probers.get(path.rstrip("/"))
