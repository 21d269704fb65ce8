"""`minimesh install`: the control plane into mesh-system, through the official client, on any provider.

Order (each step idempotent, so re-running upgrades in place):
1. namespace, CRDs, ServiceAccount and RBAC (server-side apply);
2. the mesh root CA: Secret mesh-system/minimesh-ca, made once and then always reused;
3. minimeshd's serving certificate (Secret minimeshd-webhook-tls), re-issued only when it is missing,
   from another CA, lacks a name, or nears expiry (the injector reloads it without a restart);
4. the Service and Deployment minimeshd; wait until it is rolled out and the Service has a ready endpoint;
5. the webhook configurations last (the sidecar injector, and config validation for AuthorizationPolicies), with
   caBundle = the root CA: with failurePolicy Fail, pods in enabled namespaces (and policies) would otherwise be
   refused while minimeshd is not there yet.

`uninstall` goes the other way, webhook configurations first, so nothing depends on a webhook that is being
removed.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minimesh.install import pki, plan, rollout
from minimesh.k8s.manifests import Applier

Report = Callable[[str], None]


class InstallError(RuntimeError):
    """Installing or removing failed; the message says where and what to do."""


@dataclass
class Result:
    lines: list[str] = field(default_factory=list)
    ca_created: bool = False
    cert_issued: str | None = None  # why a serving certificate was issued, None when the old one was kept


def _api_error(e: Exception) -> str:
    import json

    body = getattr(e, "body", None)
    try:
        return str(json.loads(body).get("message", body)) if body else str(e)
    except (ValueError, TypeError, AttributeError):
        return str(body or e)


# ---- secrets --------------------------------------------------------------------------------------
def _secret_data(secret: Any) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _secret_body(name: str, data: dict[str, bytes], typ: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": typ,
            "metadata": {"name": name, "namespace": plan.NAMESPACE, "labels": {"app": "minimeshd"}},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def ensure_ca(core: Any, now: dt.datetime) -> tuple[pki.KeyPair, bool]:
    """The root CA from Secret minimesh-ca, made if absent; (pair, created)."""
    from kubernetes.client.exceptions import ApiException

    try:
        data = _secret_data(core.read_namespaced_secret(plan.CA_SECRET, plan.NAMESPACE))
    except ApiException as e:
        if e.status != 404:
            raise
        pair = pki.new_root_ca(now)
        try:
            core.create_namespaced_secret(plan.NAMESPACE, _secret_body(
                plan.CA_SECRET, {"ca.crt": pair.cert_pem, "ca.key": pair.key_pem}, "Opaque"))
            return pair, True
        except ApiException as e2:
            if e2.status != 409:  # another install made it a moment ago: use theirs
                raise
            data = _secret_data(core.read_namespaced_secret(plan.CA_SECRET, plan.NAMESPACE))
    if "ca.crt" not in data or "ca.key" not in data:
        raise InstallError(f"Secret {plan.NAMESPACE}/{plan.CA_SECRET} lacks ca.crt or ca.key; delete it to make a"
                           " new mesh CA (every certificate it signed becomes invalid)")
    pair = pki.KeyPair(data["ca.crt"], data["ca.key"])
    try:
        pki.load_ca(pair)
    except pki.PkiError as e:
        raise InstallError(f"Secret {plan.NAMESPACE}/{plan.CA_SECRET}: {e}; delete it to make a new mesh CA") from None
    return pair, False


def ensure_serving_cert(core: Any, ca: pki.KeyPair, now: dt.datetime) -> str | None:
    """Keep or (re-)issue Secret minimeshd-webhook-tls; returns why it was issued, or None when kept."""
    from kubernetes.client.exceptions import ApiException

    try:
        existing = core.read_namespaced_secret(plan.WEBHOOK_TLS_SECRET, plan.NAMESPACE)
    except ApiException as e:
        if e.status != 404:
            raise
        existing = None
    if existing is not None:
        data = _secret_data(existing)
        if "tls.crt" in data and "tls.key" in data:
            problem = pki.serving_cert_problem(pki.KeyPair(data["tls.crt"], data["tls.key"]), ca.cert_pem,
                                               plan.SERVICE_DNS_NAMES, now)
        else:
            problem = "lacks tls.crt or tls.key"
        if problem is None:
            return None
    else:
        problem = "missing"
    pair = pki.new_serving_cert(ca, plan.SERVICE_DNS_NAMES, now)
    body = _secret_body(plan.WEBHOOK_TLS_SECRET, {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": ca.cert_pem},
                        "kubernetes.io/tls")
    if existing is None:
        core.create_namespaced_secret(plan.NAMESPACE, body)
    else:
        core.replace_namespaced_secret(plan.WEBHOOK_TLS_SECRET, plan.NAMESPACE, body)
    return problem


# ---- waiting --------------------------------------------------------------------------------------
def endpoint_ready(core: Any) -> bool:
    """Service minimeshd has a ready address serving the webhook port (what the API server dials)."""
    from kubernetes.client.exceptions import ApiException

    try:
        eps = core.read_namespaced_endpoints(plan.SERVICE, plan.NAMESPACE)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    for subset in eps.subsets or []:
        if subset.addresses and any(p.name == plan.WEBHOOK_PORT_NAME for p in subset.ports or []):
            return True
    return False


def wait_ready(api_client: Any, timeout: float, report: Report) -> str:
    from kubernetes import client

    start = time.monotonic()
    try:
        done = rollout.wait(api_client, plan.NAMESPACE, plan.DEPLOYMENT, timeout=timeout, report=report)
    except rollout.RolloutError as e:
        raise InstallError(f"minimeshd did not become ready: {e}. Look at: minimesh kubectl -n {plan.NAMESPACE}"
                           f" describe pod -l app=minimeshd; minimesh logs -n {plan.NAMESPACE} deploy/minimeshd -c injector") from None
    core = client.CoreV1Api(api_client)
    report("waiting for the minimeshd Service endpoint")
    while not endpoint_ready(core):
        if time.monotonic() - start > timeout:
            raise InstallError(f"Service {plan.NAMESPACE}/{plan.SERVICE} has no ready endpoint after {timeout:.0f}s")
        time.sleep(0.5)
    return done


# ---- install / uninstall --------------------------------------------------------------------------
STEPS = 6  # for progress bars: apply base, CA, certificate, workload, wait, webhook


def install(api_client: Any, options: plan.Options | None = None, *, timeout: float = 300,
            report: Report = lambda _m: None, step: Callable[[], None] = lambda: None) -> Result:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    options = options or plan.Options()
    core = client.CoreV1Api(api_client)
    applier = Applier(api_client)
    result = Result()
    now = dt.datetime.now(dt.UTC)
    try:
        report("applying the namespace, CRDs and RBAC")
        base = [o for o in plan.control_plane(options, b"") if o["kind"] not in
                ("Service", "Deployment", *plan.WEBHOOK_KINDS)]
        result.lines += [str(applier.apply(o)) for o in [*base[:1], *plan.crds(), *base[1:]]]
        step()
        report("mesh root CA")
        ca, result.ca_created = ensure_ca(core, now)
        result.lines.append(f"secret/{plan.CA_SECRET} {'created' if result.ca_created else 'unchanged (reused)'}")
        step()
        report("minimeshd serving certificate")
        result.cert_issued = ensure_serving_cert(core, ca, now)
        result.lines.append(f"secret/{plan.WEBHOOK_TLS_SECRET} "
                            + (f"issued ({result.cert_issued})" if result.cert_issued else "unchanged"))
        step()
        _, workload, webhook = plan.split(plan.control_plane(options, ca.cert_pem))
        report("applying minimeshd")
        result.lines += [str(applier.apply(o)) for o in workload]
        step()
        report("waiting for minimeshd")
        result.lines.append(wait_ready(api_client, timeout, report))
        step()
        report("registering the sidecar injector and config validation")
        result.lines += [str(applier.apply(o)) for o in webhook]
        step()
    except ApiException as e:
        raise InstallError(f"the API server refused: {e.status} {e.reason}: {_api_error(e)}") from None
    return result


def uninstall(api_client: Any, *, keep_crds: bool = False, timeout: float = 120,
              report: Report = lambda _m: None) -> list[str]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    applier = Applier(api_client)
    objects = plan.control_plane(plan.Options(), b"")
    first, workload, webhook = plan.split(objects)
    order = [*webhook, *workload, *reversed(first[1:])]  # the namespace goes last, after the cluster-scoped RBAC
    if not keep_crds:
        order += list(reversed(plan.crds()))
    lines = []
    try:
        for obj in order:
            report(f"deleting {obj['kind']} {obj['metadata']['name']}")
            lines.append(applier.delete(obj))
        core = client.CoreV1Api(api_client)
        for secret in (plan.WEBHOOK_TLS_SECRET, plan.CA_SECRET):
            try:
                core.delete_namespaced_secret(secret, plan.NAMESPACE)
                lines.append(f"secret/{secret} deleted")
            except ApiException as e:
                if e.status != 404:
                    raise
                lines.append(f"secret/{secret} not found")
        lines.append(applier.delete(first[0]))
        report(f"waiting for namespace {plan.NAMESPACE} to go")
        deadline = time.monotonic() + timeout
        while True:
            try:
                core.read_namespace(plan.NAMESPACE)
            except ApiException as e:
                if e.status == 404:
                    break
                raise
            if time.monotonic() > deadline:
                raise InstallError(f"namespace {plan.NAMESPACE} is still terminating after {timeout:.0f}s")
            time.sleep(0.5)
    except ApiException as e:
        raise InstallError(f"the API server refused: {e.status} {e.reason}: {_api_error(e)}") from None
    return lines
