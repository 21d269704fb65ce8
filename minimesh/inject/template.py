"""What injection adds to a pod: Istio's sidecar template, written out as Python. Pure.

`plan(pod, config)` returns an `Injection` (see model.py): the init container that installs the capture
(`python -m minimesh.init` with the flags the pod's `traffic.sidecar.minimesh.io/*` annotations ask for),
the proxy container (`python -m minimesh.agent proxy sidecar`, uid 1337), the volumes the agent uses,
rewritten app probes, and the labels/annotations Istio sets. Bad annotations raise InjectionError.

Paths inside the proxy container (the agent's side of the contract):

    /etc/minimesh/proxy       minimesh-envoy    emptyDir (Memory): the bootstrap the agent writes
    /var/lib/minimesh/data    minimesh-data     emptyDir: scratch
    /etc/minimesh/pod         minimesh-podinfo  downwardAPI: `labels`, `annotations`
    /var/run/secrets/tokens   minimesh-token    projected SA token `minimesh-token`, audience minimesh-ca
    /var/run/secrets/minimesh minimesh-ca-root  configMap minimesh-ca-root-cert (optional; stage 6)
    /opt/minimesh             minimesh-src      hostPath: the code (read-only), unless the pod has one
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from minimesh.init.annotations import config_from_annotations
from minimesh.init.rules import CaptureConfig, CaptureConfigError
from minimesh.inject import names, probes
from minimesh.inject.model import Injection, InjectionError, Obj, annotations, labels

PROXY_MOUNTS = (
    (names.CA_ROOT_VOLUME, "/var/run/secrets/minimesh"),
    (names.DATA_VOLUME, "/var/lib/minimesh/data"),
    (names.ENVOY_VOLUME, "/etc/minimesh/proxy"),
    (names.TOKEN_VOLUME, "/var/run/secrets/tokens"),
    (names.PODINFO_VOLUME, "/etc/minimesh/pod"),
)
INJECTED_VOLUMES = (names.ENVOY_VOLUME, names.DATA_VOLUME, names.PODINFO_VOLUME, names.TOKEN_VOLUME,
                    names.CA_ROOT_VOLUME, names.SOURCE_VOLUME)
TOKEN_EXPIRATION_SECONDS = 43200
POD_TEMPLATE_HASH = "pod-template-hash"
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class InjectorConfig:
    """The injector's settings (Istio's values.yaml for the sidecar template)."""

    image: str = names.IMAGE
    image_pull_policy: str = "IfNotPresent"
    discovery_address: str = names.DISCOVERY_ADDRESS
    cluster_id: str = "Kubernetes"
    revision: str = "default"
    native_sidecars: bool = False  # Istio's ENABLE_NATIVE_SIDECARS (the server checks the cluster is >= 1.29)
    source_path: str = names.SOURCE_PATH


def parse_bool(value: str | None) -> bool | None:
    """Go's strconv.ParseBool (what Istio uses for its annotations); None when it is not a boolean."""
    if value is None:
        return None
    v = value.strip()
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


# ---- the capture (init container) -----------------------------------------------------------------
def _list(value: object) -> str:
    return "*" if value == "*" else ",".join(str(v) for v in value)  # type: ignore[attr-defined]


def capture_args(cfg: CaptureConfig, container_ports: tuple[int, ...] = ()) -> list[str]:
    """`python -m minimesh.init` flags that install exactly `cfg` (every setting spelled out, so
    `kubectl get pod -o yaml` shows the whole capture, as istio-init's args do)."""
    args = ["-p", str(cfg.proxy_port), "-z", str(cfg.inbound_port), "-u", str(cfg.proxy_uid),
            "-g", str(cfg.proxy_gid), "-m", cfg.redirect_mode,
            "-i", _list(cfg.outbound_cidrs_include), "-x", _list(cfg.outbound_cidrs_exclude),
            "-b", _list(cfg.inbound_ports_include), "-d", _list(cfg.inbound_ports_exclude)]
    if cfg.outbound_ports_include:
        args += ["-q", _list(cfg.outbound_ports_include)]
    if cfg.outbound_ports_exclude:
        args += ["-o", _list(cfg.outbound_ports_exclude)]
    if container_ports:
        args += ["--container-ports", _list(container_ports)]
    return args


def app_ports(pod: Obj) -> list[Obj]:
    """containerPorts of the app containers, in order (the proxy's MESH_POD_PORTS)."""
    out = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        out += [p for p in c.get("ports") or [] if isinstance(p, dict) and isinstance(p.get("containerPort"), int)]
    return out


def _capture(pod: Obj) -> tuple[CaptureConfig, tuple[int, ...]]:
    ports = tuple(dict.fromkeys(p["containerPort"] for p in app_ports(pod)))
    try:
        return config_from_annotations(annotations(pod), ports), ports
    except CaptureConfigError as e:
        raise InjectionError(str(e)) from None


def init_container(config: InjectorConfig, args: list[str], source: str) -> Obj:
    return {
        "name": names.INIT_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "minimesh.init"],
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": False,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
        },
        "volumeMounts": [{"name": source, "mountPath": config.source_path, "readOnly": True}],
    }


# ---- the proxy -----------------------------------------------------------------------------------
def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def proxy_env(pod: Obj, config: InjectorConfig, app_probers: Mapping[str, Obj], prometheus_env: str | None) -> list[Obj]:
    containers = [c["name"] for c in pod["spec"]["containers"]]
    env = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field_env("HOST_IP", "status.hostIP"),
        {"name": "MESH_CLUSTER_ID", "value": config.cluster_id},
        {"name": "MESH_POD_PORTS", "value": json.dumps(app_ports(pod), separators=(",", ":"))},
        {"name": "MESH_APP_CONTAINERS", "value": ",".join(containers)},
    ]
    if app_probers:
        env.append({"name": names.APP_PROBERS_ENV, "value": probes.probers_env(app_probers)})
    if prometheus_env:
        env.append({"name": names.PROMETHEUS_ANNOTATIONS_ENV, "value": prometheus_env})
    return env


def _health_probe(**timing: int) -> Obj:
    return {"httpGet": {"path": "/healthz/ready", "port": names.HEALTH_PORT}, **timing}


def proxy_container(config: InjectorConfig, env: list[Obj], source: str, native: bool) -> Obj:
    proxy: Obj = {
        "name": names.PROXY_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "minimesh.agent"],
        "args": ["proxy", "sidecar", "--discovery-address", config.discovery_address],
        "env": env,
        "ports": [{"containerPort": names.PROMETHEUS_PORT_NUMBER, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": _health_probe(initialDelaySeconds=1, periodSeconds=2, timeoutSeconds=3, failureThreshold=30),
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsGroup": names.PROXY_GID,
            "runAsNonRoot": True,
            "runAsUser": names.PROXY_UID,
        },
        "volumeMounts": [
            *({"name": n, "mountPath": p} for n, p in PROXY_MOUNTS),
            {"name": source, "mountPath": config.source_path, "readOnly": True},
        ],
    }
    if native:
        # A native sidecar keeps running beside the app; its startupProbe holds the next containers back
        # until the proxy is ready (Istio's startupProbe, failureThreshold 600 at 1 s).
        proxy["restartPolicy"] = "Always"
        proxy["startupProbe"] = _health_probe(initialDelaySeconds=0, periodSeconds=1, timeoutSeconds=3,
                                              failureThreshold=600)
    return proxy


# ---- volumes --------------------------------------------------------------------------------------
def _norm(path: object) -> str:
    return str(path).rstrip("/") or "/"


def source_volume(pod: Obj, config: InjectorConfig) -> str | None:
    """Name of a volume the pod already has for the source tree (a hostPath of it), if any."""
    for v in (pod.get("spec") or {}).get("volumes") or []:
        host = v.get("hostPath")
        if isinstance(host, dict) and _norm(host.get("path")) == _norm(config.source_path):
            return str(v["name"])
    return None


def volumes(config: InjectorConfig, with_source: bool) -> list[Obj]:
    out: list[Obj] = [
        {"name": names.ENVOY_VOLUME, "emptyDir": {"medium": "Memory"}},
        {"name": names.DATA_VOLUME, "emptyDir": {}},
        {"name": names.PODINFO_VOLUME, "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}},
        {"name": names.TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": names.TOKEN_AUDIENCE, "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
            "path": "minimesh-token"}}]}},
        {"name": names.CA_ROOT_VOLUME, "configMap": {"name": names.CA_ROOT_CONFIGMAP, "optional": True}},
    ]
    if with_source:
        out.append({"name": names.SOURCE_VOLUME, "hostPath": {"path": config.source_path, "type": "Directory"}})
    return out


def _check_conflicts(pod: Obj, added: list[Obj]) -> None:
    spec = pod["spec"]
    for i, v in enumerate(spec.get("volumes") or []):
        if v["name"] in {a["name"] for a in added}:
            raise InjectionError(f"spec.volumes[{i}]: the pod already has a volume named {v['name']!r}, which"
                                 " injection adds itself; rename that volume")
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            if c["name"] == names.INIT_CONTAINER:
                raise InjectionError(f"spec.{key}[{i}]: the pod already has a container named"
                                     f" {names.INIT_CONTAINER!r}, which injection adds itself; rename it")


# ---- metadata -------------------------------------------------------------------------------------
def workload_name(pod: Obj) -> str:
    """The Deployment (or other owner) a pod belongs to, as Istio's GetDeployMetaFromPod guesses it."""
    meta = pod.get("metadata") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict) and o.get("name")]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    pod_hash = labels(pod).get(POD_TEMPLATE_HASH)
    if owner:
        name = str(owner["name"])
        if owner.get("kind") == "ReplicaSet" and pod_hash and name.endswith(f"-{pod_hash}"):
            return name[: -len(pod_hash) - 1]
        return name
    generate = str(meta.get("generateName") or "")
    if generate:
        base = generate.rstrip("-")
        if pod_hash and base.endswith(f"-{pod_hash}"):  # a ReplicaSet's pod: drop the hash
            base = base[: -len(pod_hash) - 1]
        return base
    return str(meta.get("name") or "")


def canonical_labels(pod: Obj, workload: str | None = None) -> dict[str, str]:
    """service.minimesh.io/canonical-name and -revision, unless the pod sets them (Istio's rules).

    `workload` names the owner when the pod cannot tell (a Deployment's template, injected offline).
    """
    have = labels(pod)
    out: dict[str, str] = {}
    if names.CANONICAL_NAME_LABEL not in have:
        name = have.get("app.kubernetes.io/name") or have.get("app") or workload_name(pod) or workload
        if name and _LABEL_VALUE.match(name):  # a name too long for a label value is left out
            out[names.CANONICAL_NAME_LABEL] = name
    if names.CANONICAL_REVISION_LABEL not in have:
        out[names.CANONICAL_REVISION_LABEL] = have.get("app.kubernetes.io/version") or have.get("version") or "latest"
    return out


def prometheus_merge(current: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """(annotations to set, MESH_PROMETHEUS_ANNOTATIONS value): Istio's metrics merge.

    Prometheus then scrapes the agent (15020 /stats/prometheus), which merges the app's own metrics (as
    its scrape annotations said) with the proxy's. A pod with `prometheus.io/scrape: "false"` is left
    alone; one already pointing at 15020 was merged before.
    """
    if parse_bool(current.get(names.PROMETHEUS_SCRAPE)) is False:
        return {}, None
    if current.get(names.PROMETHEUS_PORT) == str(names.STATUS_PORT):
        return {}, None
    original = {k: current[a] for k, a in (("scrape", names.PROMETHEUS_SCRAPE), ("port", names.PROMETHEUS_PORT),
                                           ("path", names.PROMETHEUS_PATH)) if a in current}
    merged = {names.PROMETHEUS_SCRAPE: "true", names.PROMETHEUS_PORT: str(names.STATUS_PORT),
              names.PROMETHEUS_PATH: "/stats/prometheus"}
    return merged, json.dumps(original, separators=(",", ":")) if original else None


def status_annotation(init_containers: list[str], containers: list[str], volume_names: list[str],
                      revision: str) -> str:
    """sidecar.minimesh.io/status: what injection added (Istio's SidecarInjectionStatus, same field order)."""
    return json.dumps({"initContainers": init_containers, "containers": containers, "volumes": volume_names,
                       "imagePullSecrets": None, "revision": revision or "default"}, separators=(",", ":"))


def wants_native(pod: Obj, config: InjectorConfig) -> bool:
    """The pod's annotation decides when it says true/false; else the injector's setting."""
    said = parse_bool(annotations(pod).get(names.NATIVE_SIDECAR_ANNOTATION))
    return config.native_sidecars if said is None else said


# ---- the whole plan --------------------------------------------------------------------------------
def plan(pod: Obj, config: InjectorConfig | None = None, workload: str | None = None) -> Injection:
    """Everything to add to `pod` (a checked pod that policy.skip_reason let through)."""
    config = config or InjectorConfig()
    native = wants_native(pod, config)
    capture, ports = _capture(pod)
    reuse = source_volume(pod, config)
    added = volumes(config, with_source=reuse is None)
    _check_conflicts(pod, added)
    source = reuse or names.SOURCE_VOLUME

    rewrites: tuple[Any, ...] = ()
    app_probers: dict[str, Obj] = {}
    if probes.rewrite_enabled(annotations(pod)):
        rewrites, app_probers = probes.rewrite_probes(pod["spec"]["containers"])
    prom_annotations, prom_env = prometheus_merge(annotations(pod))

    init = init_container(config, capture_args(capture, ports), source)
    proxy = proxy_container(config, proxy_env(pod, config, app_probers, prom_env), source, native)
    status = status_annotation(
        [names.INIT_CONTAINER, names.PROXY_CONTAINER] if native else [names.INIT_CONTAINER],
        [] if native else [names.PROXY_CONTAINER],
        [v["name"] for v in added],
        config.revision,
    )
    return Injection(
        init_container=init,
        proxy=proxy,
        native=native,
        volumes=tuple(copy.deepcopy(added)),
        probes=rewrites,
        annotations={**prom_annotations, names.STATUS_ANNOTATION: status},
        labels={names.TLS_MODE_LABEL: names.TLS_MODE, **canonical_labels(pod, workload)},
    )
