"""App probes rewritten to the agent's status port, as Istio's `app_probe.go`. Pure.

Once mTLS is STRICT the kubelet, which has no mesh certificate, cannot reach the app through the proxy.
So every httpGet/tcpSocket probe of an app container is pointed at the agent, plain HTTP on 15020:

    readinessProbe: {httpGet: {path: /app-health/<container>/readyz, port: 15020}, ...timings kept}
    livenessProbe:  .../livez      startupProbe: .../startupz

and the original goes to the proxy's env `MESH_KUBE_APP_PROBERS` (Istio's ISTIO_KUBE_APP_PROBERS), a JSON
object from those paths to `{"httpGet": {...}}` or `{"tcpSocket": {...}}` (named ports resolved to
numbers, `timeoutSeconds` when the probe set one); the agent answers the kubelet by running the original
probe from inside the pod. A named port that no containerPort defines is left alone (Istio does the
same); exec and gRPC probes need no rewrite. `sidecar.minimesh.io/rewriteAppHTTPProbers: "false"`
turns the rewrite off for a pod.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping

from minimesh.inject import names
from minimesh.inject.model import Obj, ProbeRewrite

PROBES = {"readinessProbe": "readyz", "livenessProbe": "livez", "startupProbe": "startupz"}


def prober_path(container: str, probe: str) -> str:
    """`/app-health/<container>/readyz` for readinessProbe, `livez`, `startupz` (Istio's FormatProberURL)."""
    return f"/app-health/{container}/{PROBES[probe]}"


def rewrite_enabled(annotations: Mapping[str, str]) -> bool:
    value = annotations.get(names.REWRITE_PROBES_ANNOTATION)
    return value is None or value.strip().lower() not in ("false", "0", "f", "no", "off")


def _resolve_port(port: object, ports: Mapping[str, int]) -> int | None:
    if isinstance(port, bool):
        return None
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        return int(port) if port.isdigit() else ports.get(port)
    return None


def _original(probe: Obj, ports: Mapping[str, int]) -> Obj | None:
    """The probe as the agent must run it, or None when it needs no rewrite (or cannot be rewritten)."""
    for action in ("httpGet", "tcpSocket"):
        got = probe.get(action)
        if isinstance(got, dict):
            port = _resolve_port(got.get("port"), ports)
            if port is None or port == names.STATUS_PORT:  # unknown named port, or already rewritten
                return None
            out: Obj = {action: {**copy.deepcopy(got), "port": port}}
            if isinstance(probe.get("timeoutSeconds"), int):
                out["timeoutSeconds"] = probe["timeoutSeconds"]
            return out
    return None


def _rewritten(probe: Obj, path: str) -> Obj:
    """The probe the kubelet runs instead: same timings, HTTP GET on the agent's status port."""
    new = {k: copy.deepcopy(v) for k, v in probe.items() if k not in ("httpGet", "tcpSocket")}
    http: Obj = {"path": path, "port": names.STATUS_PORT}
    headers = (probe.get("httpGet") or {}).get("httpHeaders")
    if headers:
        http["httpHeaders"] = copy.deepcopy(headers)
    new["httpGet"] = http  # scheme HTTP (the agent probes HTTPS apps itself), host: the pod IP
    return new


def rewrite_probes(containers: list[Obj]) -> tuple[tuple[ProbeRewrite, ...], dict[str, Obj]]:
    """(probe replacements, the MESH_KUBE_APP_PROBERS object) for the app containers of a pod."""
    rewrites: list[ProbeRewrite] = []
    probers: dict[str, Obj] = {}
    for i, c in enumerate(containers):
        if c.get("name") == names.PROXY_CONTAINER:
            continue
        ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []
                 if isinstance(p, dict) and p.get("name") and isinstance(p.get("containerPort"), int)}
        for probe_field in PROBES:
            probe = c.get(probe_field)
            if not isinstance(probe, dict):
                continue
            original = _original(probe, ports)
            if original is None:
                continue
            path = prober_path(c["name"], probe_field)
            probers[path] = original
            rewrites.append(ProbeRewrite(i, probe_field, _rewritten(probe, path)))
    return tuple(rewrites), probers


def probers_env(probers: Mapping[str, Obj]) -> str:
    """The env value: compact JSON with sorted keys, so the same pod always gets the same text."""
    return json.dumps(probers, sort_keys=True, separators=(",", ":"))
