"""Admission webhooks: MutatingWebhookConfiguration then ValidatingWebhookConfiguration, called over
HTTPS with AdmissionReview v1 like the real API server.

`clientConfig.service` is resolved to a ready endpoint of the Service and dialled from inside the node's
network namespace (pod IPs are only routable there); `clientConfig.url` is dialled from here. Not
implemented: reinvocationPolicy IfNeeded (webhooks run once, in configuration-name order), matchPolicy
Equivalent conversions (rules match the request's own group/version), matchConditions (CEL).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import ssl
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import h11

from minimesh.cluster.local import netns_socket
from minimesh.cluster.local.apiserver import errors as E
from minimesh.cluster.local.apiserver import patch as P
from minimesh.k8s import selectors

if TYPE_CHECKING:
    from minimesh.cluster.local.apiserver.rest import Attributes
    from minimesh.cluster.local.apiserver.server import ApiServer

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MUTATING_KEY = "admissionregistration.k8s.io/mutatingwebhookconfigurations"
VALIDATING_KEY = "admissionregistration.k8s.io/validatingwebhookconfigurations"
SKIPPED_KEYS = {MUTATING_KEY, VALIDATING_KEY}


class CallError(Exception):
    """Calling the webhook failed (subject to failurePolicy)."""


@dataclass
class Endpoint:
    netns: str | None
    host: str
    port: int
    path: str
    server_name: str
    url_text: str  # for error messages, as the real server prints it


# ---- matching (pure) ---------------------------------------------------------------------------
def _match_list(values: list[str] | None, want: str) -> bool:
    return any(v == "*" or v == want for v in values or [])


def rule_matches(rule: Obj, operation: str, group: str, version: str, resource: str, sub: str, namespaced: bool) -> bool:
    if not _match_list(rule.get("operations"), operation):
        return False
    if not _match_list(rule.get("apiGroups"), group) or not _match_list(rule.get("apiVersions"), version):
        return False
    full = f"{resource}/{sub}" if sub else resource
    ok = False
    for r in rule.get("resources") or []:
        if r == "*/*" or r == full or (r == "*" and not sub):
            ok = True
        elif "/" in r:
            rr, rs = r.split("/", 1)
            if (rr == "*" and rs == sub) or (rr == resource and rs == "*" and sub):
                ok = True
    if not ok:
        return False
    scope = rule.get("scope") or "*"
    return scope == "*" or (scope == "Namespaced") == namespaced


def webhook_matches(hook: Obj, a: Attributes, namespace_labels: dict[str, str] | None) -> bool:
    rt = a.rt
    if not any(rule_matches(r, a.operation, rt.group, rt.version, rt.plural, a.subresource, rt.namespaced)
               for r in hook.get("rules") or []):
        return False
    ns_sel = hook.get("namespaceSelector")
    if ns_sel and (ns_sel.get("matchLabels") or ns_sel.get("matchExpressions")):
        if rt.namespaced:
            if not selectors.matches_spec(ns_sel, namespace_labels or {}):
                return False
        elif rt.key == "/namespaces":
            obj = a.obj or a.old or {}
            if not selectors.matches_spec(ns_sel, (obj.get("metadata") or {}).get("labels") or {}):
                return False
    obj_sel = hook.get("objectSelector")
    if obj_sel and (obj_sel.get("matchLabels") or obj_sel.get("matchExpressions")):
        new_l = ((a.obj or {}).get("metadata") or {}).get("labels") or {}
        old_l = ((a.old or {}).get("metadata") or {}).get("labels") or {}
        if not (selectors.matches_spec(obj_sel, new_l) or (a.old is not None and selectors.matches_spec(obj_sel, old_l))):
            return False
    return True


def review_request(a: Attributes, uid: str) -> Obj:
    rt = a.rt
    kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    resource = {"group": rt.group, "version": rt.version, "resource": rt.plural}
    opts_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}.get(a.operation)
    req: Obj = {
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": a.name,
        "operation": a.operation,
        "userInfo": a.user.info(),
        "object": a.obj,
        "oldObject": a.old,
        "dryRun": a.dry_run,
        "options": {"kind": opts_kind, "apiVersion": "meta.k8s.io/v1", **(a.options or {})} if opts_kind else None,
    }
    if rt.namespaced:
        req["namespace"] = a.namespace
    if a.subresource:
        req["subResource"] = a.subresource
        req["requestSubResource"] = a.subresource
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": req}


# ---- HTTP over TLS -----------------------------------------------------------------------------
async def post_json(ep: Endpoint, body: bytes, ca_bundle: bytes | None, timeout: float) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cadata=ca_bundle.decode() if ca_bundle else None)
    if not ca_bundle:
        ctx.load_default_certs()
    conn = h11.Connection(h11.CLIENT)
    try:
        reader, writer = await netns_socket.open_connection(ep.netns, ep.host, ep.port, timeout=timeout, ssl=ctx,
                                                            server_hostname=ep.server_name)
    except ConnectionRefusedError:
        raise CallError(f"dial tcp {ep.host}:{ep.port}: connect: connection refused") from None
    except TimeoutError:
        raise CallError(f"dial tcp {ep.host}:{ep.port}: i/o timeout") from None
    except (OSError, ssl.SSLError) as e:
        raise CallError(f"tls: failed to verify certificate: {e}" if isinstance(e, ssl.SSLCertVerificationError)
                        else str(e) or type(e).__name__) from None
    try:
        headers = [("Host", ep.server_name), ("Content-Type", "application/json"), ("Accept", "application/json"),
                   ("Content-Length", str(len(body))), ("Connection", "close"), ("User-Agent", "kube-apiserver-admission")]
        writer.write(conn.send(h11.Request(method="POST", target=ep.path, headers=headers)))
        writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        status = 0
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), timeout)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        return status, b"".join(chunks)
    except TimeoutError:
        raise CallError("context deadline exceeded") from None
    except (OSError, h11.ProtocolError, ssl.SSLError) as e:
        raise CallError(str(e) or type(e).__name__) from None
    finally:
        writer.close()


class Webhooks:
    def __init__(self, server: ApiServer):
        self.server = server

    @property
    def store(self) -> Any:
        return self.server.store

    def _configs(self, key: str) -> list[Obj]:
        return sorted(self.store.list(key), key=lambda c: c["metadata"]["name"])

    def _namespace_labels(self, ns: str) -> dict[str, str] | None:
        obj = self.store.get("/namespaces", None, ns) if ns else None
        return ((obj or {}).get("metadata") or {}).get("labels") or {}

    def endpoint(self, hook: Obj, timeout: float) -> Endpoint:
        cc = hook.get("clientConfig") or {}
        if cc.get("url"):
            u = urlsplit(cc["url"])
            host = u.hostname or ""
            path = (u.path or "/") + (f"?{u.query}&timeout={int(timeout)}s" if u.query else f"?timeout={int(timeout)}s")
            sep = "&" if "?" in cc["url"] else "?"
            return Endpoint(None, host, u.port or 443, path, host, f"{cc['url']}{sep}timeout={int(timeout)}s")
        svc_ref = cc.get("service") or {}
        ns, name, port = svc_ref.get("namespace", ""), svc_ref.get("name", ""), int(svc_ref.get("port") or 443)
        path = svc_ref.get("path") or "/"
        url_text = f"https://{name}.{ns}.svc:{port}{path}?timeout={int(timeout)}s"
        svc = self.store.get("/services", ns, name)
        if svc is None:
            raise CallError(f'failed to call webhook: Post "{url_text}": service "{name}" not found')
        target_port: Any = port
        port_name = ""
        for p in (svc.get("spec") or {}).get("ports") or []:
            if p.get("port") == port:
                target_port = p.get("targetPort", port)
                port_name = p.get("name") or ""
                break
        else:
            raise CallError(f'failed to call webhook: Post "{url_text}": service {ns}/{name}:{port} is not listening on port {port}')
        eps = self.store.get("/endpoints", ns, name)
        for subset in (eps or {}).get("subsets") or []:
            addrs = subset.get("addresses") or []
            if not addrs:
                continue
            num = target_port
            if not isinstance(target_port, int):
                num = next((p.get("port") for p in subset.get("ports") or [] if p.get("name") == port_name), None)
            elif len(subset.get("ports") or []) > 0 and port_name:
                num = next((p.get("port") for p in subset.get("ports") or [] if p.get("name") == port_name), target_port)
            if num:
                return Endpoint(self.server.node_netns, addrs[0]["ip"], int(num), path + f"?timeout={int(timeout)}s",
                                f"{name}.{ns}.svc", url_text)
        raise CallError(f'failed to call webhook: Post "{url_text}": no endpoints available for service "{name}"')

    async def call(self, hook: Obj, a: Attributes) -> Obj:
        timeout = float(hook.get("timeoutSeconds") or 10)
        uid = str(uuid.uuid4())
        ep = self.endpoint(hook, timeout)
        ca = (hook.get("clientConfig") or {}).get("caBundle")
        ca_pem = base64.b64decode(ca) if ca else None
        body = json.dumps(review_request(a, uid)).encode()
        try:
            status, data = await asyncio.wait_for(post_json(ep, body, ca_pem, timeout), timeout + 1)
        except TimeoutError:
            raise CallError(f'failed to call webhook: Post "{ep.url_text}": context deadline exceeded') from None
        except CallError as e:
            raise CallError(f'failed to call webhook: Post "{ep.url_text}": {e}') from None
        if status < 200 or status >= 300:
            raise CallError(f"received invalid webhook response: expected 200 status, got {status}"
                            if status else "received invalid webhook response")
        try:
            review = json.loads(data)
        except json.JSONDecodeError as e:
            raise CallError(f"received invalid webhook response: {e}") from None
        resp = (review or {}).get("response") if isinstance(review, dict) else None
        if not isinstance(resp, dict):
            raise CallError("received invalid webhook response: response is missing")
        if resp.get("uid") != uid:
            raise CallError(f'expected response.uid="{uid}", got "{resp.get("uid")}"')
        return resp

    async def _run(self, a: Attributes, key: str, mutating: bool) -> None:
        if a.rt.key in SKIPPED_KEYS:
            return
        ns_labels = self._namespace_labels(a.namespace) if a.rt.namespaced else None
        for cfg in self._configs(key):
            for hook in cfg.get("webhooks") or []:
                if not webhook_matches(hook, a, ns_labels):
                    continue
                name = hook.get("name", "")
                if a.dry_run and hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
                    raise E.bad_request(f'admission webhook "{name}" does not support dry run')
                try:
                    resp = await self.call(hook, a)
                except CallError as e:
                    if hook.get("failurePolicy", "Fail") == "Ignore":
                        log.warning("failed calling webhook %r (ignored): %s", name, e)
                        continue
                    raise E.internal(f'failed calling webhook "{name}": {e}') from None
                if not resp.get("allowed"):
                    raise denied(name, resp.get("status"))
                if mutating and resp.get("patch"):
                    if resp.get("patchType") != "JSONPatch":
                        raise E.internal(f'failed calling webhook "{name}": unsupported patch type "{resp.get("patchType")}"')
                    try:
                        ops = json.loads(base64.b64decode(resp["patch"]))
                        patched = P.json_patch(a.obj, ops)
                    except (ValueError, P.PatchError, P.PatchFormatError) as e:
                        raise E.internal(str(e)) from None
                    if not isinstance(patched, dict):
                        raise E.internal(f'webhook "{name}" patched the object into a non-object')
                    a.obj = patched

    async def mutate(self, a: Attributes) -> None:
        if a.obj is None:
            return
        await self._run(a, MUTATING_KEY, True)

    async def validate(self, a: Attributes) -> None:
        await self._run(a, VALIDATING_KEY, False)


def denied(name: str, status: Obj | None) -> E.ApiError:
    status = copy.deepcopy(status or {})
    code = int(status.get("code") or 0)
    if code < 400:
        code = 400
    deny = f'admission webhook "{name}" denied the request'
    if status.get("message"):
        msg = f"{deny}: {status['message']}"
    elif status.get("reason"):
        msg = f"{deny}: {status['reason']}"
    else:
        msg = f"{deny} without explanation"
    return E.ApiError(code, status.get("reason") or "", msg, status.get("details"))


def install(server: ApiServer) -> Webhooks:
    w = Webhooks(server)
    api = server.api
    assert api is not None
    api.mutating.append(w.mutate)
    api.validating.append(w.validate)
    return w

