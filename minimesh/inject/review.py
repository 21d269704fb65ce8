"""AdmissionReview v1 in, the HTTP answer out: the webhook's protocol without any I/O (like h11).

Istio's `serveInject`, answer for answer:

| request                                   | answer                                                     |
|-------------------------------------------|------------------------------------------------------------|
| empty body                                | 400 text "no body found"                                   |
| Content-Type not application/json         | 415 text "invalid Content-Type, want `application/json`"  |
| body not JSON                             | 400 text naming the JSON error (line, column)              |
| not an AdmissionReview v1, no request/uid | AdmissionReview, allowed: false, status.message says which |
| object unreadable as a Pod                | AdmissionReview, allowed: false, status.message names field|
| injection impossible (bad annotation ...) | AdmissionReview, allowed: false, status.message           |
| not a Pod / not CREATE                    | AdmissionReview, allowed: true, no patch (skipped)         |
| skipped by policy                         | AdmissionReview, allowed: true, no patch                   |
| injected                                  | AdmissionReview, allowed: true, patchType JSONPatch, patch |

`allowed: false` is what Istio answers when it cannot inject: the pod is refused with the reason rather
than created without its proxy. `response.uid` always echoes `request.uid` when there is one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from minimesh.inject import injector
from minimesh.inject.model import InjectionError, MalformedPod, pod_name
from minimesh.inject.policy import describe
from minimesh.inject.template import InjectorConfig

API_VERSION = "admission.k8s.io/v1"
SUCCESS, SKIP, FAILURE = "success", "skip", "failure"
NOT_A_POD, NOT_CREATE = "not_a_pod", "not_create"  # skip reasons decided here, not by policy
# failure types (the `type` label of sidecar_injection_failure_total)
BAD_REQUEST, BAD_REVIEW, BAD_POD, INJECTION, INTERNAL = "bad_request", "bad_review", "bad_pod", "injection", "internal"

NamespaceLabels = Callable[[str], Mapping[str, str] | None]


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    outcome: str  # SUCCESS | SKIP | FAILURE
    reason: str = ""  # skip reason or failure type
    message: str = ""  # for the log: what happened to which pod


def _text(status: int, kind: str, message: str) -> Reply:
    return Reply(status, "text/plain; charset=utf-8", (message + "\n").encode(), FAILURE, kind, message)


def _review(response: dict[str, Any]) -> bytes:
    return json.dumps({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}).encode()


def refuse(uid: str, kind: str, message: str, code: int = 400) -> Reply:
    body = _review({"uid": uid, "allowed": False, "status": {"code": code, "message": message}})
    return Reply(200, "application/json", body, FAILURE, kind, message)


def allow(uid: str, outcome: str, reason: str, message: str, ops: list[Any] | None = None) -> Reply:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return Reply(200, "application/json", _review(response), outcome, reason, message)


def decode(body: bytes, content_type: str | None) -> tuple[str, dict[str, Any]] | Reply:
    """(uid, request) of a well-formed AdmissionReview v1 POST, or the error answer for a malformed one."""
    if not body:
        return _text(400, BAD_REQUEST, "no body found")
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        return _text(415, BAD_REQUEST, "invalid Content-Type, want `application/json`")
    try:
        review = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return _text(400, BAD_REQUEST, f"could not decode body: not JSON: {e}")

    if not isinstance(review, dict):
        return refuse("", BAD_REVIEW, f"could not decode body: want an AdmissionReview object, got {type(review).__name__}")
    request = review.get("request")
    uid = request.get("uid") if isinstance(request, dict) else None
    uid = uid if isinstance(uid, str) else ""
    if review.get("kind") != "AdmissionReview" or review.get("apiVersion") != API_VERSION:
        return refuse(uid, BAD_REVIEW, f"could not decode body: want kind AdmissionReview, apiVersion {API_VERSION};"
                       f" got kind {review.get('kind')!r}, apiVersion {review.get('apiVersion')!r}")
    if not isinstance(request, dict):
        return refuse("", BAD_REVIEW, "could not decode body: the AdmissionReview has no request")
    if not uid:
        return refuse("", BAD_REVIEW, "could not decode body: request.uid is missing")
    return uid, request


def handle(body: bytes, content_type: str | None, namespace_labels: NamespaceLabels,
           config: InjectorConfig | None = None) -> Reply:
    """The answer to one POST /inject."""
    decoded = decode(body, content_type)
    if isinstance(decoded, Reply):
        return decoded
    uid, request = decoded
    kind = (request.get("kind") or {}).get("kind") if isinstance(request.get("kind"), dict) else None
    obj = request.get("object")
    obj_kind = obj.get("kind") if isinstance(obj, dict) else None
    if kind != "Pod" or obj_kind not in (None, "Pod"):
        got = obj_kind if kind == "Pod" else kind
        return allow(uid, SKIP, NOT_A_POD, f"skipped: request is for a {got!r}, not a Pod")
    operation = request.get("operation")
    if operation != "CREATE":
        return allow(uid, SKIP, NOT_CREATE, f"skipped: operation {operation!r}; pods are injected on CREATE only")

    namespace = str(request.get("namespace") or ((obj or {}).get("metadata") or {}).get("namespace") or "default")
    who = f"pod {namespace}/{pod_name(obj) if isinstance(obj, dict) else '?'}"
    try:
        decision = injector.decide(obj, namespace, namespace_labels(namespace), config)
    except MalformedPod as e:
        return refuse(uid, BAD_POD, f"could not read the pod: {e}")
    except InjectionError as e:
        return refuse(uid, INJECTION, f"sidecar injection failed: {e}")
    except NotImplementedError as e:  # the trainee's starter: say which exercise is missing
        return refuse(uid, INTERNAL, f"sidecar injection failed: not implemented yet: {e}", 500)
    except Exception as e:  # a bug must refuse the pod with its reason, never crash the webhook
        return refuse(uid, INTERNAL, f"sidecar injection failed: {type(e).__name__}: {e}", 500)
    if decision.skip:
        return allow(uid, SKIP, decision.skip, f"skipped {who}: {describe(decision.skip, namespace)}")
    return allow(uid, SUCCESS, "", f"injected {who} ({len(decision.patch)} patch operations)", decision.patch)

