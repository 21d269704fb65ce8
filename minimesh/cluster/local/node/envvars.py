"""A container's environment, built the way the kubelet builds it (pure; objects come from caches).

Order (kubelet `makeEnvironmentVariables`): service link variables, then `envFrom` sources in order,
then `env` entries in order — each `value` expanded with `$(VAR)` over what is defined so far.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minimesh.cluster.local.node import quantity
from minimesh.cluster.local.node.expansion import expand
from minimesh.cluster.local.node.security import ConfigError

Getter = Callable[[str, str], "dict[str, Any] | None"]  # (namespace, name) -> object or None
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


@dataclass
class EnvResult:
    env: dict[str, str]
    warnings: list[str] = field(default_factory=list)  # e.g. invalid keys skipped from envFrom


@dataclass(frozen=True)
class PodContext:
    """Run-time facts about a pod that the downward API can expose."""

    pod: dict[str, Any]
    pod_ip: str
    host_ip: str
    node_allocatable: Mapping[str, str]


def service_env(services: list[dict[str, Any]]) -> dict[str, str]:
    """Docker-link style variables (`DETAILS_SERVICE_HOST`, `DETAILS_PORT_9080_TCP_ADDR`, ...)."""
    env: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: s["metadata"]["name"]):
        spec = svc.get("spec", {})
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        ports = spec.get("ports") or []
        name = svc["metadata"]["name"].upper().replace("-", "_")
        env[f"{name}_SERVICE_HOST"] = ip
        if not ports:
            continue
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
        first = ports[0]
        proto0 = (first.get("protocol") or "TCP").lower()
        env[f"{name}_PORT"] = f"{proto0}://{ip}:{first['port']}"
        for p in ports:
            proto = (p.get("protocol") or "TCP")
            prefix = f"{name}_PORT_{p['port']}_{proto.upper()}"
            env[prefix] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(p["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


def decoded_secret(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def field_ref(ctx: PodContext, path: str) -> str:
    pod = ctx.pod
    meta = pod.get("metadata", {})
    m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod.get("spec", {}).get("nodeName", ""),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", ""),
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
        "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldPath: {path}")


def resource_field_ref(ctx: PodContext, ref: dict[str, Any], default_container: str | None) -> str:
    """`limits.cpu`, `requests.memory`, ... of a container; unset limits are the node's allocatable."""
    resource = ref.get("resource", "")
    cname = ref.get("containerName") or default_container
    spec = ctx.pod.get("spec", {})
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    container = next((c for c in containers if c.get("name") == cname), None)
    if container is None:
        raise ConfigError(f"resourceFieldRef: container {cname!r} not found in the pod")
    kind, _, res = resource.partition(".")
    if kind not in ("limits", "requests") or not res:
        raise ConfigError(f"unsupported resource: {resource}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(res)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(res)
    if raw is None:
        raw = ctx.node_allocatable.get(res, "0") if kind == "limits" else "0"
    divisor = quantity.parse(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = quantity.parse("1")
    value = quantity.parse(raw)
    return str(quantity.ceil_div(value, divisor))


def make_environment(
    ctx: PodContext,
    container: dict[str, Any],
    services: list[dict[str, Any]],
    get_configmap: Getter,
    get_secret: Getter,
) -> EnvResult:
    ns = ctx.pod["metadata"]["namespace"]
    env: dict[str, str] = dict(service_env(services))
    warnings: list[str] = []

    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        if "configMapRef" in src:
            ref = src["configMapRef"]
            obj = get_configmap(ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref["name"]}" not found')
            data = dict(obj.get("data") or {})
        elif "secretRef" in src:
            ref = src["secretRef"]
            obj = get_secret(ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref["name"]}" not found')
            data = decoded_secret(obj)
        else:
            continue
        invalid = []
        for k, v in data.items():
            key = prefix + k
            if not ENV_NAME.match(key):
                invalid.append(key)
                continue
            env[key] = v
        if invalid:
            warnings.append(f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom {'configMap' if 'configMapRef' in src else 'secret'} "
                            f"{ns}/{ref['name']} were skipped since they are considered invalid environment variable names.")

    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value") or "", env)
            continue
        vf = item["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(ctx, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            env[name] = resource_field_ref(ctx, vf["resourceFieldRef"], container.get("name"))
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            obj = get_configmap(ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref["name"]}" not found')
            data = {**(obj.get("data") or {}),
                    **{k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("binaryData") or {}).items()}}
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"couldn't find key {ref['key']} in ConfigMap {ns}/{ref['name']}")
            env[name] = data[ref["key"]]
        elif "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            obj = get_secret(ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref["name"]}" not found')
            data = decoded_secret(obj)
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}")
            env[name] = data[ref["key"]]
    return EnvResult(env, warnings)
