"""The kind provider, checked statically (no Docker engine here): the committed config against kind's
v1alpha4 types, the rendered config, the command lines, version rules, the capture pod, and the clear
error when the tools are missing."""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from minimesh import paths
from minimesh.cluster import kind
from minimesh.cluster.provider import ProviderError, get

REPO = Path(os.environ.get("MINIMESH_REPO", Path(__file__).resolve().parents[2]))
CONFIG = REPO / "clusters" / "kind" / "kind-config.yaml"

# kind's config, v1alpha4 (sigs.k8s.io/kind/pkg/apis/config/v1alpha4/types.go), strict: unknown keys fail,
# as kind itself rejects them.
_MOUNT = {
    "type": "object", "additionalProperties": False, "required": ["containerPath", "hostPath"],
    "properties": {
        "containerPath": {"type": "string", "pattern": "^/"}, "hostPath": {"type": "string", "minLength": 1},
        "readOnly": {"type": "boolean"}, "selinuxRelabel": {"type": "boolean"},
        "propagation": {"enum": ["None", "HostToContainer", "Bidirectional"]},
    },
}
_PORT = {
    "type": "object", "additionalProperties": False, "required": ["containerPort"],
    "properties": {
        "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
        "hostPort": {"type": "integer", "minimum": -1, "maximum": 65535},
        "listenAddress": {"type": "string"}, "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
    },
}
KIND_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["kind", "apiVersion"],
    "properties": {
        "kind": {"const": "Cluster"}, "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"}, "name": {"type": "string"},
        "featureGates": {"type": "object"}, "runtimeConfig": {"type": "object"},
        "kubeadmConfigPatches": {"type": "array"}, "kubeadmConfigPatchesJSON6902": {"type": "array"},
        "containerdConfigPatches": {"type": "array"}, "containerdConfigPatchesJSON6902": {"type": "array"},
        "networking": {"type": "object", "additionalProperties": False, "properties": {
            k: {} for k in ("ipFamily", "apiServerPort", "apiServerAddress", "podSubnet", "serviceSubnet",
                            "disableDefaultCNI", "kubeProxyMode", "dnsSearch")}},
        "nodes": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "role": {"enum": ["control-plane", "worker"]},
                "image": {"type": "string", "pattern": r"^kindest/node:v1\.32\.\d+@sha256:[0-9a-f]{64}$"},
                "labels": {"type": "object"}, "gpus": {"type": "string"},
                "extraMounts": {"type": "array", "items": _MOUNT},
                "extraPortMappings": {"type": "array", "items": _PORT},
                "kubeadmConfigPatches": {"type": "array"}, "kubeadmConfigPatchesJSON6902": {"type": "array"},
            },
        }},
    },
}


def committed() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(CONFIG.read_text())


def test_committed_config_matches_kinds_types() -> None:
    jsonschema.validate(committed(), KIND_SCHEMA)


def test_schema_rejects_what_kind_rejects() -> None:
    bad = committed()
    bad["nodes"][0]["extraMount"] = bad["nodes"][0].pop("extraMounts")  # a typo kind would refuse
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, KIND_SCHEMA)


def test_committed_config_pins_the_node_image_and_mounts_the_tree() -> None:
    cfg = committed()
    (node,) = cfg["nodes"]
    assert node["role"] == "control-plane" and node["image"] == kind.NODE_IMAGE
    assert {"hostPath": ".", "containerPath": paths.IMAGE_SOURCE_MOUNT, "readOnly": True} in node["extraMounts"]
    mapped = sorted(p["containerPort"] for p in node["extraPortMappings"])
    assert mapped == [*range(30080, 30090), 31080, 31443]
    assert all(p["hostPort"] == p["containerPort"] and p["listenAddress"] == "127.0.0.1" for p in node["extraPortMappings"])
    assert "featureGates" not in cfg  # SidecarContainers is beta and on in 1.32


def test_render_makes_the_mount_absolute_and_adds_workers(tmp_path: Path) -> None:
    cfg = kind.render_config(committed(), name="lab7", source_root=tmp_path, workers=2)
    jsonschema.validate(cfg, KIND_SCHEMA)
    assert cfg["name"] == "lab7"
    roles = [n.get("role") for n in cfg["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    for node in cfg["nodes"]:  # every node has the tree: pods may land anywhere
        assert {"hostPath": str(tmp_path.resolve()), "containerPath": "/opt/minimesh", "readOnly": True} in node["extraMounts"]
        assert node["image"] == kind.NODE_IMAGE
    assert all("extraPortMappings" not in n for n in cfg["nodes"][1:])  # a host port can be bound once
    assert committed()["nodes"][0]["extraMounts"][0]["hostPath"] == "."  # the template is not modified


def test_render_refuses_a_config_without_the_source_mount(tmp_path: Path) -> None:
    cfg = committed()
    cfg["nodes"][0]["extraMounts"] = []
    with pytest.raises(ProviderError, match="no extraMount with containerPath /opt/minimesh"):
        kind.render_config(cfg, name="x", source_root=tmp_path)
    with pytest.raises(ProviderError, match="kind: Cluster"):
        kind.render_config({"kind": "Config"}, name="x", source_root=tmp_path)


def test_command_lines(tmp_path: Path) -> None:
    cfg, kc = tmp_path / "kind-config.yaml", tmp_path / "kubeconfig"
    assert kind.create_command("mm", cfg, kc) == [
        "kind", "create", "cluster", "--name", "mm", "--config", str(cfg), "--image", kind.NODE_IMAGE,
        "--kubeconfig", str(kc), "--wait", "180s",
    ]
    assert kind.delete_command("mm", kc) == ["kind", "delete", "cluster", "--name", "mm", "--kubeconfig", str(kc)]
    assert kind.load_image_command("mm") == ["kind", "load", "docker-image", "minimesh/minimesh:dev", "--name", "mm"]
    assert kind.get_kubeconfig_command("mm") == ["kind", "get", "kubeconfig", "--name", "mm"]
    assert kind.get_nodes_command("mm") == ["kind", "get", "nodes", "--name", "mm"]
    assert kind.control_plane_container("mm") == "mm-control-plane"


@pytest.mark.parametrize(
    ("text", "ok"),
    [("kind v0.27.0 go1.23.6 linux/amd64", True), ("kind v0.31.2 go1.25 darwin/arm64", True),
     ("kind v0.26.0 go1.23.4 linux/amd64", False), ("kind v0.20.0", False)],
)
def test_kind_version_rule(text: str, ok: bool) -> None:
    if ok:
        assert kind.check_kind_version(text) >= (0, 27, 0)
    else:
        with pytest.raises(ProviderError, match=r"too old.*install kind"):
            kind.check_kind_version(text)
    with pytest.raises(ProviderError, match="cannot read"):
        kind.check_kind_version("kind (devel)")


def test_node_ip_from_docker_inspect() -> None:
    attrs = {"NetworkSettings": {"Networks": {"kind": {"IPAddress": "172.18.0.2"}, "bridge": {"IPAddress": "172.17.0.5"}}}}
    assert kind.node_ip_from_inspect(attrs) == "172.18.0.2"
    assert kind.node_ip_from_inspect({"NetworkSettings": {"Networks": {"other": {"IPAddress": "10.1.1.1"}}}}) == "10.1.1.1"
    assert kind.node_ip_from_inspect({}) is None


def test_capture_pod_is_filled_and_valid() -> None:
    pod = kind.capture_pod_manifest("10.244.0.9", "mm-worker", name="cap-1", namespace="lab6",
                                    capture_filter="tcp port 9080", template=REPO / "clusters" / "capture-pod.yaml")
    kubernetes_validate.validate(pod, "1.32.0", strict=True)
    assert pod["metadata"]["name"] == "cap-1" and pod["metadata"]["namespace"] == "lab6"
    spec = pod["spec"]
    assert spec["nodeName"] == "mm-worker" and spec["hostNetwork"] is True
    (c,) = spec["containers"]
    assert {e["name"]: e["value"] for e in c["env"]} == {"TARGET_POD_IP": "10.244.0.9", "CAPTURE_FILTER": "tcp port 9080"}
    assert set(c["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    script = c["args"][0]
    assert 'ip -o route get "$TARGET_POD_IP"' in script and "tcpdump -i \"$dev\"" in script and "-U --immediate-mode" in script
    assert pod["metadata"]["annotations"]["sidecar.minimesh.io/inject"] == "false"


@pytest.mark.parametrize(("ip", "flt", "needle"), [("10.244.0", "tcp", "not an IP"), ("10.0.0.1", "tcp; rm -rf /", "plain pcap"),
                                                   ("10.0.0.1", "", "plain pcap"), ("10.0.0.1", "$(id)", "plain pcap")])
def test_capture_pod_refuses_bad_input(ip: str, flt: str, needle: str) -> None:
    with pytest.raises(ProviderError, match=needle):
        kind.capture_pod_manifest(ip, "n", name="c", capture_filter=flt, template=REPO / "clusters" / "capture-pod.yaml")


def test_missing_tools_get_install_hints() -> None:
    found = {"docker": "/usr/bin/docker"}
    hints = kind.missing_tools(["kind", "docker", "kubectl"], which=found.get)
    assert hints == [kind.INSTALL_HINTS["kind"], kind.INSTALL_HINTS["kubectl"]]
    assert hints[0].startswith("install kind v0.27.0")


def test_up_without_kind_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: none of kind, docker, kubectl
    monkeypatch.setenv("MINIMESH_STATE_DIR", str(tmp_path / "state"))
    cluster = get("kind", "lab-up")
    assert isinstance(cluster, kind.KindCluster) and cluster.provider == "kind"
    with pytest.raises(ProviderError) as e:
        cluster.up()
    assert "install kind v0.27.0" in str(e.value) and "install kubectl" in str(e.value)
    st = cluster.status()
    assert st["exists"] is False and "install kind" in str(st["error"])
    assert not (tmp_path / "state").exists()  # nothing written before the checks pass


def test_bad_cluster_names_are_refused() -> None:
    with pytest.raises(ProviderError, match="not valid"):
        kind.KindCluster("Bad_Name")


def test_state_dir_follows_minimesh_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMESH_STATE_DIR", str(tmp_path))
    assert kind.state_dir("kind", "mm") == tmp_path / "kind" / "mm"
    assert kind.KindCluster("mm").source_root == paths.SOURCE_ROOT.resolve()
