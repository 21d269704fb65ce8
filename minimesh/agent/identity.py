"""Who the pod is, from the container's environment and the downward-API files (pure).

The injected `minimesh-proxy` container gets (see `minimesh/inject/template.py`):

    env   POD_NAME, POD_NAMESPACE, INSTANCE_IP (status.podIP), SERVICE_ACCOUNT, HOST_IP,
          MESH_CLUSTER_ID, MESH_POD_PORTS (JSON list of the app's containerPorts),
          MESH_APP_CONTAINERS (comma-separated), MESH_KUBE_APP_PROBERS, MESH_PROMETHEUS_ANNOTATIONS
    files /etc/minimesh/pod/labels, /etc/minimesh/pod/annotations (downwardAPI: `key="value"` lines)

`PodIdentity.from_env` turns them into one record; whatever is missing or malformed is an
`AgentConfigError` that names the variable (or file) and says what was expected.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from minimesh.xds import node as xnode

REQUIRED_ENV = ("POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "SERVICE_ACCOUNT")
POD_TEMPLATE_HASH = "pod-template-hash"
_EMPTY: Mapping[str, str] = MappingProxyType({})


class AgentConfigError(ValueError):
    """A setting the agent cannot run with; the message names the variable or file."""


@dataclass(frozen=True)
class PodIdentity:
    pod: str
    namespace: str
    ip: str
    service_account: str = "default"
    host_ip: str = ""
    cluster_id: str = "Kubernetes"
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    app_containers: tuple[str, ...] = ()
    pod_ports: tuple[Mapping[str, Any], ...] = ()  # the app containers' containerPorts, as in the pod spec
    workload: str = ""

    def node(self, node_type: str = "sidecar", domain: str = "cluster.local") -> dict[str, Any]:
        """The Envoy `node` of the bootstrap (Istio's id and metadata keys; see minimesh.xds.node)."""
        if node_type not in xnode.NODE_TYPES:
            raise AgentConfigError(f"proxy type {node_type!r}: want one of {', '.join(xnode.NODE_TYPES)}")
        node = xnode.node_dict(self.ip, self.pod, self.namespace, labels=self.labels,
                               service_account=self.service_account, workload=self.workload or None, domain=domain)
        node["id"] = str(xnode.NodeId(node_type, self.ip, self.pod, self.namespace, domain))
        meta = node["metadata"]
        meta["CLUSTER_ID"] = self.cluster_id
        if self.host_ip:
            meta["HOST_IP"] = self.host_ip
        if self.app_containers:
            meta["APP_CONTAINERS"] = ",".join(self.app_containers)
        if self.pod_ports:
            meta["POD_PORTS"] = json.dumps([dict(p) for p in self.pod_ports], separators=(",", ":"))  # a string, as Istio's
        return node

    @classmethod
    def from_env(cls, env: Mapping[str, str], labels_text: str | None = None,
                 annotations_text: str | None = None) -> PodIdentity:
        missing = [k for k in REQUIRED_ENV if not env.get(k)]
        if missing:
            raise AgentConfigError(
                f"environment variable {missing[0]} is not set" + (f" (nor {', '.join(missing[1:])})" if missing[1:] else "")
                + "; the injected container sets it from the downward API, e.g."
                " {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}")
        ip = env["INSTANCE_IP"].strip()
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise AgentConfigError(f"environment variable INSTANCE_IP: {ip!r} is not an IP address"
                                   " (it should come from status.podIP)") from None
        host_ip = env.get("HOST_IP", "").strip()
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise AgentConfigError(f"environment variable HOST_IP: {host_ip!r} is not an IP address") from None
        for var in ("POD_NAME", "POD_NAMESPACE"):
            if "~" in env[var] or (var == "POD_NAMESPACE" and "." in env[var]):
                raise AgentConfigError(f"environment variable {var}: {env[var]!r} is not a valid name")
        labels = parse_downward(labels_text, "labels") if labels_text is not None else {}
        annotations = parse_downward(annotations_text, "annotations") if annotations_text is not None else {}
        containers = tuple(c.strip() for c in env.get("MESH_APP_CONTAINERS", "").split(",") if c.strip())
        return cls(
            pod=env["POD_NAME"], namespace=env["POD_NAMESPACE"], ip=ip,
            service_account=env["SERVICE_ACCOUNT"], host_ip=host_ip,
            cluster_id=env.get("MESH_CLUSTER_ID") or "Kubernetes",
            labels=MappingProxyType(labels), annotations=MappingProxyType(annotations),
            app_containers=containers, pod_ports=parse_pod_ports(env.get("MESH_POD_PORTS", "")),
            workload=workload_name(env["POD_NAME"], labels),
        )


def parse_pod_ports(text: str) -> tuple[Mapping[str, Any], ...]:
    """MESH_POD_PORTS: `[{"name":"http","containerPort":9080}, ...]` ("" or "[]": none)."""
    if not text.strip():
        return ()
    try:
        ports = json.loads(text)
    except json.JSONDecodeError as e:
        raise AgentConfigError(f"environment variable MESH_POD_PORTS: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(ports, list):
        raise AgentConfigError("environment variable MESH_POD_PORTS: want a JSON list of container ports")
    for i, p in enumerate(ports):
        number = p.get("containerPort") if isinstance(p, dict) else None
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            raise AgentConfigError(f"environment variable MESH_POD_PORTS: [{i}]: want an object with a"
                                   f" containerPort between 1 and 65535, got {p!r}")
    return tuple(MappingProxyType(p) for p in ports)


_LINE = re.compile(r'^([^=\s]+)=(".*")$')


def parse_downward(text: str, what: str) -> dict[str, str]:
    """A downward-API labels/annotations file: one `key="value"` per line, the value Go-quoted.

    Values are unquoted as JSON strings (Go's quoting of printable text is JSON's); a value that is not
    valid JSON (a quote left unescaped) is taken between its outer quotes. Other lines are errors.
    """
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if m is None:
            raise AgentConfigError(f"downward-API file {what}, line {n}: want key=\"value\", got {line[:80]!r}")
        key, quoted = m.groups()
        try:
            value = json.loads(quoted)
        except json.JSONDecodeError:
            value = quoted[1:-1]
        out[key] = value if isinstance(value, str) else quoted[1:-1]
    return out


def workload_name(pod: str, labels: Mapping[str, str]) -> str:
    """The workload a pod belongs to, as Istio guesses it: a Deployment's pod `details-v1-7d9c-x2x9` with
    `pod-template-hash: 7d9c` belongs to `details-v1`; a pod without a template hash is its own workload."""
    pod_hash = labels.get(POD_TEMPLATE_HASH)
    if pod_hash:
        marker = f"-{pod_hash}-"
        at = pod.rfind(marker)
        if at > 0:
            return pod[:at]
    return pod
