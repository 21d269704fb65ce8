"""The node inside a real local cluster (`cluster up`): pods, init containers, native sidecars, restarts,
probes, Services (ClusterIP, NodePort), DNS, the API from a pod, deletion, node restart.

Pods name their node themselves and Services carry their own EndpointSlices, so these tests need only
the API server and the node (not the scheduler or the endpoints controller). One cluster per module.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minimesh.cluster.local import hostnet, lifecycle, runtime_state
from minimesh.cluster.local.layout import ClusterLayout
from minimesh.cluster.local.node.teardown import cleanup_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.xdist_group("node-cluster")]
NODE = "minimesh-control-plane"


class Api:
    """Just enough of an API client (urllib, admin token) to drive the tests."""

    def __init__(self, layout: ClusterLayout):
        import ssl

        self.layout = layout
        self.base = layout.api_server_url
        self.token = (layout.pki_dir / "admin.token").read_text().strip()
        self.ctx = ssl.create_default_context(cafile=str(layout.pki_dir / "ca.crt"))

    def req(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.base + path, data=data, method=method,
                                   headers={"Authorization": f"Bearer {self.token}", "Content-Type": ctype})
        try:
            with urllib.request.urlopen(r, context=self.ctx, timeout=10) as resp:
                text = resp.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 and method == "GET":
                return None
            raise AssertionError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None
        return json.loads(text) if text else None

    def pod(self, name: str, ns: str = "default") -> dict[str, Any] | None:
        return self.req("GET", f"/api/v1/namespaces/{ns}/pods/{name}")

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = obj["kind"]
        ns = obj["metadata"].get("namespace", "default")
        plural = {"Pod": "pods", "Service": "services", "ConfigMap": "configmaps", "ServiceAccount": "serviceaccounts"}
        if kind == "EndpointSlice":
            return self.req("POST", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", obj)
        return self.req("POST", f"/api/v1/namespaces/{ns}/{plural[kind]}", obj)


def wait(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[ClusterLayout, Api]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    name = f"nt{secrets.token_hex(3)}"
    old = os.environ.get("MINIMESH_CRASHLOOP_BACKOFF")
    os.environ["MINIMESH_CRASHLOOP_BACKOFF"] = "0.5"  # restart tests should not wait 10 s per crash
    try:
        result = lifecycle.up(name, merge_kubeconfig=False)
        layout = result.layout
        api = Api(layout)
        ensure_default_objects(api, layout)
        yield layout, api
    finally:
        if old is None:
            os.environ.pop("MINIMESH_CRASHLOOP_BACKOFF", None)
        else:
            os.environ["MINIMESH_CRASHLOOP_BACKOFF"] = old
        try:
            lifecycle.down(name)
        finally:
            cleanup_cluster(name)


def ensure_default_objects(api: Api, layout: ClusterLayout) -> None:
    """What the namespace controller makes; created here if it has not (yet), so only the node is tested."""
    time.sleep(0.5)
    if api.req("GET", "/api/v1/namespaces/default/serviceaccounts/default") is None:
        api.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "default"}})
    if api.req("GET", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt") is None:
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
                    "data": {"ca.crt": (layout.pki_dir / "ca.crt").read_text()}})


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"test": name}},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 2, "containers": containers, **spec}}


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def cond(p: dict[str, Any] | None, type_: str) -> str | None:
    for c in ((p or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c["status"]
    return None


def cstatus(p: dict[str, Any] | None, name: str, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    for s in ((p or {}).get("status") or {}).get(key) or []:
        if s["name"] == name:
            return s
    return {}


def logs(layout: ClusterLayout, p: dict[str, Any], container: str, run: int | None = None) -> list[str]:
    uid = p["metadata"]["uid"]
    runs = runtime_state.log_runs(layout.pods_dir, uid, container)
    if not runs:
        return []
    path = runtime_state.log_path(layout.pods_dir, uid, container, runs[-1] if run is None else run)
    if not path.exists():
        return []
    return [parsed.text for line in path.read_text().splitlines() if (parsed := runtime_state.parse_cri_line(line))]


def pod_exec(layout: ClusterLayout, p: dict[str, Any], container: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    rec = runtime_state.read_exec(layout.pods_dir, p["metadata"]["uid"], container)
    assert rec is not None, f"no exec.json for {container}"
    return subprocess.run(runtime_state.enter_argv(rec, argv), env=rec.env, capture_output=True, text=True, timeout=timeout)


def delete(api: Api, name: str) -> None:
    api.req("DELETE", f"/api/v1/namespaces/default/pods/{name}")


# ---- tests -----------------------------------------------------------------------------------------
def test_pod_runs_ready_with_a_shared_volume(cluster) -> None:
    layout, api = cluster
    name = uniq("web")
    api.create(pod(name, [
        {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
         "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1},
         "volumeMounts": [{"name": "html", "mountPath": "/usr/share/nginx/html"}]},
        {"name": "writer", "image": "busybox",
         "command": ["sh", "-c", "while true; do echo \"page from $(hostname)\" > /html/index.html; sleep 1; done"],
         "volumeMounts": [{"name": "html", "mountPath": "/html"}]},
    ], volumes=[{"name": "html", "emptyDir": {}}]))
    p = wait("pod Ready", lambda: (x := api.pod(name)) and cond(x, "Ready") == "True" and x)
    st = p["status"]
    assert st["phase"] == "Running" and st["podIP"].startswith("10.244.0.") and st["hostIP"] == layout.node_ip
    assert cstatus(p, "web")["image"] == "docker.io/library/nginx:latest"
    assert cstatus(p, "web")["containerID"].startswith("minimesh://")
    assert {c["type"] for c in st["conditions"]} >= {"PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled"}
    out = subprocess.run(["ip", "netns", "exec", layout.node_netns, "curl", "-s", "-m", "5", f"http://{st['podIP']}/"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == f"page from {name}"
    wait("nginx access log line", lambda: [x for x in logs(layout, p, "web") if '"GET / HTTP/1.1" 200' in x])
    events = api.req("GET", "/api/v1/namespaces/default/events")["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == name}
    assert {"Pulled", "Created", "Started"} <= reasons
    delete(api, name)


def test_init_container_runs_first_and_without_net_admin_cannot_touch_iptables(cluster) -> None:
    layout, api = cluster
    name = uniq("init")
    api.create(pod(name, [
        {"name": "app", "image": "busybox", "command": ["sh", "-c", "cat /work/ready; sleep 3600"],
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
    ], initContainers=[
        {"name": "prepare", "image": "busybox", "command": ["sh", "-c", "sleep 1; echo prepared-by-init > /work/ready"],
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
    ], volumes=[{"name": "work", "emptyDir": {}}]))
    seen_init = wait("Init:0/1 while the init container runs",
                     lambda: (x := api.pod(name)) and cond(x, "Initialized") == "False" and x, timeout=30)
    assert cstatus(seen_init, "app")["state"]["waiting"]["reason"] == "PodInitializing"
    p = wait("app running", lambda: (x := api.pod(name)) and cstatus(x, "app").get("state", {}).get("running") and x)
    assert cstatus(p, "prepare", init=True)["state"]["terminated"]["reason"] == "Completed"
    assert wait("app output", lambda: logs(layout, p, "app")) == ["prepared-by-init"]
    delete(api, name)

    bad = uniq("noadmin")
    api.create(pod(bad, [{"name": "app", "image": "busybox", "command": ["true"]}], restartPolicy="Never", initContainers=[
        {"name": "capture", "image": "minimesh/minimesh:dev", "command": ["iptables", "-t", "nat", "-N", "MESH_TEST"]}]))
    p = wait("pod Failed", lambda: (x := api.pod(bad)) and x["status"].get("phase") == "Failed" and x)
    term = cstatus(p, "capture", init=True)["state"]["terminated"]
    assert term["exitCode"] != 0 and term["reason"] == "Error"
    assert any("Permission denied" in line for line in logs(layout, p, "capture"))
    assert cstatus(p, "app")["state"]["waiting"]["reason"] == "PodInitializing"
    delete(api, bad)


def test_native_sidecar_starts_first_and_a_job_pod_completes(cluster) -> None:
    layout, api = cluster
    name = uniq("job")
    api.create(pod(name, [
        {"name": "task", "image": "busybox", "command": ["sh", "-c", "test -f /work/sidecar-was-here && echo task-done"],
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
    ], restartPolicy="Never", initContainers=[
        {"name": "shipper", "image": "busybox", "restartPolicy": "Always",
         "command": ["sh", "-c", "touch /work/sidecar-was-here; exec sleep 3600"],
         "startupProbe": {"exec": {"command": ["test", "-f", "/work/sidecar-was-here"]}, "periodSeconds": 1},
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
    ], volumes=[{"name": "work", "emptyDir": {}}]))
    p = wait("pod Succeeded", lambda: (x := api.pod(name)) and x["status"].get("phase") == "Succeeded" and x)
    assert cstatus(p, "task")["state"]["terminated"]["exitCode"] == 0
    assert logs(layout, p, "task") == ["task-done"]
    shipper = cstatus(p, "shipper", init=True)["state"]
    assert "terminated" in shipper, shipper  # the sidecar was stopped once the task finished
    assert cond(p, "Ready") == "False"
    delete(api, name)


def test_restarts_back_off_and_keep_the_previous_log(cluster) -> None:
    layout, api = cluster
    name = uniq("crash")
    api.create(pod(name, [{"name": "app", "image": "busybox",
                           "command": ["sh", "-c", "echo run-$(cat /proc/sys/kernel/random/uuid); exit 3"]}]))
    p = wait("3 restarts", lambda: (x := api.pod(name)) and cstatus(x, "app").get("restartCount", 0) >= 3 and x, timeout=90)
    st = cstatus(p, "app")
    assert st["lastState"]["terminated"]["exitCode"] == 3
    assert st["lastState"]["terminated"]["reason"] == "Error"
    waiting = wait("CrashLoopBackOff", lambda: (x := api.pod(name)) and cstatus(x, "app")["state"].get("waiting"), timeout=60)
    assert waiting["reason"] == "CrashLoopBackOff" and "back-off" in waiting["message"]
    p = api.pod(name)
    n = cstatus(p, "app")["restartCount"]
    current, previous = logs(layout, p, "app", n), logs(layout, p, "app", n - 1)
    assert current[0].startswith("run-") and previous[0].startswith("run-") and current != previous
    events = api.req("GET", "/api/v1/namespaces/default/events")["items"]
    assert any(e["reason"] == "BackOff" and e["involvedObject"]["name"] == name for e in events)
    delete(api, name)

    ok = uniq("onfail")
    api.create(pod(ok, [{"name": "app", "image": "busybox", "command": ["sh", "-c", "exit 0"]}], restartPolicy="OnFailure"))
    p = wait("Succeeded", lambda: (x := api.pod(ok)) and x["status"].get("phase") == "Succeeded" and x)
    assert cstatus(p, "app")["restartCount"] == 0
    delete(api, ok)


def test_probes_drive_readiness_and_liveness_restarts(cluster) -> None:
    _layout, api = cluster
    name = uniq("probe")
    api.create(pod(name, [
        {"name": "alive", "image": "busybox", "command": ["sh", "-c", "touch /tmp/ok; sleep 3600"],
         "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ok"]}, "periodSeconds": 1},
         "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 2}},
        {"name": "never-ready", "image": "busybox", "command": ["sleep", "3600"],
         "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8081}, "periodSeconds": 1}},
        {"name": "never-started", "image": "busybox", "command": ["sleep", "3600"],
         "startupProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2}},
    ]))
    p = wait("liveness restart", lambda: (x := api.pod(name)) and cstatus(x, "alive").get("restartCount", 0) >= 1 and x, timeout=60)
    assert cstatus(p, "alive")["lastState"]["terminated"]["exitCode"] == 137 or \
        cstatus(p, "alive")["lastState"]["terminated"]["exitCode"] == 143
    assert cstatus(p, "never-ready")["ready"] is False and cond(p, "Ready") == "False"
    events = [e for e in api.req("GET", "/api/v1/namespaces/default/events")["items"] if e["involvedObject"]["name"] == name]
    assert any(e["reason"] == "Killing" and "failed liveness probe, will be restarted" in e["message"] for e in events)
    assert any(e["reason"] == "Unhealthy" and e["message"].startswith("Readiness probe failed: Get \"http://") for e in events)
    p = wait("startup probe restart", lambda: (x := api.pod(name)) and cstatus(x, "never-started").get("restartCount", 0) >= 1 and x)
    assert cstatus(p, "never-started")["started"] is False
    events = [e for e in api.req("GET", "/api/v1/namespaces/default/events")["items"] if e["involvedObject"]["name"] == name]
    assert any(e["reason"] == "Killing" and "failed startup probe" in e["message"] for e in events)
    delete(api, name)


def test_services_dns_and_the_api_from_a_pod(cluster) -> None:
    layout, api = cluster
    server = uniq("details-pod")
    api.create(pod(server, [{"name": "http", "image": "minimesh/minimesh:dev",
                             "command": ["python", "-m", "http.server", "9080", "--directory", "/etc"],
                             "readinessProbe": {"tcpSocket": {"port": 9080}, "periodSeconds": 1}}]))
    client = uniq("client")
    api.create(pod(client, [{"name": "sleep", "image": "minimesh/minimesh:dev", "command": ["sleep", "3600"]}]))
    sp = wait("server Ready", lambda: (x := api.pod(server)) and cond(x, "Ready") == "True" and x)
    cp = wait("client running", lambda: (x := api.pod(client)) and cond(x, "Ready") == "True" and x)
    if api.req("GET", "/api/v1/namespaces/default/services/details") is None:
        api.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details", "namespace": "default"},
                    "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}})
    api.create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": uniq("details"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "details"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [sp["status"]["podIP"]], "conditions": {"ready": True}}]})
    svc = api.req("GET", "/api/v1/namespaces/default/services/details")

    def fetch(url: str) -> str:
        done = pod_exec(layout, cp, "sleep", ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url])
        return done.stdout

    for host in ("details", "details.default", "details.default.svc.cluster.local", svc["spec"]["clusterIP"]):
        assert wait(f"http://{host}:9080 from a pod", lambda host=host: fetch(f"http://{host}:9080/hostname") == "200",
                    timeout=20)
    node_port = svc["spec"]["ports"][0]["nodePort"]
    from_host = subprocess.run(["curl", "-s", "-m", "5", f"http://{layout.node_ip}:{node_port}/hostname"],
                               capture_output=True, text=True)
    assert from_host.stdout.strip() == server  # the server pod's /etc/hostname, through the NodePort

    script = ("curl -s -m 5 -o /dev/null -w '%{http_code}' --cacert /var/run/secrets/kubernetes.io/serviceaccount/ca.crt "
              "-H \"Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" "
              "https://kubernetes.default.svc/api/v1/namespaces/default/pods")
    assert pod_exec(layout, cp, "sleep", ["sh", "-c", script]).stdout == "200"
    env = runtime_state.read_exec(layout.pods_dir, cp["metadata"]["uid"], "sleep").env
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    delete(api, server)
    delete(api, client)


def test_unknown_image_waits_with_a_clear_reason(cluster) -> None:
    _, api = cluster
    name = uniq("noimg")
    api.create(pod(name, [{"name": "app", "image": "registry.example/nope:1"}]))
    p = wait("ImagePullBackOff", lambda: (x := api.pod(name)) and
             cstatus(x, "app").get("state", {}).get("waiting", {}).get("reason") == "ImagePullBackOff" and x, timeout=30)
    msg = cstatus(p, "app")["state"]["waiting"]["message"]
    assert "registry.example/nope:1" in msg and "known images" in msg
    delete(api, name)


def test_configmap_volume_follows_updates(cluster) -> None:
    layout, api = cluster
    cm = uniq("cfg")
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm, "namespace": "default"},
                "data": {"greeting": "hello"}})
    name = uniq("cmpod")
    api.create(pod(name, [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                           "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
                   volumes=[{"name": "cfg", "configMap": {"name": cm}}]))
    p = wait("running", lambda: (x := api.pod(name)) and cond(x, "Ready") == "True" and x)
    assert pod_exec(layout, p, "app", ["cat", "/cfg/greeting"]).stdout == "hello"
    assert "Read-only file system" in pod_exec(layout, p, "app", ["sh", "-c", "echo x > /cfg/new"]).stderr
    api.req("PATCH", f"/api/v1/namespaces/default/configmaps/{cm}", {"data": {"greeting": "bonjour"}},
            ctype="application/merge-patch+json")
    wait("updated file", lambda: pod_exec(layout, p, "app", ["cat", "/cfg/greeting"]).stdout == "bonjour", timeout=20)
    delete(api, name)


def test_hooks_and_graceful_deletion(cluster, tmp_path) -> None:
    _, api = cluster
    name = uniq("hooks")
    api.create(pod(name, [{
        "name": "app", "image": "busybox",
        "command": ["sh", "-c", "trap 'echo got-TERM >> /host/trail; exit 0' TERM; while true; do sleep 0.1; done"],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo post-start >> /host/trail"]}},
                      "preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop >> /host/trail"]}}},
        "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
        volumes=[{"name": "host", "hostPath": {"path": str(tmp_path), "type": "Directory"}}]))
    wait("running", lambda: (x := api.pod(name)) and cond(x, "Ready") == "True" and x)
    delete(api, name)
    wait("pod deleted", lambda: api.pod(name) is None, timeout=30)
    assert (tmp_path / "trail").read_text().split() == ["post-start", "pre-stop", "got-TERM"]


def test_changing_the_image_restarts_the_container(cluster) -> None:
    _, api = cluster
    name = uniq("setimg")
    api.create(pod(name, [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]))
    wait("running", lambda: (x := api.pod(name)) and cond(x, "Ready") == "True" and x)
    api.req("PATCH", f"/api/v1/namespaces/default/pods/{name}",
            {"spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}},
            ctype="application/strategic-merge-patch+json")
    p = wait("restarted with the new image", lambda: (x := api.pod(name)) and cstatus(x, "app").get("restartCount") == 1
             and cstatus(x, "app").get("state", {}).get("running") and x)
    assert cstatus(p, "app")["image"] == "docker.io/library/busybox:1.36"
    events = [e for e in api.req("GET", "/api/v1/namespaces/default/events")["items"] if e["involvedObject"]["name"] == name]
    assert any(e["reason"] == "Killing" and "definition changed" in e["message"] for e in events)
    delete(api, name)


def test_deletion_and_node_restart(cluster) -> None:
    layout, api = cluster
    keep = uniq("keep")
    api.create(pod(keep, [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]))
    p = wait("running", lambda: (x := api.pod(keep)) and cond(x, "Ready") == "True" and x)
    pid = runtime_state.read_exec(layout.pods_dir, p["metadata"]["uid"], "app").pid

    lifecycle._stop_component(layout, "node")
    lifecycle._spawn(layout, "node", netns=layout.node_netns)
    # the container kept running and the restarted node adopted it (no restart, same process)
    gone = uniq("gone")
    api.create(pod(gone, [{"name": "app", "image": "busybox", "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]))
    g = wait("new pod running after the node restart", lambda: (x := api.pod(gone)) and cond(x, "Ready") == "True" and x)
    p = api.pod(keep)
    assert cstatus(p, "app")["restartCount"] == 0 and cond(p, "Ready") == "True"
    assert runtime_state.read_exec(layout.pods_dir, p["metadata"]["uid"], "app").pid == pid
    assert Path(f"/proc/{pid}").exists()

    uid = g["metadata"]["uid"]
    netns = layout.pod_netns(uid)
    assert hostnet.netns_exists(netns)
    ip = g["status"]["podIP"]
    delete(api, gone)
    wait("pod deleted from the API", lambda: api.pod(gone) is None, timeout=30)
    assert not hostnet.netns_exists(netns)
    left = runtime_state.pod_dir(layout.pods_dir, uid)
    assert not left.exists(), sorted(str(p.relative_to(left)) for p in left.rglob("*"))
    ipam = json.loads((layout.state_dir / "ipam.json").read_text())["allocations"]
    assert ip not in ipam
    delete(api, keep)
    wait("pod deleted", lambda: api.pod(keep) is None, timeout=30)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_orphans_of_a_crashed_node_are_cleaned(cluster) -> None:
    layout, _api = cluster
    # leftovers of a pod the API never heard of: a pod dir, an IP and a netns
    uid = str(uuid.uuid4())
    netns = layout.pod_netns(uid)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    runtime_state.write_json(runtime_state.pod_dir(layout.pods_dir, uid) / "pod.json",
                             runtime_state.PodRecord(uid, "default", "ghost", netns, "10.244.0.250"))
    lifecycle._stop_component(layout, "node")
    lifecycle._spawn(layout, "node", netns=layout.node_netns)
    wait("orphan netns removed", lambda: not hostnet.netns_exists(netns), timeout=30)
    assert not runtime_state.pod_dir(layout.pods_dir, uid).exists()


def test_node_log_has_no_tracebacks(cluster) -> None:
    layout, _ = cluster
    text = (layout.logs_dir / "node.log").read_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 300:][:3000]
