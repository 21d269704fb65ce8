"""Stage 4 end to end on a real local cluster: sleep → details through two sidecars whose proxies are
configured over xDS by minimeshd (no static config anywhere), both access logs showing the request.

The cluster runs the solved tree: `minimesh lab setup 00` and `04` as a trainee's notebook does, then the
pods' own logs (`kubectl logs -c minimesh-proxy`, the proxies' stdout access logs) are read back.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]
SOLVED = Path(os.environ.get("MINIMESH_SOLVED_ROOT", "."))


class Cluster:
    def __init__(self, name: str) -> None:
        self.name = name
        self.env = {**os.environ, "MINIMESH_CLUSTER": name, "MINIMESH_PROVIDER": "local", "PYTHONPATH": str(SOLVED),
                    "PYTHONSAFEPATH": "1", "COLUMNS": "200"}
        self._core: Any = None

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "minimesh", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=SOLVED)

    def ok(self, *args: str) -> str:
        res = self.run(*args)
        assert res.returncode == 0, f"minimesh {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        return res.stdout

    @property
    def core(self) -> Any:
        if self._core is None:
            from kubernetes import client

            from minimesh.cluster import provider

            self._core = client.CoreV1Api(provider.get("local", self.name).api_client())
        return self._core

    def exec(self, pod: str, argv: list[str], container: str, namespace: str = "default") -> Any:
        from minimesh.lab.grading import exec_in

        return exec_in(self.core, pod, argv, namespace=namespace, container=container, timeout=60)

    def meshed_pod(self, app: str) -> str:
        from minimesh.lab.grading import eventually, is_ready

        def find() -> str:
            pods = [p for p in self.core.list_namespaced_pod("default", label_selector=f"app={app}").items
                    if any(c.name == "minimesh-proxy" for c in p.spec.containers) and is_ready(p)]
            assert pods, f"no ready {app} pod with a sidecar yet"
            return str(pods[0].metadata.name)

        return eventually(find, timeout=300, interval=1)


@pytest.fixture
def cluster(need_root: None) -> Any:
    c = Cluster(f"xds{secrets.token_hex(3)}")
    try:
        res = c.run("cluster", "up", "--name", c.name)
        assert res.returncode == 0, f"cluster up failed:\n{res.stdout}\n{res.stderr}"
        yield c
    finally:
        down = c.run("cluster", "down", "--name", c.name, timeout=300)
        assert down.returncode == 0, f"cluster down {c.name}:\n{down.stdout}\n{down.stderr}"


def test_sleep_to_details_through_two_xds_configured_sidecars(cluster: Cluster) -> None:
    cluster.ok("lab", "setup", "00")
    cluster.ok("lab", "setup", "04")
    sleep, details = cluster.meshed_pod("sleep"), cluster.meshed_pod("details")

    # Each proxy's config came from the push server: dynamic resources with versions, node ids of their pods.
    for pod in (sleep, details):
        dump = json.loads(cluster.exec(pod, ["curl", "-s", "127.0.0.1:15000/config_dump"], "minimesh-proxy").stdout)
        node = dump["configs"][0]["bootstrap"]["node"]
        assert node["id"].startswith("sidecar~") and f"~{pod}.default~" in node["id"], node["id"]
        listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
        assert not [x for x in listeners["static_listeners"] if x["listener"]["name"] != "prometheus_stats"]
        dynamic = {x["name"]: x["active_state"]["version_info"] for x in listeners["dynamic_listeners"]}
        assert {"virtualOutbound", "virtualInbound", "0.0.0.0_9080"} <= set(dynamic) and all(dynamic.values()), dynamic

    from minimesh.lab.grading import eventually

    tries: list[str] = []

    def call() -> str:
        # Ready pods and ACKed listeners do not mean sleep's proxy has details' new endpoint yet (EDS follows
        # the EndpointSlice): the cluster settles, so ask until it answers; each try has its own tag.
        tag = secrets.token_hex(6)
        res = cluster.exec(sleep, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                   f"http://details:9080/details/0?e2e={tag}"], "sleep")
        tries.append(res.stdout)
        assert res.stdout == "200", (res.stdout, res.stderr)
        return tag

    tag = eventually(call, timeout=30, interval=1)
    print(f"answers until the first 200: {tries}")

    def access_line(pod: str) -> str:
        logs = cluster.ok("logs", pod, "-c", "minimesh-proxy")
        lines = [ln for ln in logs.splitlines() if f"e2e={tag}" in ln]
        assert len(lines) == 1, f"{pod}: want one access-log line for the request, got {lines}\n{logs[-2000:]}"
        return lines[0]

    outbound = eventually(lambda: access_line(sleep), timeout=20)
    inbound = eventually(lambda: access_line(details), timeout=20)
    assert '" 200 ' in outbound and "outbound|9080||details.default.svc.cluster.local" in outbound, outbound
    assert '" 200 ' in inbound and "inbound|9080||" in inbound and "127.0.0.1:9080" in inbound, inbound
    request_id = outbound.split('"')[7]  # the same x-request-id on both sides: one request, two hops
    assert request_id and request_id in inbound, (outbound, inbound)

    # the proxies' memory, for the report (budget: 40 MB per proxy process; measured, not asserted)
    for pod in (sleep, details):
        mem = json.loads(cluster.exec(pod, ["curl", "-s", "127.0.0.1:15000/memory"], "minimesh-proxy").stdout)
        print(f"{pod}: proxy RSS {int(mem['allocated']) / 2**20:.1f} MiB (peak {int(mem['max_rss']) / 2**20:.1f} MiB)")
