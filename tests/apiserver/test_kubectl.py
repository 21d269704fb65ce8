"""The real kubectl v1.32 against the server: discovery, tables, apply, describe, explain..."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
"""


@pytest.fixture(scope="module")
def kubectl(cluster: Any) -> Any:
    cache = cluster.dir / "kubectl-cache"

    def run(*args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cache), *args],
                           capture_output=True, text=True, input=stdin, timeout=60)
        if ok:
            assert p.returncode == 0, f"kubectl {' '.join(args)} failed: {p.stderr}"
        return p

    return run


def test_get_tables(cluster: Any, kubectl: Any) -> None:
    ns = cluster.namespace("kt")
    kubectl("-n", ns, "apply", "-f", "-", stdin=DEPLOY)
    out = kubectl("-n", ns, "get", "deploy,svc").stdout
    assert out.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert "deployment.apps/web" in out and "0/2" in out
    svc_header = next(line for line in out.splitlines() if line.startswith("NAME") and "TYPE" in line)
    assert svc_header.split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    kubectl("-n", ns, "run", "p1", "--image=busybox", "--restart=Never", "--", "sleep", "1")
    wide = kubectl("-n", ns, "get", "pods", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    assert wide[1].split()[:4] == ["p1", "0/1", "Pending", "0"]
    ns_out = kubectl("get", "ns", ns).stdout.splitlines()
    assert ns_out[0].split() == ["NAME", "STATUS", "AGE"] and ns_out[1].split()[:2] == [ns, "Active"]
    y = kubectl("-n", ns, "get", "pod", "p1", "-o", "yaml").stdout
    assert "serviceAccountName: default" in y and "kube-api-access-" in y
    labels = kubectl("-n", ns, "get", "pods", "--show-labels").stdout
    assert "run=p1" in labels


def test_apply_twice_label_annotate_scale_restart(cluster: Any, kubectl: Any) -> None:
    ns = cluster.namespace("ka")
    first = kubectl("-n", ns, "apply", "-f", "-", stdin=DEPLOY).stdout
    assert "deployment.apps/web created" in first and "service/web created" in first
    second = kubectl("-n", ns, "apply", "-f", "-", stdin=DEPLOY).stdout
    assert "deployment.apps/web unchanged" in second and "service/web unchanged" in second
    changed = kubectl("-n", ns, "apply", "-f", "-", stdin=DEPLOY.replace("nginx:1.25", "nginx:1.26")).stdout
    assert "deployment.apps/web configured" in changed
    kubectl("-n", ns, "label", "deploy", "web", "tier=front")
    kubectl("-n", ns, "annotate", "deploy", "web", "note=hello")
    kubectl("-n", ns, "scale", "deploy/web", "--replicas=5")
    kubectl("-n", ns, "rollout", "restart", "deploy/web")
    d = json.loads(kubectl("-n", ns, "get", "deploy", "web", "-o", "json").stdout)
    assert d["metadata"]["labels"]["tier"] == "front" and d["metadata"]["annotations"]["note"] == "hello"
    assert d["spec"]["replicas"] == 5
    assert "kubectl.kubernetes.io/restartedAt" in d["spec"]["template"]["metadata"]["annotations"]
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert d["metadata"]["generation"] == 4


def test_create_describe_delete(cluster: Any, kubectl: Any, tmp_path: Path) -> None:
    ns = cluster.namespace("kd")
    f = tmp_path / "cm.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\ndata:\n  k: v\n")
    assert "configmap/conf created" in kubectl("-n", ns, "create", "-f", str(f)).stdout
    again = kubectl("-n", ns, "create", "-f", str(f), ok=False)
    assert again.returncode != 0 and 'configmaps "conf" already exists' in again.stderr
    pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: dp\nspec:\n  containers:\n  - name: c\n    image: nginx\n    bogus: 1\n"
    strict = kubectl("-n", ns, "apply", "-f", "-", stdin=pod, ok=False)
    assert strict.returncode != 0 and 'unknown field "spec.containers[0].bogus"' in strict.stderr
    kubectl("-n", ns, "apply", "-f", "-", stdin=pod.replace("    bogus: 1\n", ""))
    desc = kubectl("-n", ns, "describe", "pod", "dp").stdout
    for want in ("Name:             dp", "Service Account:  default", "Status:           Pending", "QoS Class:",
                 "node.kubernetes.io/not-ready:NoExecute op=Exists for 300s"):
        assert want in desc
    assert 'pod "dp" deleted' in kubectl("-n", ns, "delete", "pod", "dp").stdout
    assert 'configmap "conf" deleted' in kubectl("-n", ns, "delete", "-f", str(f)).stdout
    assert "No resources found" in kubectl("-n", ns, "get", "cm,pods").stderr


def test_explain_and_api_resources(kubectl: Any) -> None:
    out = kubectl("explain", "pod.spec.containers.image").stdout
    assert "FIELD: image <string>" in out and "Container image name" in out
    out = kubectl("explain", "deployment.spec.strategy").stdout
    assert "RollingUpdate" in out
    res = kubectl("api-resources").stdout
    assert "deployments" in res and "deploy" in res and "apps/v1" in res
    assert "v1.32.0" in kubectl("version", "-o", "json").stdout


def test_dry_run_server_and_wait(cluster: Any, kubectl: Any) -> None:
    ns = cluster.namespace("kw")
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: NAME\ndata:\n  a: b\n"
    out = kubectl("-n", ns, "create", "-f", "-", "--dry-run=server", stdin=cm.replace("NAME", "dry")).stdout
    assert "configmap/dry created (server dry run)" in out
    assert "No resources found" in kubectl("-n", ns, "get", "cm").stderr
    kubectl("-n", ns, "create", "-f", "-", stdin=cm.replace("NAME", "real"))
    w = kubectl("-n", ns, "wait", "--for=jsonpath={.data.a}=b", "configmap/real", "--timeout=10s")
    assert "condition met" in w.stdout


def test_get_watch_prints_table_rows(cluster: Any, kubectl: Any) -> None:
    import time

    ns = cluster.namespace("kgw")
    kubectl("-n", ns, "get", "cm")  # warm the discovery cache
    proc = subprocess.Popen(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cluster.dir / "kubectl-cache"),
                             "-n", ns, "get", "cm", "-w", "--output-watch-events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        kubectl("-n", ns, "create", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  a: b\n")
        kubectl("-n", ns, "delete", "cm", "watched")
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["EVENT", "NAME", "DATA", "AGE"], (out, err)
    assert [r[:3] for r in rows[1:]] == [["ADDED", "watched", "1"], ["DELETED", "watched", "1"]]
