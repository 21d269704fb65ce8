"""`minimesh demo`: the finished mesh, end to end, on a local cluster — what the labs build, in 2 minutes.

It runs the reference solutions (the solved tree), whatever state the trainee's own code is in, so it is
also the quickest way to check a machine. Each step prints what it does, the command a person would
type, and what came back:

1. preflight (`minimesh doctor`)                       5. one request through two sidecars (access logs)
2. a local cluster (`minimesh cluster up`)             6. mTLS: `GET /details` on the wire, then only TLS
3. the control plane (`minimesh install`)              7. AuthorizationPolicy: only GET /details* from
4. bookinfo-lite + sleep, injected                        productpage; everyone else gets 403
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from minimesh import paths

console = Console()
DEMO_CLUSTER = "demo"
DEPLOYMENTS = ("details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1", "sleep")


class DemoError(RuntimeError):
    pass


# ---- running on the reference solutions ------------------------------------------------------------
def running_solved_tree() -> bool:
    return paths.SOURCE_ROOT.name.startswith("solved.")


def reexec_on_solved_tree(argv: list[str]) -> None:
    """Build `.minimesh/solved` and run the demo from it: pods of the cluster run that same tree."""
    from minimesh.lab.trees import build_solved_tree

    root = build_solved_tree(paths.SOURCE_ROOT)
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONSAFEPATH": "1"}
    os.chdir("/")
    os.execve(sys.executable, [sys.executable, "-m", "minimesh", "demo", *argv], env)


# ---- presentation ------------------------------------------------------------------------------------
class Steps:
    def __init__(self, total: int) -> None:
        self.total = total
        self.n = 0
        self.t0 = time.monotonic()

    def step(self, title: str, command: str, why: str) -> None:
        self.n += 1
        console.print()
        console.rule(f"[bold cyan]{self.n}/{self.total}  {title}")
        console.print(f"[dim]{why}[/]")
        console.print(f"[bold]$ {command}[/]")

    def ok(self, text: str) -> None:
        console.print(f"[green]✔[/] {text}")


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 300, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    with console.status(f"waiting for {what}"):
        while time.monotonic() < deadline:
            try:
                result = fn()
                if result:
                    return result
                last = result
            except Exception as e:
                last = e
            time.sleep(interval)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# ---- the steps -----------------------------------------------------------------------------------------
class Demo:
    def __init__(self, name: str) -> None:
        self.name = name
        os.environ["MINIMESH_CLUSTER"] = name
        os.environ["MINIMESH_PROVIDER"] = "local"
        self._api: Any = None

    @property
    def api(self) -> Any:
        if self._api is None:
            from minimesh.cluster import provider

            self._api = provider.get("local", self.name).api_client()
        return self._api

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def pod(self, app: str) -> str:
        pods = self.core.list_namespaced_pod("default", label_selector=f"app={app}").items
        running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        if not running:
            raise DemoError(f"no running pod with app={app}")
        return running[0].metadata.name

    def curl(self, pod: str, url: str, *, method: str = "GET", container: str | None = None,
             headers: tuple[str, ...] = ()) -> tuple[int, str]:
        from minimesh.k8s.stream import exec_in_pod

        argv = ["curl", "-s", "-X", method, "-o", "/dev/stderr", "-w", "%{http_code}", "--max-time", "10"]
        for h in headers:
            argv += ["-H", h]
        res = exec_in_pod(self.core, "default", pod, [*argv, url], container=container, timeout=30)
        code = int(res.stdout.strip() or 0)
        return code, res.stderr

    # 1
    def preflight(self) -> None:
        from minimesh import doctor

        checks = doctor.run_checks("local")
        bad = [c for c in checks if c.failed_required]
        for c in checks:
            if not c.ok and not c.skipped:
                console.print(f"  [yellow]![/] {c.name}: {c.detail}" + (f" — {c.fix}" if c.fix else ""))
        if bad:
            raise DemoError("preflight failed: " + "; ".join(f"{c.name}: {c.fix or c.detail}" for c in bad))

    # 2
    def cluster(self) -> str:
        from minimesh.cluster.local import lifecycle

        result = lifecycle.up(self.name, progress=lambda m: None)
        return f"cluster {self.name!r} ready in {result.seconds:.1f}s (kubectl context minimesh-{self.name})"

    # 3
    def install(self) -> None:
        from minimesh.install import installer

        installer.install(self.api, report=lambda line: console.print(f"  [dim]{line}[/]"))

    # 4
    def deploy(self) -> None:
        from kubernetes import client

        from minimesh.k8s.manifests import apply_all, load_documents

        self.core.patch_namespace("default", {"metadata": {"labels": {"minimesh-injection": "enabled"}}})
        docs = load_documents(paths.MANIFESTS / "bookinfo.yaml") + load_documents(paths.MANIFESTS / "sleep.yaml")
        for applied in apply_all(self.api, docs):
            console.print(f"  [dim]{applied}[/]")
        apps = client.AppsV1Api(self.api)

        def all_ready() -> bool:
            return all((apps.read_namespaced_deployment(d, "default").status.ready_replicas or 0) >= 1
                       for d in DEPLOYMENTS)

        wait_for("bookinfo-lite and sleep to be ready (2/2: app + minimesh-proxy)", all_ready, timeout=600)

    # 5
    def call(self) -> str:
        import uuid

        sleep = self.pod("sleep")
        request_id = f"demo-{uuid.uuid4().hex[:12]}"  # productpage propagates it to details, as Bookinfo does
        code, body = self.curl(sleep, "http://productpage:9080/productpage", container="sleep",
                               headers=(f"x-request-id: {request_id}",))
        if code != 200 or "Book Details" not in body:
            raise DemoError(f"productpage answered {code}; want 200 with the details block")
        for app in ("sleep", "productpage", "details"):
            pod = self.pod(app)

            def logged(pod: str = pod) -> str:
                log = self.core.read_namespaced_pod_log(pod, "default", container="minimesh-proxy", tail_lines=200)
                return next((ln for ln in log.splitlines() if request_id in ln), "")

            line = wait_for(f"{app}'s sidecar to log the request", logged, timeout=10, interval=0.3)
            console.print(f"  [dim]{app:11}[/] {line[:160]}")
        return f"one request ({request_id}) crossed four sidecars; each logged it with its response flags"

    # 6
    def mtls(self) -> Table:
        from minimesh.capture.analyse import analyse_pcap
        from minimesh.capture.pod import pod_capture
        from minimesh.cluster import provider
        from minimesh.security.evidence import summarize

        cluster = provider.get("local", self.name)
        details, sleep = self.pod("details"), self.pod("sleep")
        table = Table("PeerAuthentication on details", "what tcpdump saw on details' port 9080")
        for mode in ("DISABLE", "STRICT"):
            self._peer_auth(mode)
            # the push reaches both proxies within a debounce; wait until traffic flows in the new mode
            wait_for(f"details in {mode} mode", lambda: self.curl(sleep, "http://productpage:9080/productpage",
                                                                   container="sleep")[0] == 200, timeout=60)
            with pod_capture(cluster, self.core, "default", details,
                             bpf_filter="tcp port 9080 and not net 127.0.0.0/8") as cap:
                time.sleep(0.5)
                for _ in range(3):
                    self.curl(sleep, "http://productpage:9080/productpage", container="sleep")
                time.sleep(0.5)
            ev = summarize(analyse_pcap(cap.path), 9080)
            want_plain = mode == "DISABLE"
            if want_plain and not ev.plaintext_requests:
                raise DemoError(f"{mode}: expected plaintext GET /details on the wire, saw {ev}")
            if not want_plain and not ev.encrypted_only:
                raise DemoError(f"{mode}: expected only mesh TLS on the wire, saw {ev}")
            table.add_row(mode, str(ev))
        return table

    def _peer_auth(self, mode: str) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {"apiVersion": "security.minimesh.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": "details-demo", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "details"}}, "mtls": {"mode": mode}}}
        args = ("security.minimesh.io", "v1", "default", "peerauthentications")
        try:
            self.custom.replace_namespaced_custom_object(
                *args, "details-demo", {**body, "metadata": {**body["metadata"], "resourceVersion":
                    self.custom.get_namespaced_custom_object(*args, "details-demo")["metadata"]["resourceVersion"]}})
        except ApiException as e:
            if e.status != 404:
                raise
            self.custom.create_namespaced_custom_object(*args, body)

    # 7
    def authz(self) -> Table:
        from minimesh.k8s.manifests import apply_all, load_documents

        for applied in apply_all(self.api, load_documents(paths.MANIFESTS / "lab07" / "bookinfo-authz.yaml")):
            console.print(f"  [dim]{applied}[/]")
        sleep, productpage = self.pod("sleep"), self.pod("productpage")
        cases = [
            ("productpage", productpage, "productpage", "GET", "http://details:9080/details/0", 200),
            ("productpage", productpage, "productpage", "POST", "http://details:9080/details/0", 403),
            ("productpage", productpage, "productpage", "GET", "http://details:9080/health", 403),
            ("sleep", sleep, "sleep", "GET", "http://details:9080/details/0", 403),
            ("sleep", sleep, "sleep", "GET", "http://productpage:9080/productpage", 200),
        ]
        table = Table("caller (identity)", "request", "want", "got")

        def settled() -> bool:
            return all(self.curl(pod, url, method=m, container=c)[0] == want for _, pod, c, m, url, want in cases)

        wait_for("the AuthorizationPolicies to reach details' sidecar", settled, timeout=60)
        for who, pod, container, method, url, want in cases:
            code, body = self.curl(pod, url, method=method, container=container)
            shown = f"{code}" + (f" {body.strip()}" if code == 403 else "")
            table.add_row(f"{who} (cluster.local/ns/default/sa/{'bookinfo-' if who == 'productpage' else ''}{who})",
                          f"{method} {url.removeprefix('http://')}", str(want), shown)
        return table


def run(name: str = DEMO_CLUSTER) -> None:
    demo = Demo(name)
    steps = Steps(7)
    console.print(Panel.fit(
        "[bold]minimesh demo[/]: the finished mesh on a local cluster.\n"
        "Everything is real: network namespaces, iptables, TLS, tcpdump.\n"
        f"The labs (make lab) build each piece. Code: {paths.SOURCE_ROOT}",
        border_style="cyan"))
    steps.step("Preflight", "minimesh doctor", "Root, kernel features, iptables, tcpdump: tried for real.")
    demo.preflight()
    steps.ok("this machine can run the local cluster")

    steps.step("A local cluster", f"minimesh cluster up --name {name}",
               "A node network namespace, a Kubernetes API server on loopback, a kubelet, kube-proxy and DNS.")
    steps.ok(demo.cluster())

    steps.step("The mesh control plane", "minimesh install",
               "minimeshd in mesh-system: the xDS push server, the injection webhook and the CA.")
    demo.install()
    steps.ok("minimeshd is ready; the webhook injects pods in labelled namespaces")

    steps.step("bookinfo-lite, injected",
               "kubectl label ns default minimesh-injection=enabled && minimesh apply -f minimesh/manifests/bookinfo.yaml",
               "Each pod gets minimesh-init (iptables) and minimesh-proxy (the sidecar) from the webhook.")
    demo.deploy()
    steps.ok("7 workloads ready, each with its sidecar")

    steps.step("One request through the sidecars",
               "minimesh exec deploy/sleep -c sleep -- curl productpage:9080/productpage",
               "sleep → its sidecar → productpage's sidecar → productpage → details/reviews, all via proxies.")
    steps.ok(demo.call())

    steps.step("mTLS, proved with tcpdump", "minimesh capture <details pod> --filter 'tcp port 9080'",
               "First with mTLS disabled for details, then STRICT: the sniffer on details' pod sees the difference.")
    console.print(demo.mtls())
    steps.ok("with STRICT, only TLS records with the mesh ALPN cross the wire")

    steps.step("AuthorizationPolicy: only GET /details* from productpage",
               "minimesh apply -f minimesh/manifests/lab07/bookinfo-authz.yaml",
               "deny-all in default, then allow what bookinfo needs; details accepts only productpage's GETs.")
    console.print(demo.authz())
    steps.ok("details answers productpage's GET and refuses everything else with 403 RBAC: access denied")

    console.print()
    console.print(Panel.fit(
        f"Done in {time.monotonic() - steps.t0:.0f}s. The cluster is still running — look around:\n"
        f"  kubectl get pods -A                       (context minimesh-{name})\n"
        "  minimesh logs deploy/details-v1 -c minimesh-proxy\n"
        "  minimesh exec deploy/sleep -c sleep -- curl -s details:9080/details/0\n"
        f"Remove it with: minimesh cluster down --name {name}\n"
        "Build it yourself: make lab",
        title="✔ the mesh works", border_style="green"))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not running_solved_tree():
        reexec_on_solved_tree(argv)
    name = argv[argv.index("--name") + 1] if "--name" in argv else DEMO_CLUSTER
    try:
        run(name)
    except DemoError as e:
        console.print(f"[red]✘ {e}[/]")
        console.print(f"The cluster is left as it is for a look (kubectl context minimesh-{name});"
                      f" remove it with: minimesh cluster down --name {name}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
