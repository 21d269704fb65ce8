"""The minikube provider (docker driver): Kubernetes 1.32 in one node container, the checkout mounted in.

The profile lives in clusters/minikube/profile.yaml; `start_command` turns it into the exact
`minikube start` line (clusters/minikube/start.sh is that line for running by hand; a test keeps the
two equal). minikube writes its kubeconfig wherever KUBECONFIG points, so minimesh points it at a file
of its own and leaves ~/.kube/config alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from minimesh import paths
from minimesh.cluster.kind import (
    Progress,
    UpResult,
    missing_tools,
    parse_version,
    require_tools,
    run_tool,
    state_dir,
    validate_name,
    version_text,
)
from minimesh.cluster.provider import Cluster, ProviderError

MINIKUBE_MIN_VERSION = (1, 35, 0)  # first release whose default Kubernetes is 1.32
PROFILE_FILE = Path("clusters") / "minikube" / "profile.yaml"
PROFILE_KEYS = {"profile", "driver", "kubernetesVersion", "cpus", "memory", "mount"}


@dataclass(frozen=True)
class MinikubeProfile:
    profile: str
    driver: str
    kubernetes_version: str
    cpus: int
    memory_mib: int
    mount_host_path: str
    mount_node_path: str


def parse_profile(data: Mapping[str, Any], origin: str = str(PROFILE_FILE)) -> MinikubeProfile:
    """Validate clusters/minikube/profile.yaml; every error names the key and what it wants."""
    if not isinstance(data, Mapping):
        raise ProviderError(f"{origin}: want a mapping of {', '.join(sorted(PROFILE_KEYS))}")
    unknown = set(data) - PROFILE_KEYS
    missing = PROFILE_KEYS - set(data)
    if unknown or missing:
        raise ProviderError(
            f"{origin}: " + "; ".join(
                ([f"unknown keys {sorted(unknown)}"] if unknown else []) + ([f"missing keys {sorted(missing)}"] if missing else [])
            )
        )
    version = str(data["kubernetesVersion"])
    if parse_version(version) is None or not version.startswith("v1.32."):
        raise ProviderError(f"{origin}: kubernetesVersion {version!r}: want v1.32.x (the labs target Kubernetes 1.32)")
    for key in ("cpus", "memory"):
        if not isinstance(data[key], int) or data[key] <= 0:
            raise ProviderError(f"{origin}: {key} {data[key]!r}: want a positive integer")
    mount = data["mount"]
    if not isinstance(mount, Mapping) or set(mount) != {"hostPath", "nodePath"}:
        raise ProviderError(f"{origin}: mount: want {{hostPath: ..., nodePath: {paths.IMAGE_SOURCE_MOUNT}}}")
    if mount["nodePath"] != paths.IMAGE_SOURCE_MOUNT:
        raise ProviderError(f"{origin}: mount.nodePath {mount['nodePath']!r}: pods mount {paths.IMAGE_SOURCE_MOUNT}")
    if data["driver"] not in ("docker", "podman"):
        raise ProviderError(f"{origin}: driver {data['driver']!r}: want docker (or podman)")
    return MinikubeProfile(
        profile=str(data["profile"]),
        driver=str(data["driver"]),
        kubernetes_version=version,
        cpus=int(data["cpus"]),
        memory_mib=int(data["memory"]),
        mount_host_path=str(mount["hostPath"]),
        mount_node_path=str(mount["nodePath"]),
    )


def load_profile(root: Path | None = None) -> MinikubeProfile:
    file = (root or paths.SOURCE_ROOT) / PROFILE_FILE
    try:
        return parse_profile(yaml.safe_load(file.read_text()), str(file))
    except (OSError, yaml.YAMLError) as e:
        raise ProviderError(f"{file}: cannot read the minikube profile: {e}") from None


# ---- pure command lines ---------------------------------------------------------------------------------
def start_command(p: MinikubeProfile, *, name: str, source_root: str) -> list[str]:
    return [
        "minikube", "start", f"--profile={name}", f"--driver={p.driver}",
        f"--kubernetes-version={p.kubernetes_version}", f"--cpus={p.cpus}", f"--memory={p.memory_mib}",
        "--mount", f"--mount-string={source_root}:{p.mount_node_path}", "--wait=all",
    ]


def delete_command(name: str) -> list[str]:
    return ["minikube", "delete", f"--profile={name}"]


def status_command(name: str) -> list[str]:
    return ["minikube", "status", f"--profile={name}", "--output=json"]


def ip_command(name: str) -> list[str]:
    return ["minikube", "ip", f"--profile={name}"]


def update_context_command(name: str) -> list[str]:
    return ["minikube", "update-context", f"--profile={name}"]


def image_load_command(name: str, image: str = paths.MINIMESH_IMAGE) -> list[str]:
    return ["minikube", "image", "load", image, f"--profile={name}"]


def image_build_command(name: str, context_dir: Path, image: str = paths.MINIMESH_IMAGE) -> list[str]:
    return ["minikube", "image", "build", "-t", image, f"--profile={name}", str(context_dir)]


def parse_status(text: str) -> dict[str, Any]:
    """`minikube status -o json` -> {host, kubelet, apiserver, running}; one node's object or a list."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"running": False, "error": text.strip()[:200] or "no output"}
    node = data[0] if isinstance(data, list) and data else data
    if not isinstance(node, dict):
        return {"running": False, "error": f"unexpected status: {text.strip()[:200]}"}
    fields = {k.lower(): node.get(k) for k in ("Host", "Kubelet", "APIServer", "Kubeconfig")}
    fields["running"] = fields.get("host") == "Running" and fields.get("apiserver") == "Running"
    return fields


def check_minikube_version(text: str) -> tuple[int, int, int]:
    v = parse_version(text)
    if v is None:
        raise ProviderError(f"cannot read minikube's version from {text.strip()!r}")
    if v < MINIKUBE_MIN_VERSION:
        raise ProviderError(
            f"minikube {version_text(v)} is older than {version_text(MINIKUBE_MIN_VERSION)}, which Kubernetes 1.32 "
            "needs: install a newer one: https://minikube.sigs.k8s.io/docs/start/"
        )
    return v


# ---- the provider --------------------------------------------------------------------------------------
class MinikubeCluster(Cluster):
    provider = "minikube"

    def __init__(self, name: str, *, source_root: Path | None = None):
        self.name = validate_name(name)
        self.source_root = Path(source_root or paths.SOURCE_ROOT).resolve()

    @property
    def state(self) -> Path:
        return state_dir("minikube", self.name)

    @property
    def kubeconfig(self) -> Path:
        path = self.state / "kubeconfig"
        if not path.exists() and shutil.which("minikube") and self._status().get("running"):
            self.state.mkdir(parents=True, exist_ok=True)
            run_tool(update_context_command(self.name), env={"KUBECONFIG": str(path)})
        return path

    def _env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.state / "kubeconfig")}

    def up(self, *, wait: bool = True, progress: Progress | None = None) -> UpResult:  # type: ignore[override]
        say = progress or (lambda _msg: None)
        started = time.monotonic()
        require_tools(["minikube", "docker", "kubectl"])
        check_minikube_version(run_tool(["minikube", "version", "--short"]).stdout)
        profile = load_profile(self.source_root if (self.source_root / PROFILE_FILE).exists() else None)
        self.state.mkdir(parents=True, exist_ok=True)
        say(f"starting minikube profile {self.name} (Kubernetes {profile.kubernetes_version})")
        run_tool(start_command(profile, name=self.name, source_root=str(self.source_root)), env=self._env(), timeout=1800)
        self._load_image(say)
        return UpResult(seconds=time.monotonic() - started)

    def _load_image(self, say: Progress) -> None:
        from minimesh.cluster.docker_images import (
            build_image,
            context_files,
            docker_client,
            repo_root,
            write_context_dir,
        )

        try:
            client = docker_client()
        except ProviderError:
            client = None
        if client is not None:
            say(f"building {paths.MINIMESH_IMAGE} with the host's Docker engine")
            build_image(client, progress=lambda line: say(f"image: {line[:80]}"))
            say(f"loading {paths.MINIMESH_IMAGE} into minikube")
            run_tool(image_load_command(self.name), env=self._env())
            return
        say(f"building {paths.MINIMESH_IMAGE} inside minikube")
        with tempfile.TemporaryDirectory(prefix="minimesh-image-") as tmp:
            context = write_context_dir(context_files(repo_root()), Path(tmp))
            run_tool(image_build_command(self.name, context), env=self._env(), timeout=1800)

    def down(self) -> list[str]:  # type: ignore[override]
        require_tools(["minikube"])
        removed: list[str] = []
        if self._status().get("host") not in (None, "Nonexistent"):
            run_tool(delete_command(self.name), env=self._env())
            removed.append(f"minikube profile {self.name}")
        if self.state.exists():
            shutil.rmtree(self.state)
            removed.append(str(self.state))
        return removed

    def _status(self) -> dict[str, Any]:
        # `minikube status` exits non-zero when the profile is stopped or absent; its JSON says which.
        proc = run_tool(status_command(self.name), env=self._env(), check=False)
        return parse_status(proc.stdout or proc.stderr)

    def status(self) -> dict[str, object]:
        st: dict[str, object] = {"provider": self.provider, "name": self.name}
        missing = missing_tools(["minikube"])
        if missing:
            st.update(exists=False, error="; ".join(missing))
            return st
        s = self._status()
        st.update(s)
        st["exists"] = s.get("host") not in (None, "Nonexistent")
        if s.get("running"):
            st["kubeconfig"] = str(self.kubeconfig)
            st["node_address"] = self.node_address()
        return st

    def node_address(self) -> str:
        return run_tool(ip_command(self.name), env=self._env()).stdout.strip()
