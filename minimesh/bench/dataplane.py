"""`minimesh bench dataplane`: what a sidecar pair costs, measured on a cluster.

The same open-loop load (default 1000 req/s over 16 keep-alive connections, 1 KB request and response
bodies, 20 s measured after a 2 s warm-up) goes from a client pod to a server pod running the echo app, over:

  direct          no sidecars (the baseline)
  minimesh        the capture of stage 2 + a minimesh proxy on both sides (plaintext)
  minimesh-mtls   the same pair with STRICT mTLS and the RBAC filters of two AuthorizationPolicies (stages 6-7)
  nginx           the same capture, nginx (uid 1337) on 15001 -> the server pod and on 15006 -> the app
  haproxy         the same capture, HAProxy likewise

The load generator and its statistics are `minimesh.bench.dataplane_loopback`'s (latency from the
intended send time, so a stalled proxy cannot hide queueing); it runs inside the client pod, as the app
would. Per topology we report p50/p90/p99 latency and what the pair adds to the direct path, the maximum
sustained rate (a separate closed-loop ramp: `minimesh.bench.closedloop` with more and more connections
until the rate stops growing), and per proxy its CPU (from /proc of its processes, read in the pod by
`minimesh.bench.procstat`; normalised per 1000 req/s) and peak RSS (VmHWM). Results go to
`bench-results/dataplane-<time>.json` and `.png`.

With no `--cluster`, the run creates a local cluster of its own and removes it at the end (from the solved
tree when this tree's stage 2/3 exercises are not done). Everything else goes through the Kubernetes API,
so `--cluster NAME --provider kind` works the same. All four topologies share the machine's CPUs with the
load generator and the app: compare them with each other, not with numbers from bigger machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from minimesh.bench import sidecars
from minimesh.bench.dataplane_loopback import LoadResult, LoadSpec

TOPOLOGIES = ("direct", "minimesh", sidecars.MTLS, "nginx", "haproxy")
TARGETS = {"p90_added_ms": 1.0, "peak_rss_mb": 40.0, "vcpu_per_1000rps": 0.3, "mtls_p90_added_ms": 1.5}
ISTIO_P90_ADDED_MS = 2.7  # Istio's published p90 added by its sidecar pair at 1000 req/s
APP_PORT = 8080
LOADGEN, METER, PROXY, APP, INIT = "loadgen", "meter", "proxy", "echo", "minimesh-init"
IMAGE = "minimesh/minimesh:dev"
SOURCE = "/opt/minimesh"
RAMP = (1, 4, 16, 64)


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Options:
    rate: float = 1000.0
    duration: float = 20.0
    warmup: float = 2.0
    connections: int = 16
    body: int = 1024
    only: tuple[str, ...] = TOPOLOGIES[1:]  # direct always runs: it is the baseline
    ramp: tuple[int, ...] = RAMP
    ramp_duration: float = 3.0
    nginx_image: str = "nginx"
    haproxy_image: str = ""  # "" = by provider: Debian's haproxy on the local cluster, haproxy:2.6 elsewhere
    nice: int = 0  # local cluster only: run the bench pods' processes at this niceness (e.g. -10 as root)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration <= 0 or self.connections < 1 or self.body < 0 or self.warmup < 0:
            raise BenchError("--rate and --duration must be > 0, --connections >= 1, --body >= 0")
        unknown = [t for t in self.only if t not in TOPOLOGIES]
        if unknown:
            raise BenchError(f"--only {','.join(unknown)}: choose from {', '.join(TOPOLOGIES[1:])}")
        if not self.ramp or any(c < 1 for c in self.ramp):
            raise BenchError("--ramp: connection counts >= 1, e.g. 1,4,16,64")

    @property
    def topologies(self) -> tuple[str, ...]:
        return ("direct", *(t for t in TOPOLOGIES[1:] if t in self.only))

    def load_spec(self) -> LoadSpec:
        return LoadSpec(rate=self.rate, connections=self.connections, duration=self.duration, warmup=self.warmup,
                        body_size=self.body, path=f"/?size={self.body}", host_header="bench-server")


# ---- manifests (pure) ---------------------------------------------------------------------------------


def names(topology: str) -> dict[str, str]:
    return {"server": f"srv-{topology}", "client": f"cli-{topology}", "service": f"srv-{topology}",
            "server_config": f"srv-{topology}-proxy", "client_config": f"cli-{topology}-proxy"}


def _source_volume() -> dict[str, Any]:
    return {"name": "minimesh-source", "hostPath": {"path": SOURCE, "type": "Directory"}}


def _mount_source() -> dict[str, Any]:
    return {"name": "minimesh-source", "mountPath": SOURCE, "readOnly": True}


def _python(name: str, argv: list[str], uid: int, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": argv,
                         "securityContext": {"runAsUser": uid, "runAsGroup": uid, "allowPrivilegeEscalation": False},
                         "volumeMounts": [_mount_source()]}
    if env:
        c["env"] = env
    return c


def _init() -> dict[str, Any]:
    c = _python(INIT, ["python", "-m", "minimesh.init"], 0)
    c["securityContext"] = {"runAsUser": 0, "runAsGroup": 0,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}}
    return c


def _proxy(sc: sidecars.Sidecar, config_map: str) -> tuple[dict[str, Any], dict[str, Any]]:
    container: dict[str, Any] = {
        "name": PROXY, "image": sc.image, "imagePullPolicy": "IfNotPresent", "command": list(sc.command),
        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "allowPrivilegeEscalation": False},
        "volumeMounts": [{"name": "proxy-config", "mountPath": sidecars.CONFIG_DIR, "readOnly": True}],
    }
    if sc.name in ("minimesh", sidecars.MTLS):
        container["volumeMounts"].append(_mount_source())
    return container, {"name": "proxy-config", "configMap": {"name": config_map}}


def pod_manifest(topology: str, role: str, sc: sidecars.Sidecar | None) -> dict[str, Any]:
    """The server pod (echo app) or the client pod (idle loadgen container the bench execs into), with the
    capture, the proxy and a meter container (uid 1337, to read the proxy's /proc) when `sc` is given."""
    n = names(topology)
    if role == "server":
        main = _python(APP, ["python", "-m", "minimesh.apps.echo", "--port", str(APP_PORT)], 1000,
                       [{"name": "SERVICE_NAME", "value": "bench-server"}])
        main["ports"] = [{"name": "http", "containerPort": APP_PORT}]
    else:
        main = _python(LOADGEN, ["python", "-m", "minimesh.apps.sleep"], 1000)
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 0, "restartPolicy": "Never",
                            "shareProcessNamespace": True, "containers": [main], "volumes": [_source_volume()]}
    if sc is not None:
        proxy, volume = _proxy(sc, n[f"{role}_config"])
        spec["initContainers"] = [_init()]
        spec["containers"] += [proxy, _python(METER, ["python", "-m", "minimesh.apps.sleep"], 1337)]
        spec["volumes"].append(volume)
    labels = {"app": "minimesh-bench", "bench-topology": topology, "bench-role": role}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n[role], "labels": labels}, "spec": spec}


def service_manifest(topology: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": names(topology)["service"], "labels": {"app": "minimesh-bench",
                                                                         "bench-topology": topology}},
            "spec": {"selector": {"bench-topology": topology, "bench-role": "server"},
                     "ports": [{"name": "http", "port": APP_PORT, "targetPort": APP_PORT}]}}


def config_map(name: str, topology: str, filename: str, text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"app": "minimesh-bench", "bench-topology": topology}},
            "data": {filename: text}}


# ---- results (pure) -----------------------------------------------------------------------------------


def served_all(load: dict[str, Any], spec: LoadSpec) -> bool:
    """Every request of the run answered with a 2xx (the measured ones all counted)."""
    measured = int(spec.rate * (spec.duration + spec.warmup)) - int(spec.rate * spec.warmup)
    return not load["errors"] and not load["non_2xx"] and load["completed"] >= measured - 1


def ramp_finished(rates: Sequence[float], gain: float = 1.05) -> bool:
    """Stop ramping once a step no longer raises the best rate by `gain` (the system is saturated)."""
    return len(rates) >= 2 and rates[-1] < gain * max(rates[:-1])


def proxy_usage(before: dict[str, Any], after: dict[str, Any], requests: int, seconds: float) -> dict[str, Any]:
    """CPU and memory of one proxy over a load run, from two procstat samples."""
    cpu = max(0.0, after["cpu_s"] - before["cpu_s"])
    return {"cpu_s": round(cpu, 3), "cpu_vcpu": round(cpu / seconds, 4) if seconds else 0.0,
            "vcpu_per_1000rps": round(cpu / requests * 1000, 4) if requests else None,
            "processes": len(after["processes"]), "rss_mb": after["rss_mb"], "peak_rss_mb": after["peak_rss_mb"]}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Added latency against direct, and the targets for the minimesh pair."""
    topo = result["topologies"]
    base = topo.get("direct", {}).get("load", {}).get("latency_ms")
    for t in topo.values():
        lat = t.get("load", {}).get("latency_ms")
        if base and lat:
            t["added_latency_ms"] = {k: round(lat[k] - base[k], 3) for k in ("p50", "p90", "p99")}
    mm = topo.get("minimesh", {})
    if "added_latency_ms" in mm and mm.get("proxies"):
        proxies = mm["proxies"].values()
        result["targets"] = {
            "p90_added_ms<=1": mm["added_latency_ms"]["p90"] <= TARGETS["p90_added_ms"],
            "rss_mb<=40": all(p["peak_rss_mb"] <= TARGETS["peak_rss_mb"] for p in proxies),
            "vcpu_per_1000rps<=0.3": all((p["vcpu_per_1000rps"] or 0) <= TARGETS["vcpu_per_1000rps"] for p in proxies),
        }
    secured = topo.get(sidecars.MTLS, {})
    if "added_latency_ms" in secured:
        result.setdefault("targets", {})["mtls_authz_p90_added_ms<=1.5"] = \
            secured["added_latency_ms"]["p90"] <= TARGETS["mtls_p90_added_ms"]
    return result


def _cell(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(result: dict[str, Any]) -> str:
    p = result["params"]
    head = (f"minimesh bench dataplane on {result['cluster']}: {p['rate']:g} req/s open loop, {p['connections']}"
            f" connections, {p['body']} B bodies, {p['duration']:g} s (+{p['warmup']:g} s warm-up)")
    cols = (f"{'topology':14}{'p50':>8}{'p90':>8}{'p99':>8}{'+p50':>8}{'+p90':>8}{'+p99':>8}{'req/s':>8}"
            f"{'errors':>7}{'max req/s':>10}  {'vCPU/1000 req/s':>17}  {'peak RSS MB':>13}")
    load = result.get("load_average", {})
    machine = (f"{p.get('cpus')} CPUs, load average {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end"
               if "end" in load else f"{p.get('cpus')} CPUs")
    nice = f", bench processes at nice {p['nice']}" if p.get("nice") else ""
    lines = [head, f"{machine}{nice}",
             "latency in ms from the intended send time; + = added to direct; proxies: client / server", "", cols]
    for name, t in result["topologies"].items():
        if "error" in t:
            lines.append(f"{name:14}  failed: {t['error']}")
            continue
        load, added = t["load"], t.get("added_latency_ms", {})
        lat = load["latency_ms"]
        proxies = t.get("proxies") or {}
        cpu = " / ".join(_cell(proxies[r]["vcpu_per_1000rps"], "{:.3f}") for r in ("client", "server")
                         if r in proxies) or "-"
        rss = " / ".join(_cell(proxies[r]["peak_rss_mb"], "{:.1f}") for r in ("client", "server")
                         if r in proxies) or "-"
        maxrate = t.get("max_sustained", {}).get("max_rate")
        lines.append(f"{name:14}{lat['p50']:8.2f}{lat['p90']:8.2f}{lat['p99']:8.2f}"
                     + "".join(f"{_cell(added.get(k)) if name != 'direct' else '':>8}" for k in ("p50", "p90", "p99"))
                     + f"{load['achieved_rate']:8.0f}{load['errors'] + load['non_2xx']:7d}{_cell(maxrate, '{:.0f}'):>10}"
                     + f"  {cpu:>17}  {rss:>13}")
    targets = result.get("targets", {})
    if "p90_added_ms<=1" in targets:
        mm = result["topologies"]["minimesh"]
        worst_cpu = max((p["vcpu_per_1000rps"] or 0) for p in mm["proxies"].values())
        worst_rss = max(p["peak_rss_mb"] for p in mm["proxies"].values())
        ok = {k: "OK" if v else "MISSED" for k, v in targets.items()}
        lines += ["", "targets for the minimesh pair:",
                  f"  p90 added {mm['added_latency_ms']['p90']:.2f} ms <= {TARGETS['p90_added_ms']:g} ms"
                  f"  {ok['p90_added_ms<=1']}   (Istio publishes ~{ISTIO_P90_ADDED_MS} ms p90 for its pair)",
                  f"  peak RSS {worst_rss:.1f} MB <= {TARGETS['peak_rss_mb']:g} MB per proxy  {ok['rss_mb<=40']}",
                  f"  CPU {worst_cpu:.3f} <= {TARGETS['vcpu_per_1000rps']} vCPU per 1000 req/s per proxy"
                  f"  {ok['vcpu_per_1000rps<=0.3']}"]
    if "mtls_authz_p90_added_ms<=1.5" in targets:
        secured = result["topologies"][sidecars.MTLS]["added_latency_ms"]["p90"]
        lines += [f"target for the pair with STRICT mTLS + AuthorizationPolicy ({sidecars.MTLS}):",
                  f"  p90 added {secured:.2f} ms <= {TARGETS['mtls_p90_added_ms']:g} ms"
                  f"  {'OK' if targets['mtls_authz_p90_added_ms<=1.5'] else 'MISSED'}"]
    return "\n".join(lines)


# ---- the cluster ----------------------------------------------------------------------------------------


def exercises_missing() -> list[str]:
    """Stage 2/3 exercises that are still stubs in this tree (the pods of a cluster it starts run them)."""
    from minimesh.init import rules
    from minimesh.proxy import balancer, routing
    from minimesh.proxy.config import ClusterWeight, parse_resource
    from minimesh.proxy.config.snapshot import ROUTE_TYPE

    rc = parse_resource(ROUTE_TYPE, {"name": "r", "virtual_hosts": [
        {"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]})
    checks: dict[str, Callable[[], object]] = {
        "lab 02: minimesh/init/rules.py": lambda: rules.build_rules(rules.CaptureConfig()),
        "lab 03: minimesh/proxy/routing.py": lambda: (
            routing.select_route(routing.select_virtual_host(rc, "x"), "GET", "/", {}),  # type: ignore[arg-type]
            routing.pick_weighted_cluster((ClusterWeight("a", 1),), 0)),
        "lab 03: minimesh/proxy/balancer.py": lambda: balancer.RoundRobin().pick([]),
    }
    missing = []
    for what, fn in checks.items():
        try:
            fn()
        except NotImplementedError:
            missing.append(what)
    return missing


def _tree_root() -> Path:
    import minimesh

    return Path(minimesh.__file__).resolve().parent.parent


def _tree_for_cluster(say: Callable[[str], None]) -> Path:
    missing = exercises_missing()
    if not missing:
        return _tree_root()
    repo = _tree_root()
    if not (repo / "solutions" / "minimesh").is_dir():
        raise BenchError(f"unfinished exercises ({'; '.join(missing)}) and no solutions/ to run the pods from")
    from minimesh.lab.trees import build_solved_tree

    say(f"exercises not done in this tree ({'; '.join(missing)}): the bench cluster runs the solved tree")
    return build_solved_tree(repo)


def tls_material(say: Callable[[str], None]) -> dict[str, Any]:
    """The minimesh-mtls pair's certificates, issued by stage 6's CA code: this tree's, or the solved tree's
    while this tree's `sign_csr` is not written (the pods need certificates, not the trainee's CA)."""
    try:
        return sidecars.new_mtls_material()
    except NotImplementedError:
        pass
    repo = _tree_root()
    if not (repo / "solutions" / "minimesh").is_dir():
        raise BenchError(f"{sidecars.MTLS} needs stage 6's sign_csr (minimesh/security/ca.py) to issue certificates")
    from minimesh.lab.trees import build_solved_tree

    tree = build_solved_tree(repo)
    say(f"{sidecars.MTLS}: certificates issued with the solved tree's CA (stage 6's sign_csr is not done here)")
    code = "import json; from minimesh.bench.sidecars import new_mtls_material; print(json.dumps(new_mtls_material()))"
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"},
                         cwd=tree, capture_output=True, text=True, timeout=120)
    if res.returncode:
        raise BenchError(f"{sidecars.MTLS}: cannot issue certificates: {res.stderr.strip()[-400:]}")
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _minimesh(tree: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1", "MINIMESH_PROVIDER": "local"}
    env.pop("MINIMESH_CLUSTER", None)
    return subprocess.run([sys.executable, "-m", "minimesh", *args], env=env, cwd=tree, capture_output=True,
                          text=True, timeout=timeout)


def _current_context() -> str:
    try:
        import yaml

        from minimesh.cluster.local.kubeconfig import user_kubeconfig

        return str((yaml.safe_load(user_kubeconfig().read_text()) or {}).get("current-context") or "")
    except Exception:  # no kubeconfig yet: nothing to restore
        return ""


@contextlib.contextmanager
def bench_cluster(name: str | None, provider: str | None, say: Callable[[str], None]) -> Iterator[Any]:
    """The cluster to run on: `name` as it is, or a new local cluster removed afterwards."""
    from minimesh.cluster import provider as providers

    if name:
        yield providers.get(provider, name)
        return
    own = f"bench-{secrets.token_hex(3)}"
    tree = _tree_for_cluster(say)
    previous = _current_context()
    say(f"creating local cluster {own} (removed at the end)")
    try:
        res = _minimesh(tree, "cluster", "up", "--name", own)
        if res.returncode:
            raise BenchError(f"minimesh cluster up --name {own} failed:\n{res.stdout}{res.stderr}")
        yield providers.get("local", own)
    finally:
        down = _minimesh(tree, "cluster", "down", "--name", own, timeout=300)
        if down.returncode:
            say(f"WARNING: minimesh cluster down --name {own} failed; remove it by hand:\n{down.stdout}{down.stderr}")
        if previous and previous != f"minimesh-{own}":
            subprocess.run(["kubectl", "config", "use-context", previous], capture_output=True, check=False)


class Renicer:
    """`--nice` on the local cluster: every process in the bench pods' network namespaces runs at this niceness,
    re-applied every 0.5 s so that the load generators started later by exec are caught too. On a shared
    machine this keeps other work from skewing the comparison; all topologies get the same treatment."""

    def __init__(self, nice: int, netns: list[str]) -> None:
        import threading

        self.nice, self.netns = nice, netns
        self.done: set[int] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _once(self) -> None:
        for ns in self.netns:
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
            for pid in (int(p) for p in out.split() if p.isdigit()):
                if pid not in self.done:
                    with contextlib.suppress(OSError):  # gone meanwhile
                        os.setpriority(os.PRIO_PROCESS, pid, self.nice)
                        self.done.add(pid)

    def _loop(self) -> None:
        while not self.stopped.wait(0.5):
            self._once()

    def __enter__(self) -> Renicer:
        self._once()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)


# ---- running one topology -------------------------------------------------------------------------------


@dataclass
class Bench:
    core: Any
    namespace: str
    options: Options
    cluster: Any
    say: Callable[[str], None] = print
    material: dict[str, Any] | None = None  # minimesh-mtls's certificates

    @property
    def provider(self) -> str:
        return str(self.cluster.provider)

    def renicer(self, topology: str) -> contextlib.AbstractContextManager[Any]:
        if not self.options.nice:
            return contextlib.nullcontext()
        pods = [names(topology)[r] for r in ("client", "server")]
        netns = [self.cluster.pod_netns(self.namespace, p) for p in pods]
        if self.provider != "local" or None in netns:
            self.say(f"--nice works on the local cluster only; {self.provider} pods keep their priority")
            return contextlib.nullcontext()
        if self.options.nice < 0 and os.geteuid() != 0:
            self.say("--nice below 0 needs root; the bench pods keep their priority")
            return contextlib.nullcontext()
        return Renicer(self.options.nice, [n for n in netns if n])

    # -- API helpers ----------------------------------------------------------------------------------
    def create(self, obj: dict[str, Any]) -> None:
        create = {"Pod": self.core.create_namespaced_pod, "Service": self.core.create_namespaced_service,
                  "ConfigMap": self.core.create_namespaced_config_map}.get(obj["kind"])
        if create is not None:
            create(self.namespace, obj)
        else:
            raise BenchError(f"the bench does not create {obj['kind']} objects")

    def exec(self, pod: str, container: str, argv: list[str], timeout: float = 60) -> Any:
        from minimesh.k8s.stream import exec_in_pod

        return exec_in_pod(self.core, self.namespace, pod, argv, container=container, timeout=timeout)

    def exec_json(self, pod: str, container: str, argv: list[str], timeout: float = 60) -> dict[str, Any]:
        res = self.exec(pod, container, argv, timeout)
        lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
        if not lines:
            raise BenchError(f"{pod}/{container}: {' '.join(argv[:4])}… gave no result (exit {res.returncode}):"
                             f" {(res.stderr or res.stdout).strip()[-400:]}")
        return json.loads(lines[-1])  # type: ignore[no-any-return]

    def logs(self, pod: str, container: str, lines: int = 15) -> str:
        try:
            return self.core.read_namespaced_pod_log(pod, self.namespace, container=container, tail_lines=lines) or ""
        except Exception as e:  # the log is only an explanation; its absence must not hide the real error
            return f"(no log: {e})"

    def wait_running(self, pod: str, timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            p = self.core.read_namespaced_pod(pod, self.namespace)
            for s in p.status.init_container_statuses or []:
                done = s.state.terminated if s.state else None
                if done is not None and done.exit_code:
                    raise BenchError(f"pod {pod}: {s.name} exited with {done.exit_code}:\n{self.logs(pod, s.name)}")
            for s in p.status.container_statuses or []:
                done = s.state.terminated if s.state else None
                if done is not None:
                    raise BenchError(f"pod {pod}: container {s.name} exited ({done.exit_code}):\n"
                                     f"{self.logs(pod, s.name)}")
            statuses = p.status.container_statuses or []
            if p.status.phase == "Running" and statuses and all(s.state and s.state.running for s in statuses):
                return p
            if time.monotonic() > deadline:
                raise BenchError(f"pod {pod} not running after {timeout:g} s: {p.status.phase}")
            time.sleep(0.5)

    def delete_topology(self, topology: str) -> None:
        sel = f"bench-topology={topology}"
        for p in self.core.list_namespaced_pod(self.namespace, label_selector=sel).items:
            with contextlib.suppress(Exception):
                self.core.delete_namespaced_pod(p.metadata.name, self.namespace, grace_period_seconds=0)
        for s in self.core.list_namespaced_service(self.namespace, label_selector=sel).items:
            with contextlib.suppress(Exception):
                self.core.delete_namespaced_service(s.metadata.name, self.namespace)
        for c in self.core.list_namespaced_config_map(self.namespace, label_selector=sel).items:
            with contextlib.suppress(Exception):
                self.core.delete_namespaced_config_map(c.metadata.name, self.namespace)
        deadline = time.monotonic() + 120
        while self.core.list_namespaced_pod(self.namespace, label_selector=sel).items:
            if time.monotonic() > deadline:
                raise BenchError(f"pods of {topology} still there after 120 s")
            time.sleep(0.5)

    # -- deploy ---------------------------------------------------------------------------------------
    def sidecar(self, topology: str) -> sidecars.Sidecar | None:
        if topology == "direct":
            return None
        haproxy = self.options.haproxy_image or ("debian" if self.provider == "local" else "haproxy:2.6")
        return sidecars.sidecar(topology, haproxy_image=haproxy, nginx_image=self.options.nginx_image)

    def deploy(self, topology: str) -> dict[str, str]:
        n, sc = names(topology), self.sidecar(topology)
        self.create(service_manifest(topology))
        if sc is not None:
            self.create(config_map(n["server_config"], topology, sc.config_file,
                                   sidecars.server_config(topology, APP_PORT, self.material)))
        self.create(pod_manifest(topology, "server", sc))
        server_ip = self.wait_running(n["server"]).status.pod_ip
        if sc is not None:
            self.create(config_map(n["client_config"], topology, sc.config_file,
                                   sidecars.client_config(topology, server_ip, APP_PORT, self.material)))
        self.create(pod_manifest(topology, "client", sc))
        self.wait_running(n["client"])
        self.wait_answering(topology)
        return n

    def wait_answering(self, topology: str, timeout: float = 90) -> None:
        """End-to-end readiness: the client's request through both proxies gets a 200."""
        n = names(topology)
        url = f"http://{n['service']}:{APP_PORT}/?size=16"
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            res = self.exec(n["client"], LOADGEN, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                                                   "-X", "POST", "-d", "x", url], timeout=20)
            last = res.stdout.strip() or res.stderr.strip()
            if last == "200":
                return
            time.sleep(1)
        body = self.exec(n["client"], LOADGEN, ["curl", "-s", "-m", "5", url], timeout=20).stdout.strip()[:300]
        proxies = "" if topology == "direct" else (
            f"\nclient proxy log:\n{self.logs(n['client'], PROXY)}\nserver proxy log:\n{self.logs(n['server'], PROXY)}")
        raise BenchError(f"{topology}: {url} from {n['client']} answers {last!r} ({body}){proxies}")

    # -- measure --------------------------------------------------------------------------------------
    def procstat(self, pod: str, sc: sidecars.Sidecar) -> dict[str, Any]:
        return self.exec_json(pod, METER, ["python", "-m", "minimesh.bench.procstat", "--match", sc.process_pattern])

    def open_loop(self, topology: str) -> LoadResult:
        spec = self.options.load_spec()
        n = names(topology)
        argv = ["python", "-m", "minimesh.bench.dataplane_loopback", "loadgen", "--host", n["service"],
                "--port", str(APP_PORT), "--spec", json.dumps(asdict(spec))]
        out = self.exec_json(n["client"], LOADGEN, argv, timeout=spec.duration + spec.warmup + 90)
        return LoadResult(**out)

    def closed_loop_ramp(self, topology: str) -> dict[str, Any]:
        n, o = names(topology), self.options
        steps: list[dict[str, Any]] = []
        for conns in o.ramp:
            argv = ["python", "-m", "minimesh.bench.closedloop", "--host", n["service"], "--port", str(APP_PORT),
                    "--connections", str(conns), "--duration", f"{o.ramp_duration:g}", "--body", str(o.body),
                    "--path", f"/?size={o.body}", "--host-header", "bench-server"]
            step = self.exec_json(n["client"], LOADGEN, argv, timeout=o.ramp_duration + 90)
            steps.append(step)
            if step["errors"] or step["non_2xx"] or ramp_finished([s["rate"] for s in steps]):
                break
        clean = [s for s in steps if not s["errors"] and not s["non_2xx"]]
        best = max(clean, key=lambda s: s["rate"]) if clean else None
        return {"steps": steps, "max_rate": best["rate"] if best else 0.0,
                "at_connections": best["connections"] if best else None}

    def measure(self, topology: str) -> dict[str, Any]:
        sc = self.sidecar(topology)
        self.say(f"{topology}: deploying {'the client and server pods' if sc is None else f'the {topology} pair'}")
        self.deploy(topology)
        with self.renicer(topology):
            return self._measure(topology, sc)

    def _measure(self, topology: str, sc: sidecars.Sidecar | None) -> dict[str, Any]:
        n = names(topology)
        spec = self.options.load_spec()
        pods = {"client": n["client"], "server": n["server"]}
        before = {r: self.procstat(p, sc) for r, p in pods.items()} if sc else {}
        started = time.monotonic()
        self.say(f"{topology}: open loop, {spec.rate:g} req/s for {spec.warmup:g} + {spec.duration:g} s")
        load = self.open_loop(topology)
        seconds = time.monotonic() - started
        after = {r: self.procstat(p, sc) for r, p in pods.items()} if sc else {}
        self.say(f"{topology}: closed-loop ramp over {','.join(map(str, self.options.ramp))} connections")
        ramp = self.closed_loop_ramp(topology)
        out: dict[str, Any] = {"load": asdict(load), "served_all": served_all(asdict(load), spec),
                               "max_sustained": ramp}
        if sc is not None:
            final = {r: self.procstat(p, sc) for r, p in pods.items()}  # peak RSS over the ramp too
            out["proxies"] = {}
            for role in pods:
                usage = proxy_usage(before[role], after[role], load.sent - load.errors, seconds)
                usage["peak_rss_mb"] = final[role]["peak_rss_mb"]
                out["proxies"][role] = usage
            out["image"] = sc.image
        return out


# ---- the whole run --------------------------------------------------------------------------------------


def run(options: Options, cluster: str | None = None, provider: str | None = None,
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every topology of `options` on `cluster` (or a local cluster of its own); return the results."""
    from kubernetes import client

    with bench_cluster(cluster, provider, say) as c:
        api = c.api_client()
        core = client.CoreV1Api(api)
        namespace = f"bench-{secrets.token_hex(3)}"
        core.create_namespace({"metadata": {"name": namespace, "labels": {"app": "minimesh-bench"}}})
        material = tls_material(say) if sidecars.MTLS in options.topologies else None
        bench = Bench(core, namespace, options, c, say, material)
        result: dict[str, Any] = {
            "cluster": f"{c.provider} cluster {c.name}", "params": {**asdict(options), "cpus": os.cpu_count()},
            "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "topologies": {}}
        try:
            for topology in options.topologies:
                try:
                    result["topologies"][topology] = bench.measure(topology)
                except BenchError as e:
                    say(f"{topology}: FAILED: {e}")
                    result["topologies"][topology] = {"error": str(e)}
                finally:
                    with contextlib.suppress(Exception):
                        bench.delete_topology(topology)
        finally:
            result["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
            with contextlib.suppress(Exception):
                core.delete_namespace(namespace)
            api.close()
    return summarise(result)


def plot(result: dict[str, Any], path: Path) -> None:
    """Four panels: added latency, max sustained rate, CPU per 1000 req/s and peak RSS per proxy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    topo = {k: v for k, v in result["topologies"].items() if "error" not in v}
    names_ = list(topo)
    proxied = [t for t in names_ if topo[t].get("proxies")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0][0]
    width = 0.25
    for i, q in enumerate(("p50", "p90", "p99")):
        ax.bar([x + (i - 1) * width for x in range(len(proxied))],
               [topo[t]["added_latency_ms"][q] for t in proxied], width, label=q)
    ax.axhline(TARGETS["p90_added_ms"], ls="--", c="grey", lw=1)
    if sidecars.MTLS in proxied:  # its own p90 target, over its bars only
        x = proxied.index(sidecars.MTLS)
        ax.hlines(TARGETS["mtls_p90_added_ms"], x - 0.45, x + 0.45, colors="grey", linestyles=":", lw=1.5)
    ax.set_yscale("symlog", linthresh=1)  # a saturated pair adds seconds, a healthy one fractions of a ms
    ax.set_xticks(range(len(proxied)), proxied)
    ax.set_title(f"latency added to direct (ms, symlog) at {result['params']['rate']:g} req/s")
    ax.legend()
    ax = axes[0][1]
    ax.bar(names_, [topo[t]["max_sustained"]["max_rate"] for t in names_], color="tab:green")
    ax.set_title("max sustained req/s (closed-loop ramp)")
    for row, (key, title, target) in enumerate((("vcpu_per_1000rps", "vCPU per 1000 req/s, per proxy",
                                                 TARGETS["vcpu_per_1000rps"]),
                                                ("peak_rss_mb", "peak RSS per proxy (MB)", TARGETS["peak_rss_mb"]))):
        ax = axes[1][row]
        for i, role in enumerate(("client", "server")):
            ax.bar([x + (i - 0.5) * 0.4 for x in range(len(proxied))],
                   [topo[t]["proxies"][role][key] or 0 for t in proxied], 0.4, label=f"{role} side")
        ax.axhline(target, ls="--", c="grey", lw=1)
        ax.set_xticks(range(len(proxied)), proxied)
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"minimesh bench dataplane — {result['cluster']}, {result['params']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    js, png = out_dir / f"dataplane-{stamp}.json", out_dir / f"dataplane-{stamp}.png"
    js.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, png)
    return js, png
