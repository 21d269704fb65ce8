"""Which cluster minimesh talks to, whatever the provider (local, kind, minikube).

Everything above the cluster layer (graders, notebooks, `minimesh apply/exec/logs`, the mesh's own
components) goes through `current()` and the Kubernetes API only, so it runs the same on every provider.
Provider-specific powers (creating the cluster, loading images, capturing packets in a pod's network
namespace) sit behind this small interface.
"""

from __future__ import annotations

import os
import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

PROVIDERS = ("local", "kind", "minikube")
DEFAULT_NAME = "minimesh"


class ProviderError(RuntimeError):
    """Something about the cluster is wrong; the message says what to do next."""


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


class Cluster(ABC):
    provider: str
    name: str

    @property
    @abstractmethod
    def kubeconfig(self) -> Path: ...

    @abstractmethod
    def up(self, *, wait: bool = True) -> None: ...

    @abstractmethod
    def down(self) -> None: ...

    @abstractmethod
    def status(self) -> dict[str, object]: ...

    @abstractmethod
    def node_address(self) -> str:
        """Address at which the host reaches NodePort services."""

    def pod_netns(self, namespace: str, pod: str) -> str | None:
        """Name of the pod's network namespace on this host, where the provider exposes it (local)."""
        return None

    def api_client(self) -> ApiClient:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def default_provider() -> str:
    env = os.environ.get("MINIMESH_PROVIDER")
    if env:
        if env not in PROVIDERS:
            raise ProviderError(f"MINIMESH_PROVIDER={env!r} is not one of {', '.join(PROVIDERS)}")
        return env
    return "local" if platform.system() == "Linux" else "kind"


def get(provider: str | None = None, name: str | None = None) -> Cluster:
    provider = provider or default_provider()
    name = name or os.environ.get("MINIMESH_CLUSTER", DEFAULT_NAME)
    if provider == "local":
        from minimesh.cluster.local.cluster import LocalCluster

        return LocalCluster(name)
    if provider == "kind":
        from minimesh.cluster.kind import KindCluster

        return KindCluster(name)
    if provider == "minikube":
        from minimesh.cluster.minikube import MinikubeCluster

        return MinikubeCluster(name)
    raise ProviderError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")


def _from_kube_context() -> tuple[str, str] | None:
    """(provider, name) from kubectl's current context, when it is one minimesh created."""
    import yaml

    from minimesh.cluster.local.kubeconfig import user_kubeconfig

    try:
        ctx = (yaml.safe_load(user_kubeconfig().read_text()) or {}).get("current-context") or ""
    except (OSError, yaml.YAMLError):
        return None
    if ctx.startswith("minimesh-"):
        return "local", ctx.removeprefix("minimesh-")
    if ctx.startswith("kind-"):
        return "kind", ctx.removeprefix("kind-")
    return None


def current() -> Cluster:
    """The cluster to use: MINIMESH_PROVIDER / MINIMESH_CLUSTER when set, else the cluster that kubectl's
    current context points at (`minimesh cluster up` makes it current, as kind does), else local "minimesh"."""
    if os.environ.get("MINIMESH_CLUSTER") or os.environ.get("MINIMESH_PROVIDER"):
        return get()
    found = _from_kube_context()
    if found:
        return get(*found)
    return get()
