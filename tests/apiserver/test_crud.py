"""CRUD through the official client (typed and dynamic) on every stored kind, with defaulting."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("v1", "ConfigMap", {"data": {"a": "1"}}),
    ("v1", "Secret", {"stringData": {"k": "v"}}),
    ("v1", "ServiceAccount", {}),
    ("v1", "Endpoints", {"subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 80}]}]}),
    ("v1", "Event", {"involvedObject": {"kind": "Pod", "name": "x", "namespace": "NS"}, "reason": "Tested",
                     "message": "hello", "type": "Normal"}),
    ("v1", "LimitRange", {"spec": {"limits": [{"type": "Container", "default": {"cpu": "100m"}}]}}),
    ("v1", "Pod", {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    ("v1", "Service", {"spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}}),
    ("apps/v1", "Deployment", {"spec": {"selector": {"matchLabels": {"app": "x"}},
                                        "template": {"metadata": {"labels": {"app": "x"}},
                                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    ("apps/v1", "ReplicaSet", {"spec": {"selector": {"matchLabels": {"app": "x"}},
                                        "template": {"metadata": {"labels": {"app": "x"}},
                                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    ("apps/v1", "DaemonSet", {"spec": {"selector": {"matchLabels": {"app": "x"}},
                                       "template": {"metadata": {"labels": {"app": "x"}},
                                                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    ("apps/v1", "StatefulSet", {"spec": {"serviceName": "x", "selector": {"matchLabels": {"app": "x"}},
                                         "template": {"metadata": {"labels": {"app": "x"}},
                                                      "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    ("batch/v1", "Job", {"spec": {"template": {"spec": {"restartPolicy": "Never",
                                                        "containers": [{"name": "c", "image": "busybox"}]}}}}),
    ("batch/v1", "CronJob", {"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
        "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
    ("discovery.k8s.io/v1", "EndpointSlice", {"addressType": "IPv4", "endpoints": [{"addresses": ["10.244.0.9"]}],
                                              "ports": [{"port": 80}]}),
    ("coordination.k8s.io/v1", "Lease", {"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
    ("rbac.authorization.k8s.io/v1", "Role", {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                                 "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]}),
    ("policy/v1", "PodDisruptionBudget", {"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}}),
    ("networking.k8s.io/v1", "Ingress", {"spec": {"rules": [{"host": "a.example"}]}}),
]
def msg(exc: ApiException) -> str:
    return json.loads(exc.body)["message"]


CLUSTER_SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("v1", "Node", {"metadata": {"labels": {"kubernetes.io/hostname": "n"}}}),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", {"rules": []}),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                                        "kind": "ClusterRole", "name": "r"}}),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", {"webhooks": []}),
]


@pytest.fixture(scope="module")
def dyn(cluster: Any) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(cluster.client())


@pytest.mark.parametrize(("api_version", "kind", "body"), SAMPLES, ids=[s[1] for s in SAMPLES])
def test_namespaced_crud(cluster: Any, dyn: dynamic.DynamicClient, api_version: str, kind: str, body: dict[str, Any]) -> None:
    ns = cluster.namespace("crud")
    res = dyn.resources.get(api_version=api_version, kind=kind)
    obj = json.loads(json.dumps(body).replace('"NS"', json.dumps(ns)))
    obj = {"apiVersion": api_version, "kind": kind, **obj}
    obj.setdefault("metadata", {})["name"] = "obj1"
    created = res.create(body=obj, namespace=ns)
    meta = created.metadata
    assert meta.name == "obj1" and meta.namespace == ns and meta.uid and meta.creationTimestamp
    rv1 = int(meta.resourceVersion)
    got = res.get(name="obj1", namespace=ns)
    assert got.metadata.uid == meta.uid
    listed = res.get(namespace=ns)
    assert "obj1" in [i.metadata.name for i in listed.items]
    assert int(listed.metadata.resourceVersion) >= rv1
    # replace with a label, then the resourceVersion moves forward
    d = got.to_dict()
    d["metadata"]["labels"] = {"changed": "yes"}
    replaced = res.replace(body=d, namespace=ns)
    assert replaced.metadata.labels["changed"] == "yes"
    assert int(replaced.metadata.resourceVersion) > rv1
    patched = res.patch(name="obj1", namespace=ns, body={"metadata": {"annotations": {"a": "b"}}},
                        content_type="application/merge-patch+json")
    assert patched.metadata.annotations["a"] == "b" and patched.metadata.labels["changed"] == "yes"
    res.delete(name="obj1", namespace=ns, body={"gracePeriodSeconds": 0})
    with pytest.raises(dynamic.exceptions.NotFoundError):
        res.get(name="obj1", namespace=ns)


@pytest.mark.parametrize(("api_version", "kind", "body"), CLUSTER_SAMPLES, ids=[s[1] for s in CLUSTER_SAMPLES])
def test_cluster_scoped_crud(dyn: dynamic.DynamicClient, api_version: str, kind: str, body: dict[str, Any]) -> None:
    import uuid

    name = f"c-{uuid.uuid4().hex[:8]}"
    res = dyn.resources.get(api_version=api_version, kind=kind)
    obj = {"apiVersion": api_version, "kind": kind, **body}
    obj.setdefault("metadata", {})["name"] = name
    created = res.create(body=obj)
    assert created.metadata.name == name and not created.metadata.namespace
    assert name in [i.metadata.name for i in res.get().items]
    res.delete(name=name)
    with pytest.raises(dynamic.exceptions.NotFoundError):
        res.get(name=name)


def test_pod_defaults(cluster: Any) -> None:
    ns = cluster.namespace("def")
    core = client.CoreV1Api(cluster.client())
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "busybox:1.36", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}})
    s = pod.spec
    assert (s.restart_policy, s.dns_policy, s.scheduler_name) == ("Always", "ClusterFirst", "default-scheduler")
    assert s.termination_grace_period_seconds == 30 and s.enable_service_links is True
    assert s.service_account_name == "default" and s.priority == 0 and s.preemption_policy == "PreemptLowerPriority"
    assert {t.key for t in s.tolerations} == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    assert all(t.toleration_seconds == 300 for t in s.tolerations)
    a, b = s.containers
    assert a.image_pull_policy == "Always" and b.image_pull_policy == "IfNotPresent"
    assert a.termination_message_path == "/dev/termination-log" and a.termination_message_policy == "File"
    assert a.ports[0].protocol == "TCP"
    assert b.resources.requests == {"cpu": "1", "memory": "1Gi"}
    assert pod.status.phase == "Pending" and pod.status.qos_class == "Burstable"
    # the ServiceAccount admission plugin's projected token volume, mounted in every container
    vol = next(v for v in s.volumes if v.name.startswith("kube-api-access-"))
    assert len(vol.name) == len("kube-api-access-") + 5
    sources = vol.projected.sources
    assert sources[0].service_account_token.expiration_seconds == 3607
    assert sources[1].config_map.name == "kube-root-ca.crt"
    assert sources[2].downward_api.items[0].field_ref.field_path == "metadata.namespace"
    for c in s.containers:
        m = next(m for m in c.volume_mounts if m.name == vol.name)
        assert m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount" and m.read_only


def test_pod_without_service_account_is_forbidden(cluster: Any) -> None:
    ns = cluster.namespace("nosa")
    core = client.CoreV1Api(cluster.client())
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"serviceAccountName": "nope",
                                                                             "containers": [{"name": "a", "image": "x"}]}})
    assert e.value.status == 403
    assert 'serviceaccount "nope" not found' in msg(e.value)


def test_service_allocation_and_release(cluster: Any) -> None:
    ns = cluster.namespace("svc")
    core = client.CoreV1Api(cluster.client())
    s1 = core.create_namespaced_service(ns, {"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    assert s1.spec.cluster_ip.startswith("10.") and s1.spec.cluster_ips == [s1.spec.cluster_ip]
    assert s1.spec.ip_families == ["IPv4"] and s1.spec.ip_family_policy == "SingleStack"
    assert s1.spec.session_affinity == "None" and s1.spec.internal_traffic_policy == "Cluster"
    assert s1.spec.external_traffic_policy == "Cluster"
    port = s1.spec.ports[0]
    assert port.target_port == 80 and port.protocol == "TCP" and 30000 <= port.node_port <= 32767
    # explicit IP/port conflicts are 422 with the field that is wrong
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, {"metadata": {"name": "b"}, "spec": {"clusterIP": s1.spec.cluster_ip, "ports": [{"port": 80}]}})
    assert e.value.status == 422 and "already allocated" in msg(e.value)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, {"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port.node_port}]}})
    assert e.value.status == 422 and "spec.ports[0].nodePort" in msg(e.value)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, {"metadata": {"name": "b"}, "spec": {"clusterIP": "192.168.1.1", "ports": [{"port": 80}]}})
    assert e.value.status == 422 and "not in the valid range" in msg(e.value)
    # nothing half-created
    assert [s.metadata.name for s in core.list_namespaced_service(ns).items] == ["a"]
    # clusterIP is immutable, but omitting it on update keeps it
    body = core.read_namespaced_service("a", ns).to_dict()
    body["spec"]["cluster_ip"] = None
    body["spec"]["cluster_ips"] = None
    kept = core.replace_namespaced_service("a", ns, body)
    assert kept.spec.cluster_ip == s1.spec.cluster_ip and kept.spec.ports[0].node_port == port.node_port
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_service("a", ns, {"spec": {"clusterIP": "10.96.7.7", "clusterIPs": ["10.96.7.7"]}})
    assert e.value.status == 422 and "may not change once set" in msg(e.value)
    # delete releases: the same explicit IP and port can be taken again
    core.delete_namespaced_service("a", ns)
    again = core.create_namespaced_service(ns, {"metadata": {"name": "c"}, "spec": {
        "type": "NodePort", "clusterIP": s1.spec.cluster_ip, "ports": [{"port": 80, "nodePort": port.node_port}]}})
    assert again.spec.cluster_ip == s1.spec.cluster_ip
    headless = core.create_namespaced_service(ns, {"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})
    assert headless.spec.cluster_ip == "None" and headless.spec.cluster_ips == ["None"]


def test_workload_defaults(cluster: Any) -> None:
    ns = cluster.namespace("wl")
    c = cluster.client()
    apps, batch = client.AppsV1Api(c), client.BatchV1Api(c)
    tpl = {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    d = apps.create_namespaced_deployment(ns, {"metadata": {"name": "w"}, "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": tpl}})
    assert d.spec.replicas == 1 and d.spec.revision_history_limit == 10 and d.spec.progress_deadline_seconds == 600
    assert d.spec.strategy.type == "RollingUpdate"
    assert (d.spec.strategy.rolling_update.max_surge, d.spec.strategy.rolling_update.max_unavailable) == ("25%", "25%")
    assert d.metadata.generation == 1 and d.spec.template.spec.restart_policy == "Always"
    # generation follows spec changes only
    d2 = apps.patch_namespaced_deployment("w", ns, {"metadata": {"labels": {"x": "y"}}})
    assert d2.metadata.generation == 1
    d3 = apps.patch_namespaced_deployment("w", ns, {"spec": {"replicas": 3}})
    assert d3.metadata.generation == 2
    d4 = apps.patch_namespaced_deployment_status("w", ns, {"status": {"replicas": 3, "observedGeneration": 2}})
    assert d4.metadata.generation == 2 and d4.status.replicas == 3
    # the main resource ignores status, /status ignores spec
    d5 = apps.patch_namespaced_deployment("w", ns, {"status": {"replicas": 9}})
    assert d5.status.replicas == 3
    d6 = apps.patch_namespaced_deployment_status("w", ns, {"spec": {"replicas": 9}})
    assert d6.spec.replicas == 3
    job = batch.create_namespaced_job(ns, {"metadata": {"name": "j"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    uid = job.metadata.uid
    assert (job.spec.parallelism, job.spec.completions, job.spec.backoff_limit) == (1, 1, 6)
    assert job.spec.completion_mode == "NonIndexed" and job.spec.suspend is False
    assert job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    labels = job.spec.template.metadata.labels
    assert labels["batch.kubernetes.io/job-name"] == "j" and labels["job-name"] == "j"
    assert labels["controller-uid"] == uid and labels["batch.kubernetes.io/controller-uid"] == uid
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job(ns, {"metadata": {"name": "bad"}, "spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "busybox"}]}}}})
    assert e.value.status == 422 and "spec.template.spec.restartPolicy" in msg(e.value)
    cj = batch.create_namespaced_cron_job(ns, {"metadata": {"name": "cj"}, "spec": {"schedule": "@hourly", "jobTemplate": {
        "spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "b"}]}}}}}})
    assert cj.spec.concurrency_policy == "Allow" and cj.spec.successful_jobs_history_limit == 3
    assert cj.spec.failed_jobs_history_limit == 1 and cj.spec.suspend is False


def test_namespace_and_secret_defaults(cluster: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("nsd")
    got = core.read_namespace(ns)
    assert got.status.phase == "Active" and got.spec.finalizers == ["kubernetes"]
    assert got.metadata.labels["kubernetes.io/metadata.name"] == ns
    sec = core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"user": "admin"}})
    assert sec.type == "Opaque" and base64.b64decode(sec.data["user"]) == b"admin"
    gen = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "cfg-"}})
    assert gen.metadata.name.startswith("cfg-") and len(gen.metadata.name) == len("cfg-") + 5


def test_list_selectors_and_paging(cluster: Any) -> None:
    ns = cluster.namespace("sel")
    core = client.CoreV1Api(cluster.client())
    for i in range(5):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm{i}", "labels": {"i": str(i), "even": str(i % 2 == 0).lower()}}})
    names = [c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="even=true").items]
    assert names == ["cm0", "cm2", "cm4"]
    names = [c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="i in (1,3),even!=true").items]
    assert names == ["cm1", "cm3"]
    names = [c.metadata.name for c in core.list_namespaced_config_map(ns, field_selector="metadata.name!=cm0").items]
    assert names == ["cm1", "cm2", "cm3", "cm4"]
    page1 = core.list_namespaced_config_map(ns, limit=2)
    assert [c.metadata.name for c in page1.items] == ["cm0", "cm1"]
    assert page1.metadata._continue and page1.metadata.remaining_item_count == 3
    page2 = core.list_namespaced_config_map(ns, limit=2, _continue=page1.metadata._continue)
    assert [c.metadata.name for c in page2.items] == ["cm2", "cm3"]
    page3 = core.list_namespaced_config_map(ns, limit=2, _continue=page2.metadata._continue)
    assert [c.metadata.name for c in page3.items] == ["cm4"] and not page3.metadata._continue
    # across namespaces, and pods by node / phase
    assert ns in {c.metadata.namespace for c in core.list_config_map_for_all_namespaces(label_selector="i=1").items}
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod(ns, field_selector="spec.bogus=1")
    assert e.value.status == 400 and "field label not supported: spec.bogus" in msg(e.value)
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod(ns, label_selector="a in (")
    assert e.value.status == 400
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "x"}]}}
    core.create_namespaced_pod(ns, pod)
    assert [p.metadata.name for p in core.list_namespaced_pod(ns, field_selector="spec.nodeName=n1,status.phase=Pending").items] == ["p"]
    assert core.list_namespaced_pod(ns, field_selector="spec.nodeName=n2").items == []


def test_events_by_involved_object(cluster: Any) -> None:
    ns = cluster.namespace("ev")
    core = client.CoreV1Api(cluster.client())
    ev = client.EventsV1Api(cluster.client())
    for n in ("a", "b"):
        core.create_namespaced_event(ns, {"metadata": {"name": f"e-{n}"}, "involvedObject": {"kind": "Pod", "name": n, "namespace": ns},
                                          "reason": "Scheduled", "message": f"pod {n}", "type": "Normal"})
    got = core.list_namespaced_event(ns, field_selector=f"involvedObject.name=a,involvedObject.namespace={ns},involvedObject.kind=Pod")
    assert [e.message for e in got.items] == ["pod a"]
    # events.k8s.io/v1 shares storage with core events
    created = ev.create_namespaced_event(ns, {"metadata": {"name": "e-new"}, "eventTime": "2024-01-01T00:00:00.000000Z",
                                              "regarding": {"kind": "Pod", "name": "c", "namespace": ns}, "reason": "Pulled",
                                              "note": "image pulled", "type": "Normal", "action": "Pull",
                                              "reportingController": "kubelet", "reportingInstance": "node1"})
    assert created.note == "image pulled" and created.regarding.name == "c"
    core_view = core.read_namespaced_event("e-new", ns)
    assert core_view.message == "image pulled" and core_view.involved_object.name == "c"
    assert {e.metadata.name for e in ev.list_namespaced_event(ns).items} == {"e-a", "e-b", "e-new"}
