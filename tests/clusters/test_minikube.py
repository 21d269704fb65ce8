"""The minikube provider, checked statically: the profile, the exact `minikube start` line (and that
clusters/minikube/start.sh is the same line), the other command lines, status parsing, version rules."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import yaml

from minimesh.cluster import minikube
from minimesh.cluster.provider import ProviderError, get

REPO = Path(os.environ.get("MINIMESH_REPO", Path(__file__).resolve().parents[2]))


def profile_data() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO / "clusters" / "minikube" / "profile.yaml").read_text())


def test_committed_profile() -> None:
    p = minikube.load_profile(REPO)
    assert p == minikube.MinikubeProfile(
        profile="minimesh", driver="docker", kubernetes_version="v1.32.2", cpus=2, memory_mib=4096,
        mount_host_path=".", mount_node_path="/opt/minimesh",
    )


def test_start_command_is_the_one_in_start_sh() -> None:
    p = minikube.load_profile(REPO)
    built = minikube.start_command(p, name="minimesh", source_root="$(pwd)")
    assert built == [
        "minikube", "start", "--profile=minimesh", "--driver=docker", "--kubernetes-version=v1.32.2",
        "--cpus=2", "--memory=4096", "--mount", "--mount-string=$(pwd):/opt/minimesh", "--wait=all",
    ]
    (line,) = [ln for ln in (REPO / "clusters" / "minikube" / "start.sh").read_text().splitlines() if ln.startswith("exec ")]
    assert shlex.split(line)[1:] == built
    assert os.access(REPO / "clusters" / "minikube" / "start.sh", os.X_OK)


def test_start_command_uses_the_given_tree(tmp_path: Path) -> None:
    cmd = minikube.start_command(minikube.load_profile(REPO), name="lab", source_root=str(tmp_path))
    assert f"--mount-string={tmp_path}:/opt/minimesh" in cmd and "--profile=lab" in cmd


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"kubernetesVersion": "v1.31.4"}, "want v1.32.x"),
        ({"kubernetesVersion": "latest"}, "want v1.32.x"),
        ({"cpus": 0}, "cpus 0"),
        ({"memory": "4g"}, "memory '4g'"),
        ({"driver": "virtualbox"}, "driver 'virtualbox'"),
        ({"mount": {"hostPath": ".", "nodePath": "/src"}}, "mount.nodePath '/src'"),
        ({"mount": "."}, "mount: want"),
        ({"addons": ["ingress"]}, "unknown keys \\['addons'\\]"),
    ],
)
def test_profile_errors_name_the_key(change: dict, needle: str) -> None:  # type: ignore[type-arg]
    data = {**profile_data(), **change}
    with pytest.raises(ProviderError, match=needle):
        minikube.parse_profile(data, "profile.yaml")
    data = profile_data()
    del data["driver"]
    with pytest.raises(ProviderError, match="missing keys \\['driver'\\]"):
        minikube.parse_profile(data, "profile.yaml")


def test_command_lines(tmp_path: Path) -> None:
    assert minikube.delete_command("mm") == ["minikube", "delete", "--profile=mm"]
    assert minikube.status_command("mm") == ["minikube", "status", "--profile=mm", "--output=json"]
    assert minikube.ip_command("mm") == ["minikube", "ip", "--profile=mm"]
    assert minikube.update_context_command("mm") == ["minikube", "update-context", "--profile=mm"]
    assert minikube.image_load_command("mm") == ["minikube", "image", "load", "minimesh/minimesh:dev", "--profile=mm"]
    assert minikube.image_build_command("mm", tmp_path) == [
        "minikube", "image", "build", "-t", "minimesh/minimesh:dev", "--profile=mm", str(tmp_path),
    ]


def test_status_parsing() -> None:
    running = '{"Name":"mm","Host":"Running","Kubelet":"Running","APIServer":"Running","Kubeconfig":"Configured","Worker":false}'
    assert minikube.parse_status(running) == {
        "host": "Running", "kubelet": "Running", "apiserver": "Running", "kubeconfig": "Configured", "running": True,
    }
    stopped = '[{"Name":"mm","Host":"Stopped","Kubelet":"Stopped","APIServer":"Stopped","Kubeconfig":"Stopped"}]'
    assert minikube.parse_status(stopped)["running"] is False
    absent = minikube.parse_status('* Profile "mm" not found. Run "minikube profile list" to view all profiles.')
    assert absent["running"] is False and "not found" in absent["error"]


@pytest.mark.parametrize(("text", "ok"), [("v1.35.0", True), ("v1.37.2\n", True), ("v1.34.0", False)])
def test_minikube_version_rule(text: str, ok: bool) -> None:
    if ok:
        minikube.check_minikube_version(text)
    else:
        with pytest.raises(ProviderError, match=r"older than v1\.35\.0"):
            minikube.check_minikube_version(text)


def test_up_without_minikube_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("MINIMESH_STATE_DIR", str(tmp_path / "state"))
    cluster = get("minikube", "lab-up")
    assert isinstance(cluster, minikube.MinikubeCluster)
    with pytest.raises(ProviderError, match=r"install minikube v1\.35\.0"):
        cluster.up()
    assert cluster.status()["exists"] is False
    assert not (tmp_path / "state").exists()
