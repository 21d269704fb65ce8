"""Stage 5 on a real local cluster: `minimesh install`, injection of real pods (the init container really
installs the capture in the pod's network namespace), the opted-out CronJob, idempotency, `rollout
restart/status`, the webhook down with failurePolicy Fail, and `install --uninstall`.

One test function on purpose: the cluster and the install take most of the time, and under xdist every
worker that ran a test of this module would build its own.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from minimesh.inject import names
from minimesh.inject.offline import inject_object

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1500)]
SOLVED = Path(os.environ.get("MINIMESH_SOLVED_ROOT", "."))
HOOK = "sidecar-injector.minimesh.io"


class Mesh:
    def __init__(self, name: str) -> None:
        self.name = name
        self.env = {**os.environ, "MINIMESH_CLUSTER": name, "MINIMESH_PROVIDER": "local", "PYTHONPATH": str(SOLVED),
                    "PYTHONSAFEPATH": "1", "COLUMNS": "200"}
        self._api: Any = None

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "minimesh", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, *args: str, timeout: float = 600) -> str:
        res = self.run(*args, timeout=timeout)
        assert res.returncode == 0, f"minimesh {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        return res.stdout

    @property
    def cluster(self) -> Any:
        from minimesh.cluster import provider

        return provider.get("local", self.name)

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = self.cluster.api_client()
        return self._api

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        return client.AppsV1Api(self.api)

    def namespace(self, prefix: str, injected: bool) -> str:
        ns = f"{prefix}-{secrets.token_hex(3)}"
        labels = {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED} if injected else {}
        self.core.create_namespace({"metadata": {"name": ns, "labels": labels}})
        eventually(lambda: self.core.read_namespaced_service_account("default", ns), f"default SA in {ns}")
        return ns


def eventually(fn: Callable[[], Any], what: str, timeout: float = 180, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            got = fn()
            if got:
                return got
            last = got
        except (ApiException, AssertionError, AttributeError, KeyError, IndexError, TypeError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(every)


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    m = Mesh(f"inj{secrets.token_hex(3)}")
    try:
        m.ok("cluster", "up", "--name", m.name, timeout=300)
        yield m
    finally:
        m.run("cluster", "down", "--name", m.name, timeout=300)


def _pod(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta}, "spec": {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "app", "image": "minimesh/minimesh:dev", "command": ["python", "-m", "minimesh.apps.sleep"],
                        "ports": [{"name": "http", "containerPort": 9080}]}]}}


def _container_names(pod: Any) -> tuple[list[str], list[str]]:
    return [c.name for c in pod.spec.init_containers or []], [c.name for c in pod.spec.containers]


def test_install_inject_restart_and_uninstall(mesh: Mesh) -> None:
    # ---- install, and install again (upgrade in place) ------------------------------------------------------
    out = mesh.ok("install", "--timeout", "400", timeout=600)
    assert 'deployment "minimeshd" successfully rolled out' in out
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/minimesh-sidecar-injector created" in out
    assert "secret/minimesh-ca created" in out
    ca = mesh.core.read_namespaced_secret("minimesh-ca", "mesh-system").data["ca.crt"]
    hook_cfg = client.AdmissionregistrationV1Api(mesh.api).read_mutating_webhook_configuration("minimesh-sidecar-injector")
    assert hook_cfg.webhooks[0].client_config.ca_bundle == ca  # the API server trusts the mesh root CA
    generation = mesh.apps.read_namespaced_deployment("minimeshd", "mesh-system").metadata.generation

    again = mesh.ok("install", "--timeout", "400", timeout=600)
    assert "secret/minimesh-ca unchanged (reused)" in again and "secret/minimeshd-webhook-tls unchanged" in again
    assert mesh.core.read_namespaced_secret("minimesh-ca", "mesh-system").data["ca.crt"] == ca
    assert mesh.apps.read_namespaced_deployment("minimeshd", "mesh-system").metadata.generation == generation

    # ---- config validation: a policy the push server could not use is refused at admission, saying why -------
    assert "validatingwebhookconfiguration.admissionregistration.k8s.io/minimesh-validator created" in out
    custom = client.CustomObjectsApi(mesh.api)
    body = {"apiVersion": "security.minimesh.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "typo"},
            "spec": {"rules": [{"to": [{"operation": {"methods": ["get"]}}]}]}}
    with pytest.raises(client.ApiException) as refused:
        custom.create_namespaced_custom_object("security.minimesh.io", "v1", "default", "authorizationpolicies", body)
    assert refused.value.status == 400
    message = json.loads(refused.value.body)["message"]
    assert message.startswith('admission webhook "validation.minimesh.io" denied the request: AuthorizationPolicy '
                              "default/typo: spec.rules[0].to[0].operation.methods[0]: 'get' is not an upper-case"), message
    body["spec"]["rules"][0]["to"][0]["operation"]["methods"] = ["GET"]
    custom.create_namespaced_custom_object("security.minimesh.io", "v1", "default", "authorizationpolicies", body)
    custom.delete_namespaced_custom_object("security.minimesh.io", "v1", "default", "authorizationpolicies", "typo")

    # ---- a pod in an enabled namespace is injected, and its init container installs the capture -----------
    shop = mesh.namespace("shop", injected=True)
    pod = mesh.core.create_namespaced_pod(shop, _pod("web"))
    assert _container_names(pod) == (["minimesh-init"], ["app", "minimesh-proxy"])
    status = json.loads(pod.metadata.annotations[names.STATUS_ANNOTATION])
    assert status["revision"] == "default" and "minimesh-token" in status["volumes"]

    def init_done() -> bool:
        st = mesh.core.read_namespaced_pod("web", shop).status
        term = (st.init_container_statuses or [])[0].state.terminated
        assert term is None or term.exit_code == 0, f"minimesh-init failed: {term}"
        return term is not None

    eventually(init_done, "minimesh-init to finish")
    logs = mesh.core.read_namespaced_pod_log("web", shop, container="minimesh-init")
    assert "traffic capture installed: outbound -> 15001, inbound -> 15006" in logs
    netns = mesh.cluster.pod_netns(shop, "web")
    assert netns, "the local cluster knows the pod's network namespace"
    rules = "".join(subprocess.run(["ip", "netns", "exec", netns, tool, "-t", "nat"], capture_output=True, text=True,
                                   timeout=30).stdout for tool in ("iptables-nft-save", "iptables-legacy-save"))
    assert "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    assert "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
    if (SOLVED / "minimesh" / "agent").is_dir():  # the agent (lead) exists: the proxy must come up
        eventually(lambda: all(c.ready for c in mesh.core.read_namespaced_pod("web", shop).status.container_statuses),
                   "every container of the injected pod to be ready", timeout=240)
    else:  # no agent yet: the proxy container is started as specified (and exits); its spec is what counts
        eventually(lambda: any(c.name == "minimesh-proxy" and (c.state.running or c.state.terminated or c.last_state.terminated)
                               for c in mesh.core.read_namespaced_pod("web", shop).status.container_statuses or []),
                   "the kubelet to start minimesh-proxy")

    # ---- an already injected pod is left as it is --------------------------------------------------------------
    pre = inject_object(_pod("pre"))
    created = mesh.core.create_namespaced_pod(shop, pre)
    assert _container_names(created) == (["minimesh-init"], ["app", "minimesh-proxy"])
    assert created.metadata.annotations[names.STATUS_ANNOTATION] == pre["metadata"]["annotations"][names.STATUS_ANNOTATION]
    assert mesh.api.sanitize_for_serialization(created.spec.containers[1])["args"] == pre["spec"]["containers"][1]["args"]

    # ---- the CronJob problem: an opted-out CronJob's Job completes ----------------------------------------------
    template = {"metadata": {"labels": {"sidecar.minimesh.io/inject": "false"}},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "report", "image": "minimesh/minimesh:dev", "command": ["python", "-c", "print('report done')"]}]}}
    batch = client.BatchV1Api(mesh.api)
    cron = batch.create_namespaced_cron_job(shop, {"metadata": {"name": "report"}, "spec": {
        "schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"backoffLimit": 0, "template": template}}}})
    # what `kubectl create job --from=cronjob/report` does, so the test does not wait for the schedule
    batch.create_namespaced_job(shop, {"metadata": {"name": "report-manual", "ownerReferences": [{
        "apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": cron.metadata.uid, "controller": True}]},
        "spec": cron.spec.job_template.spec})
    eventually(lambda: batch.read_namespaced_job("report-manual", shop).status.succeeded == 1, "the Job to complete")
    (job_pod,) = mesh.core.list_namespaced_pod(shop, label_selector="job-name=report-manual").items
    assert _container_names(job_pod) == ([], ["report"])

    # ---- rollout restart: pods are re-created, and re-injected once the namespace is enabled ----------------------
    roll = mesh.namespace("roll", injected=False)
    sleep = next(d for d in _docs("sleep.yaml") if d["kind"] == "Deployment")
    sleep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 0
    del sleep["spec"]["template"]["spec"]["serviceAccountName"]  # the namespace's default account will do
    mesh.apps.create_namespaced_deployment(roll, sleep)
    mesh.ok("rollout", "status", "-n", roll, "deploy/sleep", "--timeout", "240", timeout=300)
    before = {p.metadata.name for p in mesh.core.list_namespaced_pod(roll).items}
    assert "deployment.apps/sleep restarted" in mesh.ok("rollout", "restart", "-n", roll, "deploy/sleep")
    assert 'deployment "sleep" successfully rolled out' in mesh.ok(
        "rollout", "status", "-n", roll, "deploy/sleep", "--timeout", "240", timeout=300)
    pods = mesh.core.list_namespaced_pod(roll).items
    assert {p.metadata.name for p in pods if not p.metadata.deletion_timestamp}.isdisjoint(before)
    mesh.core.patch_namespace(roll, {"metadata": {"labels": {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}}})
    mesh.ok("rollout", "restart", "-n", roll, "--all")
    eventually(lambda: any(_container_names(p)[1] == ["sleep", "minimesh-proxy"]
                           for p in mesh.core.list_namespaced_pod(roll).items), "a re-created, injected sleep pod")

    # ---- webhook down + failurePolicy Fail: pods in enabled namespaces are refused, with the reason ---------------
    mesh.apps.patch_namespaced_deployment_scale("minimeshd", "mesh-system", {"spec": {"replicas": 0}})
    eventually(lambda: not any(s.addresses for s in mesh.core.read_namespaced_endpoints("minimeshd", "mesh-system").subsets
                               or []), "minimeshd to have no endpoint")
    with pytest.raises(ApiException) as refused:
        mesh.core.create_namespaced_pod(shop, _pod("late"))
    message = json.loads(refused.value.body)["message"]
    print("pod creation refused with:", message)
    assert refused.value.status == 500
    assert message.startswith(f'Internal error occurred: failed calling webhook "{HOOK}": failed to call webhook: '
                              'Post "https://minimeshd.mesh-system.svc:443/inject?timeout=10s"')
    assert "minimeshd" in message.split("?timeout=10s")[1]
    plain = mesh.namespace("plain", injected=False)
    assert _container_names(mesh.core.create_namespaced_pod(plain, _pod("free"))) == ([], ["app"])

    # ---- uninstall: the webhook configuration goes first; afterwards pods are created plain ------------------------
    out = mesh.ok("install", "--uninstall", timeout=300)
    assert out.splitlines()[0] == "mutatingwebhookconfiguration/minimesh-sidecar-injector deleted"
    with pytest.raises(ApiException) as gone:
        mesh.core.read_namespace("mesh-system")
    assert gone.value.status == 404
    assert _container_names(mesh.core.create_namespaced_pod(shop, _pod("late"))) == ([], ["app"])
    assert base64.b64decode(ca).startswith(b"-----BEGIN CERTIFICATE-----")


def _docs(name: str) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all((Path(os.environ["MINIMESH_REPO"]) / "minimesh/manifests" / name).read_text()) if d]
