"""The local provider behind the common `Cluster` interface."""

from __future__ import annotations

from pathlib import Path

from minimesh.cluster.local import lifecycle
from minimesh.cluster.local.layout import ClusterLayout, LayoutError
from minimesh.cluster.local.runtime_state import read_pod_record
from minimesh.cluster.provider import Cluster, ProviderError


class LocalCluster(Cluster):
    provider = "local"

    def __init__(self, name: str):
        self.name = name

    @property
    def layout(self) -> ClusterLayout:
        try:
            return ClusterLayout.load(self.name)
        except LayoutError as e:
            raise ProviderError(str(e)) from None

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig_path

    def up(self, *, wait: bool = True, progress=None) -> lifecycle.UpResult:  # type: ignore[override]
        try:
            return lifecycle.up(self.name, progress=progress)
        except (lifecycle.ClusterError, LayoutError) as e:
            raise ProviderError(str(e)) from None

    def down(self) -> list[str]:  # type: ignore[override]
        return lifecycle.down(self.name)

    def status(self) -> dict[str, object]:
        try:
            return lifecycle.status(self.name)
        except LayoutError as e:
            raise ProviderError(str(e)) from None

    def node_address(self) -> str:
        return self.layout.node_ip

    def pod_netns(self, namespace: str, pod: str) -> str | None:
        layout = self.layout
        if not layout.pods_dir.is_dir():
            return None
        for d in layout.pods_dir.iterdir():
            rec = read_pod_record(layout.pods_dir, d.name)
            if rec and rec.namespace == namespace and rec.name == pod:
                return rec.netns
        return None
