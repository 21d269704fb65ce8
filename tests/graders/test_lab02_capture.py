"""Stage 2 grader: traffic capture, judged by what traffic really does.

The pods of `minimesh/manifests/lab02/` run the trainee's rules (`minimesh/init/rules.py`) in their init
container. In place of a proxy, a diagnostic listener (`python -m minimesh.init.diag`, uid 1337) answers on
15001 and 15006 with the port a connection landed on and its original destination (SO_ORIGINAL_DST). Every
check makes a real connection from inside a pod (exec through the Kubernetes API) and reads who answered:
the diag listener (captured, and where to) or the real destination (not captured).
"""

from __future__ import annotations

import json
import re
from typing import Any

from minimesh.lab.grading import GradeFailure, check, eventually, exec_in, fail, missing

APPLY = "minimesh apply -f minimesh/manifests/lab02/"
REDEPLOY = "minimesh delete -f minimesh/manifests/lab02/ && minimesh apply -f minimesh/manifests/lab02/"
EXERCISE = "minimesh/init/rules.py"
DEMO, TUNED, NOCAPS = "capture-demo", "capture-tuned", "capture-nocaps"
INIT = "minimesh-init"


# ---- the pods ------------------------------------------------------------------------------------


def _read_pod(core: Any, name: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_pod(name, "default")
    except ApiException as e:
        if e.status == 404:
            missing(f"pod {name}", APPLY)
        raise


def _init_log(core: Any, pod: str) -> str:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_pod_log(pod, "default", container=INIT) or ""
    except ApiException:
        return ""


def _init_failure(core: Any, pod: Any) -> str | None:
    """The init container's failure (exit code and the last log lines), or None while it has not failed."""
    for cs in pod.status.init_container_statuses or []:
        if cs.name != INIT:
            continue
        for state in (cs.state, cs.last_state):
            term = state.terminated if state else None
            if term is not None and term.exit_code:
                tail = " | ".join(_init_log(core, pod.metadata.name).strip().splitlines()[-3:])
                return f"{INIT} exited with {term.exit_code}: {tail or '(no log)'}"
    return None


def ready_pod(core: Any, name: str) -> Any:
    """The pod, once its init container succeeded and every container is ready (fails fast otherwise)."""

    def ready() -> Any:
        pod = _read_pod(core, name)
        failure = _init_failure(core, pod)
        if failure:
            advice = ("finish inbound_rules and outbound_rules in " + EXERCISE if "not implemented" in failure
                      else f"fix the rules in {EXERCISE}")
            raise GradeFailure(f"pod {name} running with its traffic capture installed", failure,
                               f"{advice}, then re-create the pods: {REDEPLOY}", final=True)
        statuses = {c.name: c.ready for c in pod.status.container_statuses or []}
        check(pod.status.phase == "Running" and statuses and all(statuses.values()),
              want=f"pod {name} Running with every container ready",
              got=f"{pod.status.phase}, ready: {statuses}", hint=f"minimesh kubectl describe pod {name}")
        return pod

    return eventually(ready, timeout=120, interval=1)


def installed(core: Any, pod: str, chain: str) -> list[str]:
    """The rules of `chain` as the init container's log shows them (its iptables-save after applying)."""
    text = _init_log(core, pod).split("now shows:", 1)[-1]
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


def rule_hint(core: Any, pod: str, chain: str, pattern: str, rule: str, where: str) -> str:
    """Say whether the rule the behaviour needs is missing from `chain` or present but placed wrongly."""
    rules = installed(core, pod, chain)
    if not rules:
        return (f"no {chain} rules in `minimesh logs {pod} -c {INIT}`; {rule} belongs in {where} ({EXERCISE});"
                f" then {REDEPLOY}")
    if not any(re.search(pattern, r) for r in rules):
        return f"{chain} has no rule like `{rule}` ({where} in {EXERCISE}); then {REDEPLOY}"
    return (f"{chain} has `{rule}` but an earlier rule decides first: check the order in {where} ({EXERCISE});"
            f" `minimesh logs {pod} -c {INIT}` shows what is installed")


# ---- connections from inside pods -----------------------------------------------------------------


def curl(core: Any, pod: str, url: str, *, container: str | None = None, extra: tuple[str, ...] = (),
         namespace: str = "default") -> tuple[int, str]:
    """(HTTP status, body) of curl in the pod; status 0 when no HTTP answer came back."""
    argv = ["curl", "-sS", "-m", "5", *extra, "-o", "-", "-w", "\n@@status@@%{http_code}", url]
    res = exec_in(core, pod, argv, container=container, namespace=namespace, timeout=20)
    body, _, code = res.stdout.rpartition("\n@@status@@")
    status = int(code) if code.strip().isdigit() else 0
    return status, (body if status else (res.stderr.strip() or res.stdout.strip()))


def answer(status: int, body: str) -> dict[str, Any]:
    """Who answered: {"diag": {...}} (a capture listener), {"app": {...}} (a real app), or {"other": text}."""
    try:
        doc = json.loads(body) if status else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "listener" in doc and "original_dst" in doc:
        return {"diag": doc}
    if isinstance(doc, dict):
        return {"app": doc}
    return {"other": f"HTTP {status}: {body[:160]}" if status else f"no answer: {body[:160]}"}


def describe(who: dict[str, Any]) -> str:
    if "diag" in who:
        d = who["diag"]
        return f"landed on {d['listener']} of {d.get('name', '?')} (original destination {d['original_dst']})"
    if "app" in who:
        a = who["app"]
        return f"answered by the app itself ({a.get('pod') or a.get('author') or 'a real server'})"
    return str(who["other"])


def pod_ip(core: Any, name: str) -> str:
    return ready_pod(core, name).status.pod_ip


def service_ip(core: Any, name: str, namespace: str = "default") -> str:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_service(name, namespace).spec.cluster_ip
    except ApiException as e:
        if e.status == 404:
            missing(f"service {namespace}/{name}", "stage 0: minimesh apply -f minimesh/manifests/bookinfo.yaml"
                    if name == "details" else APPLY)
        raise


# ---- outbound ------------------------------------------------------------------------------------


def test_outbound_to_a_service_lands_on_15001(core: Any) -> None:
    """the app's connection to a Service lands on 15001 with the ClusterIP:port as original destination"""
    ready_pod(core, DEMO)
    vip = service_ip(core, "details")
    who = answer(*curl(core, DEMO, "http://details:9080/lab02/outbound", container="app"))
    d = who.get("diag", {})
    if d.get("listener") == 15001 and d.get("original_dst") == f"{vip}:9080":
        return
    if "diag" in who and d.get("listener") == 15006:
        hint = rule_hint(core, DEMO, "MESH_OUTPUT", r"-j MESH_REDIRECT", "-j MESH_REDIRECT",
                         "outbound_rules: outbound traffic goes to MESH_REDIRECT (15001), not MESH_IN_REDIRECT")
    else:
        hint = rule_hint(core, DEMO, "MESH_OUTPUT", r"^-A MESH_OUTPUT (-p tcp )?-j MESH_REDIRECT$",
                         "-A MESH_OUTPUT -j MESH_REDIRECT",
                         "outbound_rules (OUTPUT -p tcp -j MESH_OUTPUT, then, after the RETURNs, everything left"
                         " to MESH_REDIRECT)")
    fail(f"landed on 15001 of capture-demo (original destination {vip}:9080, details' ClusterIP)",
         describe(who), hint)


def test_proxy_uid_bypasses_the_capture(core: Any) -> None:
    """connections of uid 1337 (the proxy) are not captured: they reach the real service"""
    ready_pod(core, DEMO)
    status, body = curl(core, DEMO, "http://details:9080/details/0", container="diag")
    who = answer(status, body)
    if status == 200 and "ISBN-10" in who.get("app", {}):
        return
    fail("details' own answer (the proxy's connections must leave the pod as they are)", describe(who),
         rule_hint(core, DEMO, "MESH_OUTPUT", r"-m owner --uid-owner 1337 -j RETURN",
                   "-m owner --uid-owner 1337 -j RETURN",
                   "outbound_rules, before the final MESH_REDIRECT (else the proxy's own traffic loops back"
                   " into it)"))


def test_localhost_is_untouched(core: Any) -> None:
    """app-to-app traffic over localhost and over the pod's own IP is not captured"""
    ip = pod_ip(core, DEMO)
    for url, rule, pattern in (
        ("http://127.0.0.1:9080/lab02/localhost", "-d 127.0.0.1/32 -j RETURN", r"-d 127\.0\.0\.1(/32)? -j RETURN"),
        (f"http://{ip}:9080/lab02/own-ip", "-o lo -m owner ! --uid-owner 1337 -j RETURN",
         r"-o lo -m owner ! --uid-owner 1337 -j RETURN"),
    ):
        who = answer(*curl(core, DEMO, url, container="app"))
        if who.get("app", {}).get("pod") != DEMO:
            fail(f"{url} from the app answered by the app itself (echo of capture-demo)", describe(who),
                 rule_hint(core, DEMO, "MESH_OUTPUT", pattern, rule, "outbound_rules"))


def test_proxy_reaches_its_own_app_from_127_0_0_6(core: Any) -> None:
    """uid 1337 to its own pod IP is sent inbound (15006); from 127.0.0.6 it reaches the app"""
    ip = pod_ip(core, DEMO)
    url = f"http://{ip}:9080/lab02/passthrough"
    who = answer(*curl(core, DEMO, url, container="diag"))
    d = who.get("diag", {})
    if not (d.get("listener") == 15006 and d.get("original_dst") == f"{ip}:9080"):
        fail(f"uid 1337 -> {ip}:9080 over lo landed on 15006 (original destination {ip}:9080)", describe(who),
             rule_hint(core, DEMO, "MESH_OUTPUT", r"--uid-owner 1337 -j MESH_IN_REDIRECT",
                       "-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j MESH_IN_REDIRECT",
                       "outbound_rules (the proxy calling a Service that is its own pod goes through inbound)"))
    who = answer(*curl(core, DEMO, url, container="diag", extra=("--interface", "127.0.0.6")))
    if who.get("app", {}).get("pod") != DEMO:
        fail(f"uid 1337 from 127.0.0.6 -> {ip}:9080 answered by the app", describe(who),
             rule_hint(core, DEMO, "MESH_OUTPUT", r"-s 127\.0\.0\.6(/32)? .*-j RETURN|-o lo -s 127\.0\.0\.6",
                       "-o lo -s 127.0.0.6/32 -j RETURN",
                       "outbound_rules, right after the excluded ports (the inbound passthrough source)"))


# ---- inbound -------------------------------------------------------------------------------------


def test_inbound_from_another_pod_lands_on_15006(core: Any, sleep_pod: str) -> None:
    """a connection from another pod lands on 15006 with the pod IP:port as original destination"""
    sleep_ip = _read_pod(core, sleep_pod).status.pod_ip
    ip = pod_ip(core, DEMO)
    who = answer(*curl(core, sleep_pod, f"http://{ip}:9080/lab02/inbound"))
    d = who.get("diag", {})
    if d.get("listener") == 15006 and d.get("original_dst") == f"{ip}:9080" and d.get("peer", "").startswith(f"{sleep_ip}:"):
        return
    if d.get("listener") == 15001:
        hint = rule_hint(core, DEMO, "MESH_INBOUND", r"-j MESH_IN_REDIRECT", "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT",
                         "inbound_rules: inbound goes to MESH_IN_REDIRECT (15006), not MESH_REDIRECT")
    else:
        hint = rule_hint(core, DEMO, "MESH_INBOUND", r"-j MESH_IN_REDIRECT", "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT",
                         "inbound_rules (PREROUTING -p tcp -j MESH_INBOUND, and MESH_INBOUND ends with it)")
    fail(f"landed on 15006 of capture-demo (original destination {ip}:9080, from {sleep_ip})", describe(who), hint)


# ---- annotations ---------------------------------------------------------------------------------


def test_excluded_inbound_port_bypasses(core: Any, sleep_pod: str) -> None:
    """excludeInboundPorts 9081: inbound 9081 reaches the app, 9080 is still captured"""
    ip = pod_ip(core, TUNED)
    who = answer(*curl(core, sleep_pod, f"http://{ip}:9081/lab02/excluded"))
    if who.get("app", {}).get("pod") != TUNED:
        fail(f"{ip}:9081 (excluded) answered by capture-tuned's app", describe(who),
             rule_hint(core, TUNED, "MESH_INBOUND", r"--dport 9081 -j RETURN", "-A MESH_INBOUND -p tcp --dport 9081 -j RETURN",
                       "inbound_rules: every port of cfg.inbound_excludes returns before the MESH_IN_REDIRECT jump"))
    who = answer(*curl(core, sleep_pod, f"http://{ip}:9080/lab02/not-excluded"))
    if "diag" not in who:
        fail(f"{ip}:9080 (not excluded) still captured", describe(who),
             "only the excluded ports may RETURN in MESH_INBOUND (inbound_rules)")


def test_excluded_outbound_port_bypasses(core: Any) -> None:
    """excludeOutboundPorts 443: the app reaches the API server directly; without it, 443 is captured"""
    ready_pod(core, DEMO)
    api = service_ip(core, "kubernetes")
    target = "kubernetes.default.svc:443"
    res = exec_in(core, DEMO, ["python", "-m", "minimesh.init.diag", "probe", target], container="app", timeout=20)
    try:
        doc = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        doc = {"error": res.stdout + res.stderr}
    if not (doc.get("listener") == 15001 and doc.get("original_dst") == f"{api}:443"):
        fail(f"from capture-demo (no exclusions) {target} lands on 15001 (original destination {api}:443)",
             str(doc)[:200], "outbound_rules: every TCP port is captured unless excluded")
    ready_pod(core, TUNED)
    status, body = curl(core, TUNED, f"https://{target}/version", container="app", extra=("-k",))
    if not status:
        fail(f"from capture-tuned (excludeOutboundPorts 443) an HTTPS answer from the API server at {target}",
             body[:200],
             rule_hint(core, TUNED, "MESH_OUTPUT", r"--dport 443 -j RETURN", "-A MESH_OUTPUT -p tcp --dport 443 -j RETURN",
                       "outbound_rules: excluded ports RETURN first, before any other MESH_OUTPUT rule"))


def test_excluded_outbound_cidr_bypasses(core: Any) -> None:
    """excludeOutboundIPRanges 10.244.0.0/16: pod IPs are reached directly, Service VIPs are still captured"""
    demo_ip, vip = pod_ip(core, DEMO), service_ip(core, DEMO)
    ready_pod(core, TUNED)
    who = answer(*curl(core, TUNED, f"http://{demo_ip}:9080/lab02/cidr", container="app"))
    if who.get("diag", {}).get("name") != DEMO:  # it left capture-tuned; capture-demo's inbound answered
        got = describe(who)
        if not demo_ip.startswith("10.244."):
            got += f" (this cluster's pod IPs, like {demo_ip}, are outside 10.244.0.0/16: edit the annotation)"
        fail(f"capture-tuned -> {demo_ip}:9080 leaves uncaptured and lands on capture-demo's 15006", got,
             rule_hint(core, TUNED, "MESH_OUTPUT", r"-d 10\.244\.0\.0/16 -j RETURN", "-A MESH_OUTPUT -d 10.244.0.0/16 -j RETURN",
                       "outbound_rules: excluded CIDRs RETURN after 127.0.0.1 and before MESH_REDIRECT"))
    who = answer(*curl(core, TUNED, "http://capture-demo:9080/lab02/vip", container="app"))
    d = who.get("diag", {})
    if not (d.get("name") == TUNED and d.get("listener") == 15001 and d.get("original_dst") == f"{vip}:9080"):
        fail(f"capture-tuned -> capture-demo:9080 (ClusterIP {vip}, not excluded) lands on its own 15001",
             describe(who), "only the excluded CIDRs may RETURN (outbound_rules)")


def test_init_without_net_admin_fails(core: Any) -> None:
    """the init container without NET_ADMIN fails, says why, and the app never starts"""

    def failed() -> Any:
        pod = _read_pod(core, NOCAPS)
        check(_init_failure(core, pod), want=f"{INIT} of {NOCAPS} terminated with a non-zero exit code",
              got=pod.status.phase, hint=f"minimesh kubectl describe pod {NOCAPS}")
        return pod

    pod = eventually(failed, timeout=90, interval=1)
    log = _init_log(core, NOCAPS)
    check("NET_ADMIN" in log, want=f"`minimesh logs {NOCAPS} -c {INIT}` naming the missing NET_ADMIN capability",
          got=log.strip()[-200:] or "(empty log)", hint="python -m minimesh.init checks its capabilities first")
    running = [c.name for c in pod.status.container_statuses or [] if c.state and c.state.running]
    check(not running, want="no app container started (the pod must not run uncaptured)", got=running,
          hint="a failed init container keeps the app containers from starting")
