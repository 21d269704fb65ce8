"""Stage 5 grader: sidecar injection.

First your JSON Patch builder (minimesh/inject/patch.py) on known pods: each patch must apply (RFC 6902,
as the API server applies it), give exactly the injected pod, and never overwrite what the pod had. Then
the webhook in the cluster, through the Kubernetes API only: the control plane `minimesh install`
deployed, a new pod in the labelled namespace comes back injected (its init container installs the
capture, its proxy gets ready), an already-injected pod is not injected twice, the opted-out CronJob's Job
completes without a proxy, a malformed AdmissionReview gets a clear error, and bookinfo-lite, re-created
with sidecars, still answers /productpage from sleep through the proxies.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest

from minimesh.inject import names
from minimesh.inject.model import Injection, ProbeRewrite
from minimesh.inject.patch import append_ops, build_patch, escape, set_ops
from minimesh.lab.grading import GradeFailure, check, eventually, expect, fail, is_ready, missing, parse_curl

EXERCISE = "minimesh/inject/patch.py"
NS = "default"
MESH_NS = "mesh-system"
HOOK_CONFIG = "minimesh-sidecar-injector"
INSTALL = "minimesh install"
LABEL = f"minimesh kubectl label namespace {NS} {names.NAMESPACE_LABEL}={names.NAMESPACE_ENABLED} --overwrite"
RESTART_MINIMESHD = f"minimesh rollout restart deploy/minimeshd -n {MESH_NS}"
BOOKINFO = ("details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1", "sleep")
RESTART_BOOKINFO = "minimesh rollout restart " + " ".join(f"deploy/{d}" for d in BOOKINFO)
CHECK_LABEL = "lab05-check"


# ---- your patch builder, on known input ------------------------------------------------------------

ESCAPES = {
    "a slash": ("sidecar.minimesh.io/status", "sidecar.minimesh.io~1status"),
    "a tilde": ("a~b", "a~0b"),
    "tilde first, then slash": ("~1/", "~01~1"),
    "nothing to escape": ("app", "app"),
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_escape(case: str) -> None:
    """escape() writes one JSON Pointer token (RFC 6901)"""
    token, want = ESCAPES[case]
    expect(escape(token), want, f"'~' becomes '~0' first, then '/' becomes '~1' ({EXERCISE}: escape)",
           what=f"escape({token!r})")


V0, V1, V2 = {"name": "data"}, {"name": "minimesh-envoy"}, {"name": "minimesh-data"}

APPENDS: dict[str, tuple[Any, list[Any], list[dict[str, Any]], str]] = {
    "the array is absent": (None, [V1, V2], [{"op": "add", "path": "/spec/volumes", "value": [V1, V2]}],
                            "an absent array is added whole: one add at the path, the value a list"),
    "the array exists": ([V0], [V1, V2], [{"op": "add", "path": "/spec/volumes/-", "value": V1},
                                          {"op": "add", "path": "/spec/volumes/-", "value": V2}],
                         "one add per item at path + '/-' (the end of the array), in order"),
    "the array exists but is empty": ([], [V1], [{"op": "add", "path": "/spec/volumes/-", "value": V1}],
                                      "an empty list is still there (only None means absent)"),
    "nothing to append": (None, [], [], "no items, no operations"),
}


@pytest.mark.parametrize("case", list(APPENDS))
def test_append_ops(case: str) -> None:
    """append_ops() appends to an array, or adds the array"""
    current, items, want, hint = APPENDS[case]
    got = append_ops("/spec/volumes", copy.deepcopy(current), copy.deepcopy(items))
    expect(got, want, f"{hint} ({EXERCISE}: append_ops)",
           what=f"append_ops('/spec/volumes', {json.dumps(current)}, {json.dumps(items)})")


STATUS = names.STATUS_ANNOTATION
SETS: dict[str, tuple[Any, dict[str, str], list[dict[str, Any]], str]] = {
    "the object is absent": (None, {STATUS: "{}", "team": "books"},
                             [{"op": "add", "path": "/metadata/annotations", "value": {STATUS: "{}", "team": "books"}}],
                             "an absent object is added whole: one add at the path, the value a dict"),
    "the object exists": ({"team": "books"}, {STATUS: "{}", "team": "mesh"},
                          [{"op": "add", "path": "/metadata/annotations/sidecar.minimesh.io~1status", "value": "{}"},
                           {"op": "add", "path": "/metadata/annotations/team", "value": "mesh"}],
                          "one add per entry at path + '/' + escape(key); add replaces a member already there"),
    "nothing to set": ({"team": "books"}, {}, [], "no entries, no operations"),
}


@pytest.mark.parametrize("case", list(SETS))
def test_set_ops(case: str) -> None:
    """set_ops() sets object members, or adds the object"""
    current, entries, want, hint = SETS[case]
    got = set_ops("/metadata/annotations", copy.deepcopy(current), dict(entries))
    by_path = sorted(got, key=lambda op: str(op.get("path"))) if isinstance(got, list) else got
    expect(by_path, sorted(want, key=lambda op: op["path"]), f"{hint} ({EXERCISE}: set_ops)",
           what=f"set_ops('/metadata/annotations', {json.dumps(current)}, {json.dumps(entries)})")


INIT = {"name": names.INIT_CONTAINER, "image": "minimesh/minimesh:dev", "args": ["-p", "15001", "-z", "15006"]}
PROXY = {"name": names.PROXY_CONTAINER, "image": "minimesh/minimesh:dev", "args": ["proxy", "sidecar"],
         "securityContext": {"runAsUser": 1337}}
NATIVE_PROXY = {**PROXY, "restartPolicy": "Always"}
VOLUMES = ({"name": "minimesh-envoy", "emptyDir": {"medium": "Memory"}}, {"name": "minimesh-data", "emptyDir": {}})
ANNOTATIONS = {STATUS: '{"initContainers":["minimesh-init"],"containers":["minimesh-proxy"]}',
               "prometheus.io/port": "15020"}
LABELS = {"security.minimesh.io/tlsMode": "minimesh", "service.minimesh.io/canonical-name": "web"}
APP = {"name": "app", "image": "busybox", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}
HELPER = {"name": "helper", "image": "busybox", "livenessProbe": {"tcpSocket": {"port": 9000}}}
SETUP = {"name": "setup", "image": "busybox", "command": ["true"]}
APP_PROBE = {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}}
HELPER_PROBE = {"httpGet": {"path": "/app-health/helper/livez", "port": 15020}}


def _injection(native: bool = False, probes: tuple[ProbeRewrite, ...] = ()) -> Injection:
    return Injection(init_container=copy.deepcopy(INIT), proxy=copy.deepcopy(NATIVE_PROXY if native else PROXY),
                     native=native, volumes=copy.deepcopy(VOLUMES), probes=probes,
                     annotations=dict(ANNOTATIONS), labels=dict(LABELS))


def _pod(meta: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": spec}
    if meta is not None:
        pod["metadata"] = meta
    return pod


PATCHES: dict[str, tuple[dict[str, Any], Injection, dict[str, Any], str]] = {
    "a bare pod": (
        _pod({"name": "web", "labels": {"app": "web"}}, containers=[APP]),
        _injection(),
        _pod({"name": "web", "labels": {"app": "web", **LABELS}, "annotations": ANNOTATIONS},
             containers=[APP, PROXY], initContainers=[INIT], volumes=list(VOLUMES)),
        "the pod has no initContainers, volumes or annotations: each is added whole",
    ),
    "a pod with init containers, volumes and annotations": (
        _pod({"name": "web", "labels": {"app": "web", "security.minimesh.io/tlsMode": "disabled"},
              "annotations": {"team": "books"}},
             initContainers=[SETUP], containers=[APP], volumes=[{"name": "data", "emptyDir": {}}]),
        _injection(),
        _pod({"name": "web", "labels": {"app": "web", **LABELS}, "annotations": {"team": "books", **ANNOTATIONS}},
             initContainers=[SETUP, INIT], containers=[APP, PROXY], volumes=[{"name": "data", "emptyDir": {}}, *VOLUMES]),
        "append after what the pod has: minimesh-init runs LAST of the init containers; keep every annotation",
    ),
    "native sidecar, the pod has init containers": (
        _pod({"name": "job"}, initContainers=[SETUP], containers=[APP]),
        _injection(native=True),
        _pod({"name": "job", "labels": LABELS, "annotations": ANNOTATIONS},
             initContainers=[INIT, NATIVE_PROXY, SETUP], containers=[APP], volumes=list(VOLUMES)),
        "native: minimesh-init at /spec/initContainers/0, the proxy at /1, before the pod's own; none in containers",
    ),
    "native sidecar, no init containers": (
        _pod({"name": "job"}, containers=[APP]),
        _injection(native=True),
        _pod({"name": "job", "labels": LABELS, "annotations": ANNOTATIONS},
             initContainers=[INIT, NATIVE_PROXY], containers=[APP], volumes=list(VOLUMES)),
        "native without initContainers: add the list [minimesh-init, proxy] whole",
    ),
    "a pod without metadata": (
        _pod(None, containers=[APP]),
        _injection(),
        _pod({"labels": LABELS, "annotations": ANNOTATIONS}, containers=[APP, PROXY], initContainers=[INIT],
             volumes=list(VOLUMES)),
        "no /metadata at all: add /metadata whole, holding the annotations and labels",
    ),
    "app probes rewritten": (
        _pod({"name": "web"}, containers=[APP, HELPER]),
        _injection(probes=(ProbeRewrite(0, "readinessProbe", APP_PROBE), ProbeRewrite(1, "livenessProbe", HELPER_PROBE))),
        _pod({"name": "web", "labels": LABELS, "annotations": ANNOTATIONS},
             containers=[{**APP, "readinessProbe": APP_PROBE}, {**HELPER, "livenessProbe": HELPER_PROBE}, PROXY],
             initContainers=[INIT], volumes=list(VOLUMES)),
        "each ProbeRewrite is a replace at /spec/containers/<container>/<probe>",
    ),
}


def _difference(got: Any, want: Any, path: str = "") -> str | None:
    """Where two JSON values first differ, as 'at /json/pointer: want ..., got ...'."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in [*want, *(k for k in got if k not in want)]:
            if key not in got:
                return f"at {path}/{key}: missing (want {json.dumps(want[key])[:120]})"
            if key not in want:
                return f"at {path}/{key}: unexpected {json.dumps(got[key])[:120]}"
            found = _difference(got[key], want[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(got, list) and isinstance(want, list):
        for i, (g, w) in enumerate(zip(got, want, strict=False)):
            found = _difference(g, w, f"{path}/{i}")
            if found:
                return found
        if len(got) != len(want):
            names_of = [x.get("name", "?") if isinstance(x, dict) else x for x in got]
            return f"at {path or '/'}: want {len(want)} items, got {len(got)}: {json.dumps(names_of)[:150]}"
        return None
    if got != want:
        return f"at {path or '/'}: want {json.dumps(want)[:120]}, got {json.dumps(got)[:120]}"
    return None


def _resolve(doc: Any, pointer: str) -> tuple[bool, Any]:
    """(exists, parent) for a JSON Pointer in `doc`."""
    parent, node = None, doc
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        parent = node
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False, parent
    return True, parent


def _overwrite(doc: Any, op: dict[str, Any]) -> str | None:
    """What `op` would throw away from `doc`, if anything (a patch must only add to the pod)."""
    kind, path = op.get("op"), str(op.get("path", ""))
    if kind not in ("add", "replace"):
        return f"{kind} {path} (injection only adds)"
    exists, parent = _resolve(doc, path)
    if not exists or (kind == "add" and isinstance(parent, list)):  # new member, or an insertion
        return None
    parent_path = path.rsplit("/", 1)[0]
    if kind == "add" and parent_path in ("/metadata/annotations", "/metadata/labels"):
        return None  # setting one annotation or label
    if kind == "replace" and parent_path.startswith("/spec/containers/") and path.endswith("Probe"):
        return None  # a probe rewrite
    return f"{kind} {path} replaces what the pod already has there"


@pytest.mark.parametrize("case", list(PATCHES))
def test_build_patch(case: str) -> None:
    """build_patch() gives a JSON Patch that injects exactly the sidecar"""
    pod, injection, want, hint = PATCHES[case]
    before = copy.deepcopy(pod)
    ops = build_patch(pod, injection)
    check(pod == before, want="build_patch to leave the pod as it is (it returns operations)",
          got=_difference(pod, before) or "the pod changed", hint=f"build operations, do not edit the pod ({EXERCISE})")
    check(isinstance(ops, list) and all(isinstance(o, dict) and "op" in o and "path" in o for o in ops),
          want="a list of operations like {'op': 'add', 'path': '/spec/containers/-', 'value': {...}}",
          got=ops, hint=EXERCISE)
    doc = copy.deepcopy(pod)
    for i, op in enumerate(ops):
        lost = _overwrite(doc, op)
        if lost:
            fail("operations that only add to the pod", f"operation {i}: {lost}",
                 f"append (path/-), insert (path/0) or add a member that is absent ({EXERCISE}); {hint}")
        try:
            doc = jsonpatch.apply_patch(doc, [op])
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            fail("a patch the API server can apply", f"operation {i} {json.dumps(op)[:160]} fails: {e}",
                 f"{hint} ({EXERCISE})")
    diff = _difference(doc, want)
    if diff:
        raise GradeFailure("the pod with minimesh-init, the proxy, volumes, labels and annotations",
                           f"after your patch, {diff}", f"{hint} ({EXERCISE})")


# ---- the cluster ------------------------------------------------------------------------------------


def _api_status(e: Any) -> str:
    try:
        return str(json.loads(e.body).get("message", e.body))
    except (TypeError, ValueError, AttributeError):
        return str(getattr(e, "body", None) or e)


def _webhook(api_client: Any) -> Any:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        return client.AdmissionregistrationV1Api(api_client).read_mutating_webhook_configuration(HOOK_CONFIG)
    except ApiException as e:
        if e.status == 404:
            missing(f"MutatingWebhookConfiguration {HOOK_CONFIG}", INSTALL)
        raise


def test_control_plane_installed(api_client: Any, apps: Any, core: Any) -> None:
    """minimesh install: minimeshd ready, the webhook registered with caBundle, selectors, failurePolicy Fail"""
    from kubernetes.client.exceptions import ApiException

    try:
        apps.read_namespaced_deployment("minimeshd", MESH_NS)
    except ApiException as e:
        if e.status == 404:
            missing(f"deployment {MESH_NS}/minimeshd", INSTALL)
        raise

    def ready() -> None:
        dep = apps.read_namespaced_deployment("minimeshd", MESH_NS)
        check((dep.status.ready_replicas or 0) >= 1, want="minimeshd ready", got=f"{dep.status.ready_replicas or 0} ready",
              hint=f"minimesh kubectl -n {MESH_NS} describe pod -l app=minimeshd")

    eventually(ready, timeout=60)
    hook = _webhook(api_client).webhooks[0]
    svc = hook.client_config.service
    expect(f"{svc.namespace}/{svc.name}:{svc.port}{svc.path}" if svc else hook.client_config.url,
           f"{MESH_NS}/minimeshd:443/inject", INSTALL, what="the webhook's service")
    try:
        ca = base64.b64decode(core.read_namespaced_secret("minimesh-ca", MESH_NS).data["ca.crt"])
    except ApiException as e:
        if e.status == 404:
            missing(f"Secret {MESH_NS}/minimesh-ca (the mesh root CA)", INSTALL)
        raise
    bundle = base64.b64decode(hook.client_config.ca_bundle or "")
    check(bundle.strip() == ca.strip(), want="caBundle = the mesh root CA (ca.crt of Secret minimesh-ca)",
          got=f"{len(bundle)} bytes that differ", hint=f"{INSTALL} (it fills caBundle; the API server verifies minimeshd with it)")
    expect(hook.failure_policy, "Fail", INSTALL, what="failurePolicy")
    expect(dict(hook.namespace_selector.match_labels or {}), {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED},
           INSTALL, what="namespaceSelector.matchLabels")
    opt_out = [(e.key, e.operator, e.values) for e in (hook.object_selector.match_expressions or [])]
    expect(opt_out, [(names.INJECT_KEY, "NotIn", ["false"])], INSTALL, what="objectSelector (the opt-out)")


def test_namespace_enabled(core: Any) -> None:
    """namespace default is labelled minimesh-injection=enabled"""
    labels = core.read_namespace(NS).metadata.labels or {}
    expect(labels.get(names.NAMESPACE_LABEL), names.NAMESPACE_ENABLED, LABEL,
           what=f"label {names.NAMESPACE_LABEL} of namespace {NS}")


def _check_pod(name: str) -> dict[str, Any]:
    """A plain pod with an HTTP readiness probe (rewritten by injection), labelled for cleanup."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": CHECK_LABEL}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                "name": "echo", "image": "minimesh/minimesh:dev", "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-m", "minimesh.apps.echo", "--port", "8080"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2},
                "resources": {"requests": {"cpu": "10m", "memory": "24Mi"}},
                "volumeMounts": [{"name": "minimesh-source", "mountPath": "/opt/minimesh", "readOnly": True}]}],
                "volumes": [{"name": "minimesh-source", "hostPath": {"path": "/opt/minimesh", "type": "Directory"}}]}}


def _trainee_code_works() -> bool:
    try:
        build_patch(_pod({"name": "x"}, containers=[APP]), _injection())
        return True
    except NotImplementedError:
        return False


def _create(core: Any, body: dict[str, Any]) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.create_namespaced_pod(NS, body)
    except ApiException as e:
        message = _api_status(e)
        if "not implemented yet" in message and _trainee_code_works():
            fail("the pod created with its sidecar", f"refused by the webhook: {message}",
                 f"minimeshd still runs the code it started with: {RESTART_MINIMESHD}", final=True)
        fail("the pod created with its sidecar", f"refused ({e.status}): {message}",
             f"finish {EXERCISE}; then {RESTART_MINIMESHD}", final=True)


def _delete_pods(core: Any, *pods: str) -> None:
    from kubernetes.client.exceptions import ApiException

    for name in pods:
        try:
            core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
        except ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture(scope="module")
def injected_pod(api_client: Any, core: Any) -> Iterator[dict[str, Any]]:
    """A new pod created in namespace default: what the API server stored, after the webhook."""
    _webhook(api_client)
    name = f"{CHECK_LABEL}-{secrets.token_hex(3)}"
    try:
        yield api_client.sanitize_for_serialization(_create(core, _check_pod(name)))
    finally:
        _delete_pods(core, name)


def _proxy(pod: dict[str, Any]) -> dict[str, Any] | None:
    """minimesh-proxy: a regular container, or a native sidecar (initContainer, restartPolicy Always)."""
    spec = pod["spec"]
    for c in spec.get("containers") or []:
        if c["name"] == names.PROXY_CONTAINER:
            return c
    for c in spec.get("initContainers") or []:
        if c["name"] == names.PROXY_CONTAINER and c.get("restartPolicy") == "Always":
            return c
    return None


def _names(pod: dict[str, Any]) -> dict[str, list[str]]:
    spec = pod["spec"]
    return {k: [c["name"] for c in spec.get(k) or []] for k in ("initContainers", "containers")}


def _volumes(pod: dict[str, Any]) -> list[str]:
    """Volume names, without the one the API server adds for the service-account token."""
    return [v["name"] for v in pod["spec"].get("volumes") or [] if not v["name"].startswith("kube-api-access-")]


def _pod_state(pod: Any) -> str:
    st = pod.status
    parts = [st.phase or "?"]
    for cs in [*(st.init_container_statuses or []), *(st.container_statuses or [])]:
        s = cs.state
        now = ("running" if s.running else f"waiting: {s.waiting.reason}" if s.waiting
               else f"exited {s.terminated.exit_code}" if s.terminated else "?")
        parts.append(f"{cs.name} {now}{' ready' if cs.ready else ''}")
    return ", ".join(parts)


def test_new_pod_is_injected(injected_pod: dict[str, Any], core: Any) -> None:
    """a new pod in default comes back with minimesh-init and minimesh-proxy, which capture and get ready"""
    pod, name = injected_pod, injected_pod["metadata"]["name"]
    inits = {c["name"]: c for c in pod["spec"].get("initContainers") or []}
    proxy = _proxy(pod)
    check(names.INIT_CONTAINER in inits and proxy is not None,
          want=f"{names.INIT_CONTAINER} in initContainers and {names.PROXY_CONTAINER} added", got=_names(pod),
          hint=f"is namespace {NS} labelled? ({LABEL}); does your patch add them? ({EXERCISE})")
    assert proxy is not None
    caps = set(((inits[names.INIT_CONTAINER].get("securityContext") or {}).get("capabilities") or {}).get("add") or [])
    check({"NET_ADMIN", "NET_RAW"} <= caps, want=f"{names.INIT_CONTAINER} with capabilities NET_ADMIN, NET_RAW",
          got=sorted(caps), hint="the injector's template adds them; is the patch passing the container on whole?")
    expect((proxy.get("securityContext") or {}).get("runAsUser"), names.PROXY_UID, EXERCISE,
           what=f"runAsUser of {names.PROXY_CONTAINER}")
    annotations = pod["metadata"].get("annotations") or {}
    check(STATUS in annotations, want=f"annotation {STATUS}", got=sorted(annotations),
          hint=f"set_ops on /metadata/annotations ({EXERCISE})")
    status = json.loads(annotations[STATUS])
    volumes = {v["name"] for v in pod["spec"].get("volumes") or []}
    check(set(status.get("volumes") or []) <= volumes, want=f"every volume {STATUS} lists in spec.volumes",
          got=f"listed {status.get('volumes')}, present {sorted(volumes)}", hint=f"append_ops on /spec/volumes ({EXERCISE})")

    def running() -> None:
        live = core.read_namespaced_pod(name, NS)
        init = next((s for s in live.status.init_container_statuses or [] if s.name == names.INIT_CONTAINER), None)
        term = init.state.terminated if init else None
        if term is not None and term.exit_code != 0:
            fail(f"{names.INIT_CONTAINER} to install the capture", f"it exited {term.exit_code}",
                 f"minimesh logs {name} -c {names.INIT_CONTAINER}", final=True)
        check(is_ready(live), want=f"pod {name} Ready: the capture installed, the proxy configured", got=_pod_state(live),
              hint=f"minimesh logs {name} -c {names.PROXY_CONTAINER}")

    eventually(running, timeout=150, interval=1)
    logs = core.read_namespaced_pod_log(name, NS, container=names.INIT_CONTAINER)
    check("traffic capture installed" in logs, want=f"{names.INIT_CONTAINER}'s log to say 'traffic capture installed'",
          got=logs.strip().splitlines()[-1:] or "an empty log", hint=f"minimesh logs {name} -c {names.INIT_CONTAINER}")


def test_injected_pod_is_not_injected_twice(api_client: Any, core: Any) -> None:
    """a pod injected already (minimesh inject -f) is created as it is: no second proxy"""
    from minimesh.inject.offline import inject_object

    _webhook(api_client)
    name = f"{CHECK_LABEL}-pre-{secrets.token_hex(3)}"
    body = inject_object(_check_pod(name))
    check(_proxy(body) is not None, want="`minimesh inject` to add the proxy", got=_names(body), hint=EXERCISE)
    try:
        got = api_client.sanitize_for_serialization(_create(core, body))
        expect(_names(got), _names(body), "the webhook must skip a pod that has the status annotation"
               " or a minimesh-proxy container (policy.already_injected)", what="containers after admission")
        expect((got["metadata"].get("annotations") or {}).get(STATUS), body["metadata"]["annotations"][STATUS],
               "a second injection would rewrite it", what=f"annotation {STATUS}")
        expect(_volumes(got), _volumes(body), "the webhook must not add its volumes again", what="volumes")
    finally:
        _delete_pods(core, name)


def test_opted_out_cronjob_job_completes(batch: Any, core: Any, api_client: Any) -> None:
    """the opted-out CronJob's Job runs without a proxy and completes (the CronJob problem, fixed)"""
    from kubernetes.client.exceptions import ApiException

    try:
        cron = batch.read_namespaced_cron_job("report", NS)
    except ApiException as e:
        if e.status == 404:
            missing("CronJob report", "minimesh apply -f minimesh/manifests/lab05/report-cronjob.yaml")
        raise
    template = api_client.sanitize_for_serialization(cron.spec.job_template)
    labels = ((template["spec"]["template"].get("metadata") or {}).get("labels")) or {}
    expect(labels.get(names.INJECT_KEY), "false", "minimesh apply -f minimesh/manifests/lab05/report-cronjob.yaml",
           what=f"label {names.INJECT_KEY} of the report pods")
    name = f"report-grade-{secrets.token_hex(3)}"
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": template["spec"],
           "metadata": {"name": name, "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "report",
                                             "uid": cron.metadata.uid, "controller": True}]}}
    batch.create_namespaced_job(NS, job)  # what `kubectl create job --from=cronjob/report` does
    try:
        def complete() -> None:
            pods = core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items
            check(pods, want=f"a pod of Job {name}", got="none yet", hint=f"minimesh kubectl describe job {name}")
            spec = api_client.sanitize_for_serialization(pods[0])
            injected = [n for ns in _names(spec).values() for n in ns if n.startswith("minimesh-")]
            if injected or STATUS in (spec["metadata"].get("annotations") or {}):
                fail("the opted-out pod left alone", f"injected: {_names(spec)}",
                     f"the webhook's objectSelector skips {names.INJECT_KEY}=false; and policy.skip_reason", final=True)
            status = batch.read_namespaced_job(name, NS).status
            conds = {c.type: c.status for c in (status.conditions if status else None) or []}
            check(conds.get("Failed") != "True", want="the Job not failed", got=conds, hint=f"minimesh logs job/{name}")
            expect(conds.get("Complete"), "True", f"minimesh kubectl describe job {name}", what=f"condition Complete of Job {name}")

        eventually(complete, timeout=90, interval=1)
    finally:
        try:
            batch.delete_namespaced_job(name, NS, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise


BAD_POD_REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "lab05-grader-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
    "namespace": NS, "object": {"metadata": {"name": "broken"}, "spec": {"containers": "app"}}}}
HOST = f"minimeshd.{MESH_NS}.svc"


def _post_to_webhook(core: Any, body: str) -> Any:
    """POST `body` to /inject from inside minimeshd over HTTPS, verified with the mesh CA (exec, API only)."""
    from minimesh.lab.grading import exec_in, ready_pods

    pods = ready_pods(core, "app=minimeshd", MESH_NS)
    check(pods, want="a ready minimeshd pod", got="none", hint=INSTALL)
    argv = ["curl", "-sS", "-m", "10", "--cacert", "/etc/minimesh/webhook/ca.crt", "--resolve", f"{HOST}:15017:127.0.0.1",
            "-H", "Content-Type: application/json", "--data-binary", body, "-o", "-", "-w", "\n@@minimesh-status@@%{http_code}",
            f"https://{HOST}:15017/inject"]
    return parse_curl(exec_in(core, pods[0].metadata.name, argv, namespace=MESH_NS, container="injector"))


def test_malformed_review_gets_a_clear_error(core: Any) -> None:
    """a malformed AdmissionReview gets a clear error from the webhook (over HTTPS, trusted via the mesh CA)"""
    res = eventually(lambda: _post_to_webhook(core, "{not json"), timeout=30)
    check(res.status == 400 and "JSON" in res.body, want="HTTP 400 saying the body is not JSON", got=str(res),
          hint=f"minimesh logs -n {MESH_NS} deploy/minimeshd -c injector")
    res = _post_to_webhook(core, json.dumps(BAD_POD_REVIEW))
    expect(res.status, 200, "errors about the pod come back as an AdmissionReview", what="HTTP status")
    try:
        response = json.loads(res.body)["response"]
    except (ValueError, KeyError, TypeError):
        fail("an AdmissionReview with a response", res.body[:200], f"minimesh logs -n {MESH_NS} deploy/minimeshd -c injector")
    got = {k: response.get(k) for k in ("uid", "allowed")}
    expect(got, {"uid": "lab05-grader-1", "allowed": False}, "the uid is echoed; a pod that cannot be read is refused",
           what="response")
    message = (response.get("status") or {}).get("message", "")
    check("spec.containers" in message, want="status.message naming the bad field spec.containers", got=message,
          hint="review.handle refuses a malformed pod with the reason")


def _mesh_state(apps: Any, core: Any, api_client: Any) -> list[str]:
    """What keeps bookinfo-lite and sleep from being fully meshed; empty when they are."""
    from kubernetes.client.exceptions import ApiException

    problems = []
    for name in BOOKINFO:
        try:
            dep = apps.read_namespaced_deployment(name, NS)
        except ApiException as e:
            if e.status == 404:
                missing(f"deployment {name} (stage 0)", "minimesh lab setup 00")
            raise
        for c in dep.status.conditions or []:
            if c.type == "ReplicaFailure" and c.status == "True":
                problems.append(f"{name}: {c.message}")
        selector = ",".join(f"{k}={v}" for k, v in (dep.spec.selector.match_labels or {}).items())
        pods = [p for p in core.list_namespaced_pod(NS, label_selector=selector).items if not p.metadata.deletion_timestamp]
        plain = [p.metadata.name for p in pods if _proxy(api_client.sanitize_for_serialization(p)) is None]
        waiting = [p.metadata.name for p in pods if not is_ready(p)]
        if plain:
            problems.append(f"{name}: {len(plain)} pod(s) without {names.PROXY_CONTAINER}")
        elif waiting:
            problems.append(f"{name}: not ready: {', '.join(_pod_state(p) for p in pods if not is_ready(p))}")
        elif len(pods) != (dep.spec.replicas or 0) or (dep.status.updated_replicas or 0) < (dep.spec.replicas or 0):
            problems.append(f"{name}: rolling out ({len(pods)} pods for {dep.spec.replicas} replicas)")
    return problems


def _productpage(core: Any, sleep: str) -> tuple[int, list[str], str]:
    from minimesh.lab.grading import exec_in

    argv = ["curl", "-sS", "-m", "10", "-D", "-", "-o", "-", "-w", "\n@@minimesh-status@@%{http_code}",
            "http://productpage:9080/productpage"]
    res = parse_curl(exec_in(core, sleep, argv, container="sleep"))
    head, _, body = res.body.replace("\r\n", "\n").partition("\n\n")
    return res.status, head.lower().splitlines(), body or res.error


def test_bookinfo_fully_meshed(apps: Any, core: Any, api_client: Any) -> None:
    """bookinfo-lite and sleep re-created with sidecars, and /productpage still answers through the proxies"""
    build_patch(_pod({"name": "x"}, containers=[APP]), _injection())  # unfinished code: say so at once

    def meshed() -> None:
        problems = _mesh_state(apps, core, api_client)
        if any("not implemented yet" in p for p in problems):  # the webhook refused them with the starter code
            fail("every pod of bookinfo-lite and sleep with its proxy, ready", "; ".join(problems),
                 f"your code works now, but minimeshd runs the code it started with and the ReplicaSets retry"
                 f" only slowly: {RESTART_MINIMESHD}, wait for it, then {RESTART_BOOKINFO}", final=True)
        check(not problems, want="every pod of bookinfo-lite and sleep with its proxy, ready", got="; ".join(problems),
              hint=f"{RESTART_BOOKINFO}  (new pods go through the webhook; after changing your code, first"
                   f" {RESTART_MINIMESHD})")

    eventually(meshed, timeout=180, interval=2)
    sleep = sorted(p.metadata.name for p in core.list_namespaced_pod(NS, label_selector="app=sleep").items
                   if is_ready(p))[0]

    def answers() -> None:
        status, headers, body = _productpage(core, sleep)
        expect(status, 200, f"minimesh logs {sleep} -c {names.PROXY_CONTAINER}", what="GET /productpage from sleep")
        check('class="block details"' in body and 'class="block reviews"' in body,
              want="the page with book details and reviews (productpage reached both through its proxy)",
              got=body[:200], hint="minimesh logs deploy/productpage-v1 -c minimesh-proxy")
        timed = [h for h in headers if h.startswith("x-envoy-upstream-service-time:")]
        check(len(timed) >= 2, want="x-envoy-upstream-service-time from sleep's proxy and from productpage's",
              got=f"{len(timed)} such header(s)", hint="is the traffic captured? minimesh logs "
                                                        f"{sleep} -c {names.INIT_CONTAINER}")

    eventually(answers, timeout=60, interval=2)

