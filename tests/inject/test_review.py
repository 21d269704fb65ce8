"""review.handle, the sans-I/O protocol: every kind of input gets a clear answer, none raises."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimesh.inject import review

ENABLED = {"minimesh-injection": "enabled"}
POD = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}


def ask(body: Any, labels: Any = ENABLED, content_type: str = "application/json") -> review.Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return review.handle(data, content_type, lambda _ns: labels)


def admission(obj: Any, **request: Any) -> dict[str, Any]:
    req = {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
           "namespace": "shop", "object": obj, **request}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def response(reply: review.Reply) -> dict[str, Any]:
    assert reply.status == 200 and reply.content_type == "application/json"
    answer = json.loads(reply.body)
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    return answer["response"]


def test_injected_reply_carries_a_base64_json_patch() -> None:
    reply = ask(admission(POD))
    resp = response(reply)
    assert (reply.outcome, resp["uid"], resp["allowed"], resp["patchType"]) == ("success", "u1", True, "JSONPatch")
    ops = json.loads(base64.b64decode(resp["patch"]))
    assert {k: ops[1][k] for k in ("op", "path")} == {"op": "add", "path": "/spec/containers/-"}
    assert reply.message == "injected pod shop/web (5 patch operations)"


def test_content_type_with_charset_is_accepted() -> None:
    assert ask(admission(POD), content_type="application/json; charset=utf-8").outcome == "success"


@pytest.mark.parametrize(("body", "reason", "message"), [
    ([1, 2], "bad_review", "want an AdmissionReview object, got list"),
    ({"apiVersion": "v1", "kind": "Pod"}, "bad_review", "want kind AdmissionReview"),
    ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": "x"}, "bad_review", "has no request"),
    (admission(POD, uid=None), "bad_review", "request.uid is missing"),
    (admission(None), "bad_pod", "could not read the pod: object: want a Pod (a JSON object), got NoneType"),
    (admission({"spec": {"containers": [{"name": "a"}], "initContainers": [3]}}), "bad_pod",
     "spec.initContainers[0]: want an object"),
])
def test_refusals_say_what_was_wrong(body: Any, reason: str, message: str) -> None:
    reply = ask(body)
    resp = response(reply)
    assert (reply.outcome, reply.reason, resp["allowed"]) == ("failure", reason, False)
    assert message in resp["status"]["message"] and resp["status"]["code"] == 400


@pytest.mark.parametrize(("body", "reason"), [
    (admission(POD, kind={"group": "", "version": "v1", "kind": "ConfigMap"}), "not_a_pod"),
    (admission({**POD, "kind": "Service"}), "not_a_pod"),
    (admission(POD, operation="UPDATE"), "not_create"),
    (admission({**POD, "spec": {**POD["spec"], "hostNetwork": True}}), "host_network"),
])
def test_skips_allow_without_a_patch(body: Any, reason: str) -> None:
    reply = ask(body)
    assert (reply.outcome, reply.reason) == ("skip", reason)
    assert response(reply) == {"uid": "u1", "allowed": True}


def test_namespace_comes_from_the_request() -> None:
    asked: list[str] = []
    review.handle(json.dumps(admission(POD, namespace="payments")).encode(), "application/json",
                  lambda ns: asked.append(ns) or ENABLED)  # type: ignore[func-returns-value]
    assert asked == ["payments"]
    assert ask(admission(POD), labels={}).reason == "namespace_not_enabled"


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12))
def test_any_json_object_gets_an_answer(obj: Any) -> None:
    reply = ask(admission(obj))
    assert reply.status == 200
    resp = response(reply)
    assert resp["uid"] == "u1"
    assert resp["allowed"] is (reply.outcome != "failure")


def test_the_starter_refuses_pods_and_names_the_exercise() -> None:
    """With lab 05 not done, pods in enabled namespaces are refused with the exercise's message."""
    root = Path(os.environ["MINIMESH_REPO"])
    spec = importlib.util.spec_from_file_location("_trees_for_inject", root / "minimesh" / "lab" / "trees.py")
    assert spec and spec.loader
    trees = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trees)
    starter = trees.build_starter_tree(root)
    code = ("import json,sys; from minimesh.inject import review; r = review.handle(sys.stdin.buffer.read(),"
            " 'application/json', lambda ns: {'minimesh-injection': 'enabled'}); print(r.body.decode())")
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(admission(POD)), capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(starter)}, timeout=60, check=True)
    resp = json.loads(res.stdout)["response"]
    assert resp["allowed"] is False and resp["status"]["code"] == 500
    assert resp["status"]["message"].startswith("sidecar injection failed: not implemented yet: lab 05:")
