"""Wires the non-CRUD parts into the server: service-account tokens (TokenRequest, TokenReview, API
authentication), the ServiceAccount admission plugin, authorization reviews (always allowed: this API
server enforces no RBAC), pods/binding, pods/eviction, and the phase-2 modules (CRDs, admission
webhooks, pods/log, pods/exec, pods/portforward)."""

from __future__ import annotations

import copy
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.apiserver import meta as M
from minimesh.cluster.local.apiserver import tokens as T
from minimesh.cluster.local.apiserver.rest import Attributes, Params, User

if TYPE_CHECKING:
    from minimesh.cluster.local.apiserver.server import ApiServer, Target

Obj = dict[str, Any]
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
NO_RBAC = "minimesh: no RBAC enforcement; every authenticated request is allowed"


def _json(obj: Any, status: int = 200) -> web.Response:
    from minimesh.cluster.local.apiserver.server import _json as j

    return j(obj, status)


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class Core:
    """Tokens, reviews, binding, eviction and ServiceAccount admission."""

    def __init__(self, server: ApiServer):
        self.server = server
        self.issuer = T.TokenIssuer(_read(server.sa_private_key_file), _read(server.sa_public_key_file))

    @property
    def api(self) -> Any:
        return self.server.api

    @property
    def store(self) -> Any:
        return self.server.store

    # ---- authentication --------------------------------------------------------------------
    def review(self, token: str, audiences: list[str] | None) -> T.Claims:
        claims = self.issuer.verify(token, audiences)
        sa = self.store.get("/serviceaccounts", claims.namespace, claims.serviceaccount)
        if sa is None:
            raise T.TokenError("invalid bearer token, service account token has been invalidated")
        if claims.sa_uid and sa["metadata"].get("uid") != claims.sa_uid:
            raise T.TokenError(f"invalid bearer token, service account UID ({sa['metadata'].get('uid')}) does not match claim ({claims.sa_uid})")
        if claims.pod_name:
            pod = self.store.get("/pods", claims.namespace, claims.pod_name)
            if pod is None:
                raise T.TokenError("invalid bearer token, service account token has been invalidated")
            if pod["metadata"].get("uid") != claims.pod_uid:
                raise T.TokenError(f"invalid bearer token, pod UID ({pod['metadata'].get('uid')}) does not match service account pod ref claim ({claims.pod_uid})")
        return claims

    def authenticate(self, token: str) -> User | None:
        try:
            c = self.review(token, None)
        except T.TokenError:
            return None
        return User(c.username, c.sa_uid, c.groups, c.user_extra)

    # ---- virtual resources -----------------------------------------------------------------
    async def tokenreview(self, request: web.Request, t: Target) -> web.Response:
        body = await self.server._body(request)
        spec = (body or {}).get("spec") or {}
        out = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"creationTimestamp": None, **{k: v for k, v in ((body or {}).get("metadata") or {}).items() if k == "name"}},
               "spec": spec}
        token = spec.get("token") or ""
        if not token:
            raise E.invalid("TokenReview", "authentication.k8s.io", "", [E.required("spec.token")])
        audiences = spec.get("audiences") or None
        if token == self.server.admin_token:
            out["status"] = {"authenticated": True, "user": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
                             "audiences": audiences or T.API_AUDIENCES}
            return _json(out, 201)
        try:
            c = self.review(token, audiences)
        except T.TokenError as e:
            out["status"] = {"authenticated": False, "user": {}, "error": f"[{e}]"}
            return _json(out, 201)
        user: Obj = {"username": c.username, "uid": c.sa_uid, "groups": c.groups}
        if c.user_extra:
            user["extra"] = c.user_extra
        out["status"] = {"authenticated": True, "user": user, "audiences": c.audiences}
        return _json(out, 201)

    async def access_review(self, request: web.Request, t: Target) -> web.Response:
        body = await self.server._body(request)
        if not isinstance(body, dict):
            raise E.bad_request("body must be a JSON object")
        body.setdefault("metadata", {})["creationTimestamp"] = None
        body["apiVersion"] = "authorization.k8s.io/v1"
        body["kind"] = t.rt.kind
        body["status"] = {"allowed": True, "reason": NO_RBAC}
        if t.rt.kind == "SelfSubjectRulesReview":
            body["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                              "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
        return _json(body, 201)

    async def selfsubjectreview(self, request: web.Request, t: Target) -> web.Response:
        user = self.server._user(request)
        return _json({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                      "metadata": {"creationTimestamp": None}, "status": {"userInfo": user.info()}}, 201)

    async def bindings(self, request: web.Request, t: Target) -> web.Response:
        body = await self.server._body(request)
        name = ((body or {}).get("metadata") or {}).get("name") or ""
        return await self._bind(t.namespace or "", name, body, request)

    async def pod_binding(self, request: web.Request, t: Target) -> web.Response:
        if request.method != "POST":
            raise E.method_not_allowed()
        body = await self.server._body(request)
        bname = ((body or {}).get("metadata") or {}).get("name")
        if bname and bname != t.name:
            raise E.bad_request(f"the name of the object ({bname}) does not match the name on the URL ({t.name})")
        return await self._bind(t.namespace or "", t.name or "", body, request)

    async def _bind(self, namespace: str, name: str, body: Any, request: web.Request) -> web.Response:
        if not isinstance(body, dict):
            raise E.bad_request("Binding must be a JSON object")
        target = body.get("target") or {}
        node = target.get("name")
        if not node:
            raise E.invalid("Binding", "", name, [E.required("target.name")])
        pod = self.store.get("/pods", namespace, name)
        if pod is None:
            raise E.not_found("pods", "", name)
        if pod["metadata"].get("deletionTimestamp"):
            raise E.conflict("pods/binding", "", name, f"pod {name} is being deleted, cannot be assigned to a host")
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise E.conflict("pods/binding", "", name, f'pod {name} is already assigned to node "{current}"')
        uid = (body.get("metadata") or {}).get("uid")
        if uid and uid != pod["metadata"].get("uid"):
            raise E.conflict("pods/binding", "", name, "Precondition failed: UID in precondition: " + uid)
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        ann = (body.get("metadata") or {}).get("annotations")
        if ann:
            new["metadata"].setdefault("annotations", {}).update(ann)
        conds = new.setdefault("status", {}).setdefault("conditions", [])
        conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": M.now()})
        if not Params.from_query(request.query).dry_run:
            self.store.update("/pods", new)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

    async def eviction(self, request: web.Request, t: Target) -> web.Response:
        if request.method != "POST":
            raise E.method_not_allowed()
        body = await self.server._body(request)
        opts = ((body or {}).get("deleteOptions") or {}) if isinstance(body, dict) else {}
        rt = self.server.registry.find("", "v1", "pods")
        await self.api.delete(rt, t.namespace, t.name, opts, Params.from_query(request.query), self.server._user(request))
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

    async def token_request(self, request: web.Request, t: Target) -> web.Response:
        if request.method != "POST":
            raise E.method_not_allowed()
        body = await self.server._body(request)
        if not isinstance(body, dict):
            raise E.bad_request("TokenRequest must be a JSON object")
        sa = self.store.get("/serviceaccounts", t.namespace, t.name)
        if sa is None:
            raise E.not_found("serviceaccounts", "", t.name or "")
        spec = dict(body.get("spec") or {})
        spec["audiences"] = spec.get("audiences") or list(T.API_AUDIENCES)
        exp = spec.get("expirationSeconds")
        exp = T.DEFAULT_EXPIRATION if exp is None else exp
        if not isinstance(exp, int) or exp < T.MIN_EXPIRATION:
            raise E.invalid("TokenRequest", "authentication.k8s.io", t.name or "",
                            [E.invalid_value("spec.expirationSeconds", exp, "may not specify a duration less than 10 minutes")])
        if exp > 2**32:
            raise E.invalid("TokenRequest", "authentication.k8s.io", t.name or "",
                            [E.invalid_value("spec.expirationSeconds", exp, "may not specify a duration larger than 2^32 seconds")])
        spec["expirationSeconds"] = exp
        pod = None
        ref = spec.get("boundObjectRef")
        if ref:
            kind = ref.get("kind")
            if kind != "Pod":
                if kind not in ("Secret", "Node"):
                    raise E.invalid("TokenRequest", "authentication.k8s.io", t.name or "",
                                    [E.not_supported("spec.boundObjectRef.kind", kind, ["Pod", "Secret", "Node"])])
            else:
                pod = self.store.get("/pods", t.namespace, ref.get("name", ""))
                if pod is None:
                    raise E.not_found("pods", "", ref.get("name", ""))
                if ref.get("uid") and ref["uid"] != pod["metadata"].get("uid"):
                    raise E.conflict("pods", "", ref.get("name", ""),
                                     f"the UID in the bound object reference ({ref['uid']}) does not match the UID in record. The object might have been deleted and then recreated")
                pod_sa = (pod.get("spec") or {}).get("serviceAccountName")
                if pod_sa and pod_sa != t.name:
                    raise E.bad_request(f"cannot bind token for serviceaccount \"{t.name}\" to pod running with different serviceaccount name.")
                ref["uid"] = pod["metadata"].get("uid")
        try:
            token, expires = self.issuer.issue(sa, spec["audiences"], exp, pod)
        except T.TokenError as e:
            raise E.internal(str(e)) from None
        from datetime import datetime

        out = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": t.name, "namespace": t.namespace, "creationTimestamp": None},
            "spec": spec,
            "status": {"token": token,
                       "expirationTimestamp": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        }
        return _json(out, 201)

    # ---- ServiceAccount admission ----------------------------------------------------------
    async def serviceaccount_admission(self, a: Attributes) -> None:
        if a.operation != "CREATE" or a.rt.key != "/pods" or a.subresource or a.obj is None:
            return
        pod = a.obj
        if (pod["metadata"].get("annotations") or {}).get("kubernetes.io/config.mirror"):
            return
        spec = pod.setdefault("spec", {})
        sa_name = spec.get("serviceAccountName") or "default"
        sa = self.store.get("/serviceaccounts", a.namespace, sa_name)
        if sa is None:
            raise E.forbidden("pods", "", pod["metadata"].get("name", ""),
                              f'error looking up service account {a.namespace}/{sa_name}: serviceaccount "{sa_name}" not found')
        if not spec.get("imagePullSecrets") and sa.get("imagePullSecrets"):
            spec["imagePullSecrets"] = copy.deepcopy(sa["imagePullSecrets"])
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = sa.get("automountServiceAccountToken", True)
        if automount is False:
            return
        volumes = spec.setdefault("volumes", [])
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if all(any(m.get("mountPath") == SA_MOUNT for m in c.get("volumeMounts") or []) for c in containers):
            return
        existing = {v.get("name") for v in volumes}
        name = ""
        while not name or name in existing:
            name = M.generate_name("kube-api-access-")
        volumes.append({
            "name": name,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                                "path": "namespace"}]}},
                ],
            },
        })
        for c in containers:
            mounts = c.setdefault("volumeMounts", [])
            if not any(m.get("mountPath") == SA_MOUNT for m in mounts):
                mounts.append({"name": name, "readOnly": True, "mountPath": SA_MOUNT})


def install(server: ApiServer) -> list[Any]:
    core = Core(server)
    server.token_authenticator = core.authenticate  # type: ignore[attr-defined]
    virtual = {
        ("authentication.k8s.io", "tokenreviews"): core.tokenreview,
        ("authentication.k8s.io", "selfsubjectreviews"): core.selfsubjectreview,
        ("authorization.k8s.io", "selfsubjectaccessreviews"): core.access_review,
        ("authorization.k8s.io", "subjectaccessreviews"): core.access_review,
        ("authorization.k8s.io", "localsubjectaccessreviews"): core.access_review,
        ("authorization.k8s.io", "selfsubjectrulesreviews"): core.access_review,
        ("", "bindings"): core.bindings,
    }
    subresources: dict[tuple[str, str, str], Any] = {
        ("", "pods", "binding"): core.pod_binding,
        ("", "pods", "eviction"): core.eviction,
        ("", "serviceaccounts", "token"): core.token_request,
    }
    server.virtual_handlers = virtual  # type: ignore[attr-defined]
    server.subresource_handlers = subresources  # type: ignore[attr-defined]
    assert server.api is not None
    server.api.mutating.append(core.serviceaccount_admission)
    exts: list[Any] = [core]
    for modname in ("crds", "webhooks", "podio"):
        try:
            mod = __import__(f"minimesh.cluster.local.apiserver.{modname}", fromlist=["install"])
        except ModuleNotFoundError as e:
            if e.name == f"minimesh.cluster.local.apiserver.{modname}":
                continue
            raise
        ext = mod.install(server)
        if ext is not None:
            exts.append(ext)
    return exts
