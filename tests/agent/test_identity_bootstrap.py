"""The agent's pure parts: the pod identity from env + downward-API files, and the proxy bootstrap."""

from __future__ import annotations

import json
from typing import Any

import pytest

from minimesh.agent.bootstrap import BootstrapOptions, build_bootstrap, split_address
from minimesh.agent.identity import AgentConfigError, PodIdentity, parse_downward, workload_name
from minimesh.proxy.config import parse_bootstrap
from minimesh.xds import node as xnode

ENV = {"POD_NAME": "details-v1-7d9c5f-x2x9q", "POD_NAMESPACE": "default", "INSTANCE_IP": "10.244.0.11",
       "SERVICE_ACCOUNT": "bookinfo-details", "HOST_IP": "198.18.0.2", "MESH_CLUSTER_ID": "Kubernetes",
       "MESH_POD_PORTS": '[{"name":"http","containerPort":9080}]', "MESH_APP_CONTAINERS": "details"}
LABELS = 'app="details"\npod-template-hash="7d9c5f"\nversion="v1"\n'
ANNOTATIONS = 'kubernetes.io/config.seen="2025-01-01T00:00:00Z"\nsidecar.minimesh.io/status="{\\"revision\\":\\"default\\"}"\n'


def test_identity_from_env_and_downward_files() -> None:
    ident = PodIdentity.from_env(ENV, LABELS, ANNOTATIONS)
    assert (ident.pod, ident.namespace, ident.ip, ident.service_account) == (
        "details-v1-7d9c5f-x2x9q", "default", "10.244.0.11", "bookinfo-details")
    assert dict(ident.labels) == {"app": "details", "pod-template-hash": "7d9c5f", "version": "v1"}
    assert ident.annotations["sidecar.minimesh.io/status"] == '{"revision":"default"}'
    assert ident.workload == "details-v1"
    node = ident.node()
    assert node["id"] == "sidecar~10.244.0.11~details-v1-7d9c5f-x2x9q.default~default.svc.cluster.local"
    assert xnode.parse_node_id(node["id"]).pod == "details-v1-7d9c5f-x2x9q"
    meta = node["metadata"]
    assert meta["LABELS"]["version"] == "v1" and meta["WORKLOAD_NAME"] == "details-v1"
    assert meta["SERVICE_ACCOUNT"] == "bookinfo-details" and meta["NAMESPACE"] == "default"
    assert json.loads(meta["POD_PORTS"]) == [{"name": "http", "containerPort": 9080}]
    assert ident.node("router")["id"].startswith("router~10.244.0.11~")


@pytest.mark.parametrize("env, what", [
    ({k: v for k, v in ENV.items() if k != "POD_NAME"}, "POD_NAME is not set"),
    ({k: v for k, v in ENV.items() if k != "SERVICE_ACCOUNT"}, "SERVICE_ACCOUNT is not set"),
    ({k: v for k, v in ENV.items() if k not in ("POD_NAMESPACE", "INSTANCE_IP")}, "POD_NAMESPACE is not set (nor INSTANCE_IP)"),
    ({**ENV, "INSTANCE_IP": "10.244.0"}, "INSTANCE_IP: '10.244.0' is not an IP address"),
    ({**ENV, "MESH_POD_PORTS": "[{"}, "MESH_POD_PORTS: not JSON"),
    ({**ENV, "MESH_POD_PORTS": '[{"containerPort": 0}]'}, "MESH_POD_PORTS: [0]: want an object with a containerPort"),
    ({**ENV, "POD_NAMESPACE": "a.b"}, "POD_NAMESPACE: 'a.b' is not a valid name"),
])
def test_bad_environment_is_named(env: dict[str, str], what: str) -> None:
    with pytest.raises(AgentConfigError) as e:
        PodIdentity.from_env(env)
    assert what in str(e.value)


def test_downward_files() -> None:
    # the kubelet writes Go-quoted values; the local cluster leaves inner quotes as they are
    assert parse_downward('a="x"\nb="say \\"hi\\"\\n"\nc="{"k":1}"\n\n', "labels") == {
        "a": "x", "b": 'say "hi"\n', "c": '{"k":1}'}
    with pytest.raises(AgentConfigError, match="labels, line 2"):
        parse_downward('a="x"\nno equals sign\n', "labels")
    assert workload_name("sleep-6d98fcd89c-n42gd", {"pod-template-hash": "6d98fcd89c"}) == "sleep"
    assert workload_name("my-pod", {}) == "my-pod"


def _bootstrap(**kw: Any) -> dict[str, Any]:
    return build_bootstrap(PodIdentity.from_env(ENV, LABELS), BootstrapOptions("minimeshd.mesh-system.svc:15010", **kw))


def test_bootstrap_is_istio_shaped_and_the_proxy_accepts_it() -> None:
    boot = _bootstrap()
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}
    ads = boot["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "GRPC" and ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
    xds = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "xds-grpc")
    assert xds["type"] == "STRICT_DNS"
    assert xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "minimeshd.mesh-system.svc", "port_value": 15010}
    [prom] = boot["static_resources"]["listeners"]
    assert prom["address"]["socket_address"]["port_value"] == 15090
    assert boot["minimesh"]["access_log_path"] == "/dev/stdout"
    parsed = parse_bootstrap(json.loads(json.dumps(boot)))  # what the proxy reads from the file
    assert parsed.node.id.startswith("sidecar~10.244.0.11~") and parsed.dynamic_resources["ads_config"]
    by_ip = build_bootstrap(PodIdentity.from_env(ENV), BootstrapOptions("10.96.0.5:15010", prometheus_port=0))
    assert by_ip["static_resources"]["clusters"][0]["type"] == "STATIC"
    assert by_ip["static_resources"]["listeners"] == []


@pytest.mark.parametrize("address", ["minimeshd", "minimeshd:", ":15010", "minimeshd:99999", "host:port"])
def test_bad_discovery_address(address: str) -> None:
    with pytest.raises(AgentConfigError, match="--discovery-address"):
        split_address(address)
