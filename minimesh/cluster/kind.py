"""The kind provider: Kubernetes 1.32 in Docker containers, the checkout mounted into every node.

Command lines are built by pure functions (tested on their own); `KindCluster` runs them. This module
also holds what kind and minikube share: tool checks, running a tool with a clear error, the per-cluster
state directory, and the host-network capture pod (packet capture where the host cannot enter a pod's
network namespace).
"""

from __future__ import annotations

import copy
import ipaddress
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from minimesh import paths
from minimesh.cluster.provider import Cluster, ProviderError

NODE_IMAGE = "kindest/node:v1.32.2@sha256:f226345927d7e348497136874b6d207e0b32cc52154ad8323129352923a3142f"
KIND_MIN_VERSION = (0, 27, 0)  # the release whose notes list NODE_IMAGE
CONFIG_TEMPLATE = Path("clusters") / "kind" / "kind-config.yaml"
CAPTURE_POD = Path("clusters") / "capture-pod.yaml"
KIND_NETWORK = "kind"  # the docker network kind puts its nodes on
CREATE_WAIT = "180s"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")

INSTALL_HINTS = {
    "kind": "install kind v0.27.0 or newer: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "minikube": "install minikube v1.35.0 or newer: https://minikube.sigs.k8s.io/docs/start/",
    "docker": "install Docker (Docker Engine on Linux, Docker Desktop elsewhere): https://docs.docker.com/get-docker/",
    "kubectl": "install kubectl v1.31-v1.33: https://kubernetes.io/docs/tasks/tools/",
}

Progress = Callable[[str], None]


# ---- shared by kind and minikube ------------------------------------------------------------------------
@dataclass(frozen=True)
class UpResult:
    seconds: float


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ProviderError(
            f"cluster name {name!r} is not valid: use lowercase letters, digits and '-', starting with a letter"
        )
    return name


def state_dir(provider: str, name: str) -> Path:
    """Where minimesh keeps a kind/minikube cluster's kubeconfig and rendered config.

    $MINIMESH_STATE_DIR if set, else ~/.minimesh (not /run: kind users are rarely root)."""
    base = Path(os.environ.get("MINIMESH_STATE_DIR") or Path.home() / ".minimesh")
    return base / provider / name


def missing_tools(tools: Sequence[str], which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """One 'install X: how' line per tool not on PATH."""
    return [INSTALL_HINTS.get(t, f"install {t}") for t in tools if which(t) is None]


def require_tools(tools: Sequence[str]) -> None:
    missing = missing_tools(tools)
    if missing:
        raise ProviderError("missing tools:\n  " + "\n  ".join(missing))


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The first vX.Y.Z in a tool's version output (`kind v0.27.0 go1.23 linux/amd64`, `v1.35.0`)."""
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def version_text(v: tuple[int, int, int]) -> str:
    return "v" + ".".join(map(str, v))


def run_tool(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 900, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure raise ProviderError with the command and the end of its stderr."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **env} if env else None,
        )
    except FileNotFoundError:
        raise ProviderError(f"{argv[0]} is not on PATH; {INSTALL_HINTS.get(argv[0], 'install it')}") from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from None
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ProviderError(f"`{' '.join(argv)}` failed (exit {proc.returncode}):\n{tail}")
    return proc


def capture_pod_manifest(
    target_ip: str,
    node_name: str,
    *,
    name: str,
    namespace: str = "default",
    capture_filter: str = "tcp",
    template: Path | None = None,
) -> dict[str, Any]:
    """clusters/capture-pod.yaml filled in for one target pod (its IP and the node it runs on)."""
    try:
        ipaddress.ip_address(target_ip)
    except ValueError:
        raise ProviderError(f"capture: target pod IP {target_ip!r} is not an IP address") from None
    if not capture_filter.strip() or any(c in capture_filter for c in "\"'`$;\\\n"):
        raise ProviderError(f"capture: filter {capture_filter!r} must be a plain pcap expression")
    source = template or paths.SOURCE_ROOT / CAPTURE_POD
    pod = copy.deepcopy(yaml.safe_load(source.read_text()))
    pod["metadata"]["name"] = name
    pod["metadata"]["namespace"] = namespace
    pod["spec"]["nodeName"] = node_name
    env = {"TARGET_POD_IP": target_ip, "CAPTURE_FILTER": capture_filter}
    for container in pod["spec"]["containers"]:
        for var in container.get("env", []):
            if var["name"] in env:
                var["value"] = env[var["name"]]
    return pod


# ---- kind: pure command lines and config ---------------------------------------------------------------
def render_config(template: Mapping[str, Any], *, name: str, source_root: Path, workers: int = 0) -> dict[str, Any]:
    """The kind config to create `name` with: the source mount made absolute, `workers` extra nodes."""
    config = copy.deepcopy(dict(template))
    if config.get("kind") != "Cluster" or config.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        raise ProviderError(f"{CONFIG_TEMPLATE}: want kind: Cluster, apiVersion: kind.x-k8s.io/v1alpha4")
    nodes = config.get("nodes") or []
    control = [n for n in nodes if n.get("role", "control-plane") == "control-plane"]
    if not control:
        raise ProviderError(f"{CONFIG_TEMPLATE}: no control-plane node")
    if workers < 0:
        raise ProviderError(f"workers={workers}: want 0 or more")
    found = False
    for node in nodes:
        for mount in node.get("extraMounts", []):
            if mount.get("containerPath") == paths.IMAGE_SOURCE_MOUNT:
                mount["hostPath"] = str(Path(source_root).resolve())
                found = True
    if not found:
        raise ProviderError(
            f"{CONFIG_TEMPLATE}: no extraMount with containerPath {paths.IMAGE_SOURCE_MOUNT}; pods need the source tree"
        )
    base = control[0]
    for _ in range(workers):
        worker = {"role": "worker", "extraMounts": copy.deepcopy(base["extraMounts"])}
        if "image" in base:
            worker["image"] = base["image"]
        nodes.append(worker)  # no port mappings: host ports can be bound once
    config["name"] = name
    config["nodes"] = nodes
    return config


def create_command(name: str, config_path: Path, kubeconfig: Path, *, image: str = NODE_IMAGE) -> list[str]:
    return [
        "kind", "create", "cluster", "--name", name, "--config", str(config_path), "--image", image,
        "--kubeconfig", str(kubeconfig), "--wait", CREATE_WAIT,
    ]


def delete_command(name: str, kubeconfig: Path) -> list[str]:
    return ["kind", "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)]


def load_image_command(name: str, image: str = paths.MINIMESH_IMAGE) -> list[str]:
    return ["kind", "load", "docker-image", image, "--name", name]


def get_kubeconfig_command(name: str) -> list[str]:
    return ["kind", "get", "kubeconfig", "--name", name]


def get_clusters_command() -> list[str]:
    return ["kind", "get", "clusters"]


def get_nodes_command(name: str) -> list[str]:
    return ["kind", "get", "nodes", "--name", name]


def control_plane_container(name: str) -> str:
    return f"{name}-control-plane"


def node_ip_from_inspect(attrs: Mapping[str, Any], network: str = KIND_NETWORK) -> str | None:
    """The node container's IPv4 on kind's docker network, from `docker inspect` data."""
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    entry = networks.get(network) or next(iter(networks.values()), None)
    ip = (entry or {}).get("IPAddress")
    return ip or None


def check_kind_version(text: str) -> tuple[int, int, int]:
    v = parse_version(text)
    if v is None:
        raise ProviderError(f"cannot read kind's version from {text.strip()!r}")
    if v < KIND_MIN_VERSION:
        raise ProviderError(
            f"kind {version_text(v)} is too old for node image {NODE_IMAGE.split('@')[0]}: "
            f"{INSTALL_HINTS['kind']}"
        )
    return v


# ---- the provider --------------------------------------------------------------------------------------
class KindCluster(Cluster):
    provider = "kind"

    def __init__(self, name: str, *, source_root: Path | None = None, workers: int | None = None):
        self.name = validate_name(name)
        # the tree pods run: the one this code was imported from (the solved tree in the project's tests)
        self.source_root = Path(source_root or paths.SOURCE_ROOT).resolve()
        if workers is None:
            raw = os.environ.get("MINIMESH_KIND_WORKERS", "0") or "0"
            if not raw.isdigit():
                raise ProviderError(f"MINIMESH_KIND_WORKERS={raw!r}: want a number of worker nodes (0, 1, ...)")
            workers = int(raw)
        self.workers = workers

    @property
    def state(self) -> Path:
        return state_dir("kind", self.name)

    @property
    def kubeconfig(self) -> Path:
        path = self.state / "kubeconfig"
        if not path.exists() and shutil.which("kind") and self._exists():
            self._write_kubeconfig()  # a cluster made by hand from the committed config
        return path

    # -- lifecycle --
    def up(self, *, wait: bool = True, progress: Progress | None = None) -> UpResult:  # type: ignore[override]
        say = progress or (lambda _msg: None)
        started = time.monotonic()
        require_tools(["kind", "docker", "kubectl"])
        from minimesh.cluster.docker_images import build_image, docker_client

        client = docker_client()
        check_kind_version(run_tool(["kind", "version"]).stdout)
        self.state.mkdir(parents=True, exist_ok=True)
        if self._exists():
            say(f"kind cluster {self.name} exists; reusing it")
        else:
            template = yaml.safe_load((self.source_root / CONFIG_TEMPLATE).read_text())
            config = render_config(template, name=self.name, source_root=self.source_root, workers=self.workers)
            config_path = self.state / "kind-config.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            say(f"creating kind cluster {self.name} (Kubernetes {NODE_IMAGE.split(':')[1].split('@')[0]})")
            run_tool(create_command(self.name, config_path, self.state / "kubeconfig"))
        self._write_kubeconfig()
        say(f"building {paths.MINIMESH_IMAGE}")
        build_image(client, progress=lambda line: say(f"image: {line[:80]}"))
        say(f"loading {paths.MINIMESH_IMAGE} into the nodes")
        run_tool(load_image_command(self.name))
        return UpResult(seconds=time.monotonic() - started)

    def down(self) -> list[str]:  # type: ignore[override]
        require_tools(["kind"])
        removed: list[str] = []
        if self._exists():
            run_tool(delete_command(self.name, self.state / "kubeconfig"))
            removed.append(f"kind cluster {self.name}")
        if self.state.exists():
            shutil.rmtree(self.state)
            removed.append(str(self.state))
        return removed

    def status(self) -> dict[str, object]:
        st: dict[str, object] = {"provider": self.provider, "name": self.name, "node_image": NODE_IMAGE}
        missing = missing_tools(["kind", "docker"])
        if missing:
            st.update(exists=False, error="; ".join(missing))
            return st
        exists = self._exists()
        st["exists"] = exists
        if exists:
            st["nodes"] = run_tool(get_nodes_command(self.name)).stdout.split()
            st["kubeconfig"] = str(self.kubeconfig)
            st["node_address"] = self.node_address()
        return st

    def node_address(self) -> str:
        # On Linux the node container's IP is routable from the host (every NodePort works); elsewhere
        # only the extraPortMappings on 127.0.0.1 reach the node.
        if platform.system() != "Linux":
            return "127.0.0.1"
        from minimesh.cluster.docker_images import docker_client

        try:
            attrs = docker_client().containers.get(control_plane_container(self.name)).attrs
        except ProviderError:
            raise
        except Exception as e:  # docker.errors.NotFound
            raise ProviderError(f"kind cluster {self.name} has no node container ({e}); run: minimesh cluster up --provider kind") from None
        return node_ip_from_inspect(attrs) or "127.0.0.1"

    # -- helpers --
    def _exists(self) -> bool:
        out = run_tool(get_clusters_command()).stdout
        return self.name in out.split()

    def _write_kubeconfig(self) -> None:
        text = run_tool(get_kubeconfig_command(self.name)).stdout
        self.state.mkdir(parents=True, exist_ok=True)
        path = self.state / "kubeconfig"
        path.write_text(text)
        path.chmod(0o600)
