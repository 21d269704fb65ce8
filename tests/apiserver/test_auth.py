"""Service-account tokens (TokenRequest), TokenReview, tokens as API credentials, access reviews,
pods/binding and the scale subresource."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import jwt
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


def _token(core: client.CoreV1Api, ns: str, sa: str, **spec: Any) -> Any:
    return core.create_namespaced_service_account_token(sa, ns, {"spec": spec})


def _get(cluster: Any, path: str, token: str) -> int:
    ctx = ssl.create_default_context(cafile=str(cluster.dir / "ca.crt"))
    req = urllib.request.Request(cluster.srv.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_token_request_and_review(cluster: Any) -> None:
    ns = cluster.namespace("tok")
    c = cluster.client()
    core, authn = client.CoreV1Api(c), client.AuthenticationV1Api(c)
    sa = core.create_namespaced_service_account(ns, {"metadata": {"name": "bookinfo-details"}})
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": "details"}, "spec": {
        "serviceAccountName": "bookinfo-details", "nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})
    tr = _token(core, ns, "bookinfo-details", audiences=["istio-ca"], expirationSeconds=3600,
                boundObjectRef={"kind": "Pod", "apiVersion": "v1", "name": "details"})
    assert tr.status.expiration_timestamp and tr.spec.bound_object_ref.uid == pod.metadata.uid
    claims = jwt.decode(tr.status.token, options={"verify_signature": False})
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["sub"] == f"system:serviceaccount:{ns}:bookinfo-details" and claims["aud"] == ["istio-ca"]
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    k8s = claims["kubernetes.io"]
    assert k8s["namespace"] == ns and k8s["serviceaccount"] == {"name": "bookinfo-details", "uid": sa.metadata.uid}
    assert k8s["pod"] == {"name": "details", "uid": pod.metadata.uid}
    assert jwt.get_unverified_header(tr.status.token)["alg"] == "RS256"
    review = authn.create_token_review({"spec": {"token": tr.status.token, "audiences": ["istio-ca"]}})
    st = review.status
    assert st.authenticated and st.audiences == ["istio-ca"]
    assert st.user.username == f"system:serviceaccount:{ns}:bookinfo-details" and st.user.uid == sa.metadata.uid
    assert st.user.groups == ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]
    assert st.user.extra["authentication.kubernetes.io/pod-name"] == ["details"]
    assert st.user.extra["authentication.kubernetes.io/pod-uid"] == [pod.metadata.uid]
    wrong_aud = authn.create_token_review({"spec": {"token": tr.status.token, "audiences": ["other"]}})
    assert not wrong_aud.status.authenticated and wrong_aud.status.error
    # the token works against the API only with the API audience
    assert _get(cluster, f"/api/v1/namespaces/{ns}/pods", tr.status.token) == 401
    api_tok = _token(core, ns, "bookinfo-details", boundObjectRef={"kind": "Pod", "apiVersion": "v1", "name": "details"})
    assert _get(cluster, f"/api/v1/namespaces/{ns}/pods", api_tok.status.token) == 200
    # a token bound to a pod dies with the pod
    core.delete_namespaced_pod("details", ns, grace_period_seconds=0)
    gone = authn.create_token_review({"spec": {"token": tr.status.token, "audiences": ["istio-ca"]}})
    assert not gone.status.authenticated and "invalidated" in gone.status.error
    assert _get(cluster, f"/api/v1/namespaces/{ns}/pods", api_tok.status.token) == 401
    assert not authn.create_token_review({"spec": {"token": "garbage"}}).status.authenticated


def test_token_request_errors(cluster: Any) -> None:
    ns = cluster.namespace("tokerr")
    core = client.CoreV1Api(cluster.client())
    with pytest.raises(ApiException) as e:
        _token(core, ns, "default", expirationSeconds=60)
    assert e.value.status == 422 and "may not specify a duration less than 10 minutes" in json.loads(e.value.body)["message"]
    with pytest.raises(ApiException) as e:
        _token(core, ns, "nobody")
    assert e.value.status == 404
    with pytest.raises(ApiException) as e:
        _token(core, ns, "default", boundObjectRef={"kind": "Pod", "apiVersion": "v1", "name": "ghost"})
    assert e.value.status == 404


def test_access_reviews_always_allow(cluster: Any) -> None:
    authz = client.AuthorizationV1Api(cluster.client())
    r = authz.create_self_subject_access_review({"spec": {"resourceAttributes": {"verb": "delete", "resource": "pods"}}})
    assert r.status.allowed and "no RBAC" in r.status.reason
    r = authz.create_subject_access_review({"spec": {"user": "someone", "resourceAttributes": {"verb": "get", "resource": "secrets"}}})
    assert r.status.allowed


def test_binding_and_scale(cluster: Any) -> None:
    ns = cluster.namespace("bind")
    c = cluster.client()
    core, apps = client.CoreV1Api(c), client.AppsV1Api(c)
    core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    # like the real server the answer is a Status, which the python client cannot parse as a V1Binding
    r = core.create_namespaced_pod_binding("p", ns, {"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-a"}},
                                           _preload_content=False)
    assert json.loads(r.data) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    bound = core.read_namespaced_pod("p", ns)
    assert bound.spec.node_name == "node-a"
    assert any(x.type == "PodScheduled" and x.status == "True" for x in bound.status.conditions)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod_binding("p", ns, {"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-b"}},
                                           _preload_content=False)
    assert e.value.status == 409 and 'is already assigned to node \\"node-a\\"' in e.value.body
    apps.create_namespaced_deployment(ns, {"metadata": {"name": "d"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                                           "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    scale = apps.read_namespaced_deployment_scale("d", ns)
    assert scale.spec.replicas == 2 and scale.status.selector == "app=d"
    apps.patch_namespaced_deployment_scale("d", ns, {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("d", ns).spec.replicas == 4
    apps.replace_namespaced_deployment_scale("d", ns, {"metadata": {"name": "d"}, "spec": {"replicas": 1}})
    assert apps.read_namespaced_deployment("d", ns).spec.replicas == 1
