"""The webhook process over real HTTPS on loopback, with a certificate signed by a throwaway CA."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import urllib3

from minimesh.install import pki

SERVICE_NAME = "minimeshd.mesh-system.svc"  # in the serving certificate (conftest.py)


def client(tls: Any, webhook: Any, ca: bytes | None = None) -> urllib3.HTTPSConnectionPool:
    """Dial 127.0.0.1 but check the certificate for the service name, as the API server does."""
    ctx = ssl.create_default_context(cadata=(ca or tls.ca.read_bytes()).decode())
    return urllib3.HTTPSConnectionPool("127.0.0.1", webhook.port, ssl_context=ctx, server_hostname=SERVICE_NAME,
                                       assert_hostname=SERVICE_NAME, retries=False, timeout=10)


def review(obj: dict[str, Any] | None, uid: str | None = None, kind: str = "Pod", op: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid or str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
        "namespace": "shop", "operation": op, "object": obj}}


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}


def post(pool: urllib3.HTTPSConnectionPool, body: Any, content_type: str = "application/json",
         path: str = "/inject") -> urllib3.BaseHTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return pool.request("POST", path, body=data, headers={"Content-Type": content_type})


def test_valid_review_gets_a_patch_that_applies_and_its_uid_back(tls: Any, webhook: Any) -> None:
    pool = client(tls, webhook)
    r = post(pool, review(POD, uid="7f1c2a9e-uid"))
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    answer = json.loads(r.data)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    resp = answer["response"]
    assert resp["uid"] == "7f1c2a9e-uid" and resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    pod = jsonpatch.apply_patch(POD, json.loads(base64.b64decode(resp["patch"])))
    assert [c["name"] for c in pod["spec"]["containers"]] == ["web", "minimesh-proxy"]
    assert pod["spec"]["initContainers"][0]["name"] == "minimesh-init"
    # the trailing-slash path is served too, as Istio's mux does
    assert json.loads(post(pool, review(POD), path="/inject/").data)["response"]["allowed"] is True


def test_a_client_that_does_not_trust_the_ca_is_refused(tls: Any, webhook: Any) -> None:
    other = pki.new_root_ca(dt.datetime.now(dt.UTC), "someone else")
    with pytest.raises(urllib3.exceptions.SSLError):
        post(client(tls, webhook, ca=other.cert_pem), review(POD))


def test_malformed_requests_get_clear_errors(tls: Any, webhook: Any) -> None:
    pool = client(tls, webhook)
    r = post(pool, b"{not json")
    assert r.status == 400 and b"not JSON" in r.data and b"line 1 column 2" in r.data
    r = post(pool, b"")
    assert r.status == 400 and r.data == b"no body found\n"
    r = post(pool, review(POD), content_type="text/plain")
    assert r.status == 415 and b"application/json" in r.data

    def refused(body: Any) -> dict[str, Any]:
        res = post(pool, body)
        assert res.status == 200
        resp = json.loads(res.data)["response"]
        assert resp["allowed"] is False and "patch" not in resp
        return resp

    resp = refused({**review(POD, uid="u-1"), "apiVersion": "admission.k8s.io/v1beta1"})
    assert resp["uid"] == "u-1" and "admission.k8s.io/v1beta1" in resp["status"]["message"]
    assert "request.uid is missing" in refused({**review(POD), "request": {**review(POD)["request"], "uid": ""}})[
        "status"]["message"]
    assert "has no request" in refused({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})["status"]["message"]
    resp = refused(review({"metadata": {"name": "x"}, "spec": {"containers": "nginx"}}, uid="u-2"))
    assert resp["uid"] == "u-2"
    assert resp["status"]["message"] == "could not read the pod: spec.containers: want a non-empty list, got str 'nginx'"
    bad = json.loads(json.dumps(POD))
    bad["metadata"]["annotations"] = {"traffic.sidecar.minimesh.io/excludeInboundPorts": "eighty"}
    msg = refused(review(bad))["status"]["message"]
    assert msg.startswith("sidecar injection failed: annotation traffic.sidecar.minimesh.io/excludeInboundPorts")
    assert webhook.proc.poll() is None  # none of it crashed the server


def _policy_review(spec: dict[str, Any], op: str = "CREATE") -> dict[str, Any]:
    r = review({"apiVersion": "security.minimesh.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "details-viewer", "namespace": "shop"}, "spec": spec}, op=op)
    r["request"]["kind"] = {"group": "security.minimesh.io", "version": "v1", "kind": "AuthorizationPolicy"}
    r["request"]["resource"] = {"group": "security.minimesh.io", "version": "v1", "resource": "authorizationpolicies"}
    return r


def test_validate_refuses_a_policy_the_push_server_could_not_use(tls: Any, webhook: Any) -> None:
    """POST /validate (istiod's config validation): the reason names the policy and the field."""
    pool = client(tls, webhook)
    good = {"rules": [{"to": [{"operation": {"methods": ["GET"], "paths": ["/details*"]}}]}]}
    resp = json.loads(post(pool, _policy_review(good), path="/validate").data)["response"]
    assert resp["allowed"] is True and "patch" not in resp
    for spec, message in (
            ({"rules": [{"to": [{"operation": {"methods": ["get"]}}]}]},
             "AuthorizationPolicy shop/details-viewer: spec.rules[0].to[0].operation.methods[0]: 'get' is not an "
             "upper-case HTTP method"),
            ({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300/8"]}}]}]}, "is not an IP address or CIDR block"),
            ({"action": "CUSTOM"}, "CUSTOM is not supported by minimesh")):
        for op in ("CREATE", "UPDATE"):
            resp = json.loads(post(pool, _policy_review(spec, op), path="/validate").data)["response"]
            assert resp["allowed"] is False and message in resp["status"]["message"], resp
    # other kinds and DELETE are not checked; a malformed review gets the injector's clear errors
    assert json.loads(post(pool, review(POD), path="/validate").data)["response"]["allowed"] is True
    assert json.loads(post(pool, _policy_review({"action": "CUSTOM"}, "DELETE"), path="/validate").data)[
        "response"]["allowed"] is True
    assert post(pool, b"{not json", path="/validate").status == 400
    assert webhook.proc.poll() is None


def test_wrong_kind_and_non_create_are_allowed_without_a_patch(tls: Any, webhook: Any) -> None:
    pool = client(tls, webhook)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    for body in (review(cm, uid="cm", kind="ConfigMap"), review(POD, uid="up", op="UPDATE")):
        resp = json.loads(post(pool, body).data)["response"]
        assert resp == {"uid": body["request"]["uid"], "allowed": True}


def test_metrics_count_every_outcome_and_ready_answers(tls: Any, webhook: Any) -> None:
    pool = client(tls, webhook)
    post(pool, review(POD))
    opted_out = {**POD, "metadata": {"name": "job", "labels": {"sidecar.minimesh.io/inject": "false"}}}
    post(pool, review(opted_out))
    post(pool, b"nope")
    text = pool.request("GET", "/metrics").data.decode()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples["sidecar_injection_requests_total"] == 3
    assert samples["sidecar_injection_success_total"] == 1
    assert samples['sidecar_injection_skip_total{reason="opted_out"}'] == 1
    assert samples['sidecar_injection_failure_total{type="bad_request"}'] == 1
    assert pool.request("GET", "/ready").status == 200
    logs = webhook.logs()
    assert "injected pod shop/web" in logs and "skipped pod shop/job: the pod opted out" in logs
    assert "bad_request: could not decode body: not JSON" in logs


def test_renewed_certificate_is_served_without_a_restart(tls: Any, webhook: Any) -> None:
    old_ca = tls.ca.read_bytes()
    tls.reissue(pki.new_root_ca(dt.datetime.now(dt.UTC), "renewed CA"))
    deadline = time.monotonic() + 15
    while True:
        try:
            r = post(client(tls, webhook), review(POD))
            break
        except urllib3.exceptions.SSLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert r.status == 200
    with pytest.raises(urllib3.exceptions.SSLError):
        post(client(tls, webhook, ca=old_ca), review(POD))
    assert "reloaded the serving certificate" in webhook.logs()


def test_missing_certificate_is_a_clear_error(tls: Any, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "minimesh.inject", "--port", "0", "--cert", str(tmp_path / "no.crt"),
                          "--key", str(tls.key), "--no-namespace-check"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "cannot load the serving certificate" in res.stderr and "no.crt" in res.stderr
