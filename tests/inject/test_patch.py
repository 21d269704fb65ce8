"""Injection as JSON Patch, on golden pods: the patch is applied with `jsonpatch` (an independent RFC 6902
implementation) and the injected pod is checked field by field and against Kubernetes 1.32's schema."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from minimesh.inject import names, patch, policy
from minimesh.inject.injector import decide
from minimesh.inject.model import Injection, InjectionError, MalformedPod
from minimesh.inject.template import InjectorConfig, plan

GOLDEN = Path(__file__).with_name("golden")
ENABLED = {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}


def pod(**spec: Any) -> dict[str, Any]:
    meta = spec.pop("metadata", {"name": "web", "namespace": "shop"})
    spec.setdefault("containers", [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def inject(p: dict[str, Any], config: InjectorConfig | None = None, ns_labels: Any = ENABLED) -> dict[str, Any]:
    d = decide(p, "shop", ns_labels, config)
    assert d.skip is None, d.skip
    out = jsonpatch.apply_patch(p, d.patch)
    kubernetes_validate.validate(out, "1.32.0", strict=True)
    return out


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ---- the exercise's building blocks ------------------------------------------------------------------
def test_escape_follows_rfc6901() -> None:
    assert patch.escape("sidecar.minimesh.io/status") == "sidecar.minimesh.io~1status"
    assert patch.escape("a~b/c") == "a~0b~1c"
    assert patch.escape("~1") == "~01"  # "~" first, or "~1" would come back as "/"
    assert patch.escape("plain") == "plain"


def test_append_and_set_ops_create_what_is_missing() -> None:
    assert patch.append_ops("/spec/volumes", None, [{"name": "a"}]) == [
        {"op": "add", "path": "/spec/volumes", "value": [{"name": "a"}]}]
    assert patch.append_ops("/spec/volumes", [{"name": "x"}], [{"name": "a"}, {"name": "b"}]) == [
        {"op": "add", "path": "/spec/volumes/-", "value": {"name": "a"}},
        {"op": "add", "path": "/spec/volumes/-", "value": {"name": "b"}}]
    assert patch.append_ops("/spec/volumes", None, []) == []
    assert patch.set_ops("/metadata/labels", None, {"a/b": "1"}) == [
        {"op": "add", "path": "/metadata/labels", "value": {"a/b": "1"}}]
    assert patch.set_ops("/metadata/labels", {"x": "y"}, {"a/b": "1"}) == [
        {"op": "add", "path": "/metadata/labels/a~1b", "value": "1"}]


# ---- golden pods -------------------------------------------------------------------------------------
def test_plain_pod_matches_the_golden_file() -> None:
    """The whole injected pod, reviewed by hand once; any change to the template shows up here.
    After an intended change: MINIMESH_UPDATE_GOLDEN=1 pytest tests/inject/test_patch.py, then review the diff."""
    src = yaml.safe_load((GOLDEN / "plain.yaml").read_text())
    out = inject(src)
    golden = GOLDEN / "plain.injected.yaml"
    if os.environ.get("MINIMESH_UPDATE_GOLDEN"):
        golden.write_text(yaml.safe_dump(out, sort_keys=False))
    assert out == yaml.safe_load(golden.read_text())


def test_plain_pod_gets_init_proxy_volumes_and_metadata() -> None:
    out = inject(pod())
    spec = out["spec"]
    assert [c["name"] for c in spec["containers"]] == ["web", names.PROXY_CONTAINER]
    assert [c["name"] for c in spec["initContainers"]] == [names.INIT_CONTAINER]
    init = spec["initContainers"][0]
    assert init["command"] == ["python", "-m", "minimesh.init"]
    assert init["args"][:10] == ["-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-m", "REDIRECT"]
    assert init["args"][-2:] == ["--container-ports", "8080"]
    sc = init["securityContext"]
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}

    proxy = spec["containers"][1]
    assert proxy["command"] + proxy["args"] == ["python", "-m", "minimesh.agent", "proxy", "sidecar",
                                                "--discovery-address", "minimeshd.mesh-system.svc:15010"]
    psc = proxy["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["runAsNonRoot"]) == (1337, 1337, True)
    assert psc["capabilities"] == {"drop": ["ALL"]} and psc["readOnlyRootFilesystem"] is True
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    assert proxy["ports"] == [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}]
    assert proxy["resources"]["requests"] == {"cpu": "10m", "memory": "40Mi"}
    e = env(proxy)
    assert e["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert e["INSTANCE_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert e["SERVICE_ACCOUNT"] == {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}
    assert e["HOST_IP"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert e["MESH_CLUSTER_ID"] == "Kubernetes"
    assert json.loads(e["MESH_POD_PORTS"]) == [{"name": "http", "containerPort": 8080}]
    assert "restartPolicy" not in proxy

    vols = by_name(spec["volumes"])
    assert vols[names.ENVOY_VOLUME] == {"name": names.ENVOY_VOLUME, "emptyDir": {"medium": "Memory"}}
    assert vols[names.DATA_VOLUME]["emptyDir"] == {}
    token = vols[names.TOKEN_VOLUME]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "minimesh-ca", "expirationSeconds": 43200, "path": "minimesh-token"}
    assert vols[names.CA_ROOT_VOLUME]["configMap"] == {"name": "minimesh-ca-root-cert", "optional": True}
    assert vols[names.SOURCE_VOLUME]["hostPath"] == {"path": "/opt/minimesh", "type": "Directory"}
    fields = {i["fieldRef"]["fieldPath"] for i in vols[names.PODINFO_VOLUME]["downwardAPI"]["items"]}
    assert fields == {"metadata.labels", "metadata.annotations"}
    mounts = {m["mountPath"]: m["name"] for m in proxy["volumeMounts"]}
    assert mounts["/var/run/secrets/tokens"] == names.TOKEN_VOLUME
    assert mounts["/opt/minimesh"] == names.SOURCE_VOLUME

    ann, lab = out["metadata"]["annotations"], out["metadata"]["labels"]
    status = json.loads(ann[names.STATUS_ANNOTATION])
    assert status == {"initContainers": [names.INIT_CONTAINER], "containers": [names.PROXY_CONTAINER],
                      "volumes": [names.ENVOY_VOLUME, names.DATA_VOLUME, names.PODINFO_VOLUME, names.TOKEN_VOLUME,
                                  names.CA_ROOT_VOLUME, names.SOURCE_VOLUME],
                      "imagePullSecrets": None, "revision": "default"}
    assert (ann["prometheus.io/scrape"], ann["prometheus.io/port"], ann["prometheus.io/path"]) == (
        "true", "15020", "/stats/prometheus")
    assert lab == {"security.minimesh.io/tlsMode": "minimesh", "service.minimesh.io/canonical-name": "web",
                   "service.minimesh.io/canonical-revision": "latest"}


def test_existing_metadata_volumes_and_init_containers_are_kept_and_extended() -> None:
    src = pod(
        metadata={"generateName": "shop-7c9d8-", "namespace": "shop",
                  "labels": {"app": "shop", "version": "v2", "pod-template-hash": "7c9d8"},
                  "annotations": {"team.example.com/owner": "ops", "odd~key/x": "1",
                                  "prometheus.io/scrape": "true", "prometheus.io/port": "9000"}},
        initContainers=[{"name": "migrate", "image": "busybox"}],
        volumes=[{"name": "code", "hostPath": {"path": "/opt/minimesh/"}}, {"name": "cache", "emptyDir": {}}],
    )
    src["spec"]["containers"][0]["volumeMounts"] = [{"name": "code", "mountPath": "/opt/minimesh"}]
    out = inject(src)
    spec = out["spec"]
    # Istio's order without native sidecars: the user's init containers first, the capture last.
    assert [c["name"] for c in spec["initContainers"]] == ["migrate", names.INIT_CONTAINER]
    # the pod's own hostPath of the source tree is reused, not added twice
    assert [v["name"] for v in spec["volumes"]][:2] == ["code", "cache"]
    assert names.SOURCE_VOLUME not in by_name(spec["volumes"])
    proxy = by_name(spec["containers"])[names.PROXY_CONTAINER]
    assert {"name": "code", "mountPath": "/opt/minimesh", "readOnly": True} in proxy["volumeMounts"]
    assert json.loads(out["metadata"]["annotations"][names.STATUS_ANNOTATION])["volumes"][-1] == names.CA_ROOT_VOLUME
    ann = out["metadata"]["annotations"]
    assert ann["team.example.com/owner"] == "ops" and ann["odd~key/x"] == "1"
    # metrics merge: the app's own scrape settings move to the agent's env, the annotations point at 15020
    assert ann["prometheus.io/port"] == "15020"
    assert json.loads(env(proxy)["MESH_PROMETHEUS_ANNOTATIONS"]) == {"scrape": "true", "port": "9000"}
    lab = out["metadata"]["labels"]
    assert lab["app"] == "shop" and lab["pod-template-hash"] == "7c9d8"
    assert lab["service.minimesh.io/canonical-name"] == "shop"
    assert lab["service.minimesh.io/canonical-revision"] == "v2"


def test_scrape_false_is_respected() -> None:
    out = inject(pod(metadata={"name": "w", "annotations": {"prometheus.io/scrape": "false"}}))
    assert out["metadata"]["annotations"]["prometheus.io/scrape"] == "false"
    assert "prometheus.io/port" not in out["metadata"]["annotations"]


def test_pod_without_metadata_gets_it_created() -> None:
    src = pod()
    del src["metadata"]
    d = decide(src, "shop", ENABLED)
    assert d.patch[-1]["path"] == "/metadata"
    out = jsonpatch.apply_patch(src, d.patch)
    assert names.STATUS_ANNOTATION in out["metadata"]["annotations"]
    assert out["metadata"]["labels"]["security.minimesh.io/tlsMode"] == "minimesh"


def test_workload_name_comes_from_the_replicaset_owner() -> None:
    src = pod(metadata={"generateName": "details-v1-6b4f-", "labels": {"pod-template-hash": "6b4f"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "details-v1-6b4f",
                                             "uid": "1", "controller": True}]})
    assert inject(src)["metadata"]["labels"]["service.minimesh.io/canonical-name"] == "details-v1"


def test_probes_are_rewritten_to_the_agent() -> None:
    app = {
        "name": "api", "image": "api",
        "ports": [{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9901}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTPS",
                                       "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                           "periodSeconds": 3, "timeoutSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": 9901}, "initialDelaySeconds": 5},
        "startupProbe": {"httpGet": {"path": "/started", "port": 8080}, "failureThreshold": 30},
    }
    other = {"name": "worker", "image": "w",
             "readinessProbe": {"exec": {"command": ["cat", "/tmp/ok"]}},
             "livenessProbe": {"httpGet": {"path": "/x", "port": "nope"}}}  # unknown named port: left alone
    src = pod(containers=[app, other])
    out = inject(src)
    api, worker = out["spec"]["containers"][0], out["spec"]["containers"][1]
    assert api["readinessProbe"] == {"httpGet": {"path": "/app-health/api/readyz", "port": 15020,
                                                 "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                                     "periodSeconds": 3, "timeoutSeconds": 2}
    assert api["livenessProbe"] == {"httpGet": {"path": "/app-health/api/livez", "port": 15020},
                                    "initialDelaySeconds": 5}
    assert api["startupProbe"]["httpGet"] == {"path": "/app-health/api/startupz", "port": 15020}
    assert api["startupProbe"]["failureThreshold"] == 30
    assert worker["readinessProbe"] == other["readinessProbe"] and worker["livenessProbe"] == other["livenessProbe"]
    probers = json.loads(env(by_name(out["spec"]["containers"])[names.PROXY_CONTAINER])["MESH_KUBE_APP_PROBERS"])
    assert probers == {
        "/app-health/api/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTPS",
                                               "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                                   "timeoutSeconds": 2},
        "/app-health/api/livez": {"tcpSocket": {"port": 9901}},
        "/app-health/api/startupz": {"httpGet": {"path": "/started", "port": 8080}},
    }


def test_probe_rewrite_can_be_turned_off() -> None:
    src = pod(metadata={"name": "w", "annotations": {names.REWRITE_PROBES_ANNOTATION: "false"}})
    src["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    out = inject(src)
    assert out["spec"]["containers"][0]["readinessProbe"] == {"httpGet": {"path": "/", "port": 8080}}
    assert "MESH_KUBE_APP_PROBERS" not in env(out["spec"]["containers"][1])


@pytest.mark.parametrize("how", ["annotation", "flag"])
def test_native_sidecar_goes_right_after_the_init_container(how: str) -> None:
    meta = {"name": "job", "annotations": {names.NATIVE_SIDECAR_ANNOTATION: "true"}} if how == "annotation" else None
    src = pod(metadata=meta or {"name": "job"}, initContainers=[{"name": "fetch", "image": "busybox"}])
    out = inject(src, InjectorConfig(native_sidecars=how == "flag"))
    spec = out["spec"]
    assert [c["name"] for c in spec["initContainers"]] == [names.INIT_CONTAINER, names.PROXY_CONTAINER, "fetch"]
    assert [c["name"] for c in spec["containers"]] == ["web"]
    proxy = spec["initContainers"][1]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    status = json.loads(out["metadata"]["annotations"][names.STATUS_ANNOTATION])
    assert status["initContainers"] == [names.INIT_CONTAINER, names.PROXY_CONTAINER] and status["containers"] == []


def test_native_sidecar_without_init_containers_and_the_pod_can_say_no() -> None:
    out = inject(pod(), InjectorConfig(native_sidecars=True))
    assert [c["name"] for c in out["spec"]["initContainers"]] == [names.INIT_CONTAINER, names.PROXY_CONTAINER]
    no = pod(metadata={"name": "w", "annotations": {names.NATIVE_SIDECAR_ANNOTATION: "false"}})
    out = inject(no, InjectorConfig(native_sidecars=True))
    assert [c["name"] for c in out["spec"]["containers"]] == ["web", names.PROXY_CONTAINER]


def test_capture_annotations_become_init_flags() -> None:
    src = pod(metadata={"name": "w", "annotations": {
        "traffic.sidecar.minimesh.io/includeInboundPorts": "8080",
        "traffic.sidecar.minimesh.io/excludeOutboundIPRanges": "10.0.0.0/8",
        "traffic.sidecar.minimesh.io/excludeOutboundPorts": "5432,6379",
    }})
    args = inject(src)["spec"]["initContainers"][0]["args"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["-b"] == "8080" and flags["-x"] == "10.0.0.0/8" and flags["-o"] == "5432,6379"
    assert flags["-i"] == "*" and flags["-d"] == ""


@pytest.mark.parametrize(("annotations", "match"), [
    ({"traffic.sidecar.minimesh.io/includeInboundPorts": "http"}, r"includeInboundPorts.*not a port number"),
    ({"traffic.sidecar.minimesh.io/includeOutboundIPs": "*"}, r"includeOutboundIPs is not known"),
    ({"sidecar.minimesh.io/interceptionMode": "TPROXY"}, r"interceptionMode.*TPROXY is not implemented"),
])
def test_bad_capture_annotations_refuse_injection_with_the_annotation_named(annotations: dict[str, str],
                                                                            match: str) -> None:
    with pytest.raises(InjectionError, match=match):
        decide(pod(metadata={"name": "w", "annotations": annotations}), "shop", ENABLED)


def test_a_container_port_the_proxy_needs_is_refused() -> None:
    src = pod(containers=[{"name": "app", "image": "a", "ports": [{"containerPort": 15001}]}])
    with pytest.raises(InjectionError, match="containerPort 15001 collides"):
        decide(src, "shop", ENABLED)


def test_volume_name_conflict_is_refused() -> None:
    with pytest.raises(InjectionError, match=r"spec.volumes\[0\].*minimesh-data"):
        decide(pod(volumes=[{"name": names.DATA_VOLUME, "emptyDir": {}}]), "shop", ENABLED)


@pytest.mark.parametrize(("bad", "match"), [
    ([], "object: want a Pod"),
    ({"metadata": {"name": "x"}}, "spec: want an object"),
    ({"spec": {"containers": []}}, r"spec.containers: want a non-empty list"),
    ({"spec": {"containers": [{"image": "x"}]}}, r"spec.containers\[0\].name: want a non-empty string"),
    ({"metadata": {"labels": {"a": 1}}, "spec": {"containers": [{"name": "a"}]}}, r"metadata.labels\['a'\]"),
    ({"spec": {"containers": [{"name": "a"}], "volumes": {}}}, r"spec.volumes: want a list"),
])
def test_malformed_pods_name_the_field(bad: Any, match: str) -> None:
    with pytest.raises(MalformedPod, match=match):
        decide(bad, "shop", ENABLED)


# ---- skipped pods ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("src", "ns", "ns_labels", "reason"), [
    (pod(hostNetwork=True), "shop", ENABLED, policy.HOST_NETWORK),
    (pod(metadata={"name": "w", "labels": {names.INJECT_KEY: "false"}}), "shop", ENABLED, policy.OPTED_OUT),
    (pod(metadata={"name": "w", "annotations": {names.INJECT_KEY: "false"}}), "shop", ENABLED, policy.OPTED_OUT),
    # the label wins over the annotation (Istio)
    (pod(metadata={"name": "w", "labels": {names.INJECT_KEY: "no"}, "annotations": {names.INJECT_KEY: "true"}}),
     "shop", ENABLED, policy.OPTED_OUT),
    (pod(metadata={"name": "w", "annotations": {names.STATUS_ANNOTATION: "{}"}}), "shop", ENABLED,
     policy.ALREADY_INJECTED),
    (pod(containers=[{"name": "a", "image": "a"}, {"name": names.PROXY_CONTAINER, "image": "p"}]), "shop", ENABLED,
     policy.ALREADY_INJECTED),
    (pod(), "kube-system", ENABLED, policy.IGNORED_NAMESPACE),
    (pod(), "shop", {}, policy.NAMESPACE_NOT_ENABLED),
    (pod(), "shop", {names.NAMESPACE_LABEL: "disabled"}, policy.NAMESPACE_NOT_ENABLED),
])
def test_skipped_pods_get_no_patch(src: dict[str, Any], ns: str, ns_labels: Any, reason: str) -> None:
    d = decide(src, ns, ns_labels)
    assert (d.skip, d.patch) == (reason, [])


def test_explicit_yes_and_unknown_namespace_inject() -> None:
    assert decide(pod(metadata={"name": "w", "labels": {names.INJECT_KEY: "true"}}), "shop", ENABLED).patch
    assert decide(pod(metadata={"name": "w", "annotations": {names.INJECT_KEY: "Yes"}}), "shop", ENABLED).patch
    assert decide(pod(), "shop", None).patch  # namespace not known: the webhook selector is trusted


def test_injected_pod_is_left_alone_the_second_time() -> None:
    first = inject(pod(initContainers=[{"name": "a", "image": "b"}]))
    again = decide(copy.deepcopy(first), "shop", ENABLED)
    assert (again.skip, again.patch) == (policy.ALREADY_INJECTED, [])


def test_build_patch_places_every_piece() -> None:
    """The operations themselves, for a pod that has every list already (no whole-list adds)."""
    src = pod(initContainers=[{"name": "i", "image": "i"}], volumes=[{"name": "v", "emptyDir": {}}],
              metadata={"name": "w", "annotations": {"a": "b"}, "labels": {"c": "d"}})
    src["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 8080}}
    injection: Injection = plan(src)
    ops = patch.build_patch(src, injection)
    paths = [(o["op"], o["path"]) for o in ops]
    assert paths[:2] == [("add", "/spec/initContainers/-"), ("add", "/spec/containers/-")]
    assert paths.count(("add", "/spec/volumes/-")) == 6
    assert ("replace", "/spec/containers/0/readinessProbe") in paths
    assert ("add", "/metadata/annotations/sidecar.minimesh.io~1status") in paths
    assert ("add", "/metadata/labels/security.minimesh.io~1tlsMode") in paths
