"""The agent for real, in a network namespace per test: `python -m minimesh.agent proxy sidecar` as uid 1337
writes the bootstrap, runs the proxy, which gets its config from the real push server over gRPC ADS.

Readiness follows the first complete config; EDS changes arrive; a config the proxy cannot accept is
NACKed (syncz shows it) while the last good one keeps serving; the push server going away and coming back;
app probes; drain on SIGTERM; /quitquitquit; bad settings.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from agent_pod import POD_IP, PY, Pod, eventually

pytestmark = pytest.mark.cluster

DETAILS_IP = "10.96.0.20"


def service(name: str, ip: str, port: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
            "spec": {"clusterIP": ip, "selector": {"app": name}, "ports": [{"name": "http", "port": port}]}}


def endpoints(name: str, ips: list[str], port: int) -> dict[str, Any]:
    return {"metadata": {"name": f"{name}-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


def the_pod() -> dict[str, Any]:
    return {"metadata": {"name": "sleep-5d8b-x1", "namespace": "default", "labels": {"app": "sleep"}},
            "spec": {"containers": [{"name": "sleep", "image": "x"}]}, "status": {"podIP": POD_IP}}


def load_mesh(pilot: Any) -> None:
    pilot.send({"op": "apply", "kind": "Service", "obj": service("details", DETAILS_IP, 9080)},
               {"op": "apply", "kind": "EndpointSlice", "obj": endpoints("details", ["10.244.0.11"], 9080)},
               {"op": "apply", "kind": "Pod", "obj": the_pod()}, {"op": "push"})


def when(value: Any, test: Any) -> Any:
    """`value` if it passes `test`, else False (for eventually())."""
    return value if test(value) else False


def ready(pod: Pod) -> tuple[int, str]:
    return pod.curl("http://127.0.0.1:15021/healthz/ready")


def config_dump(pod: Pod, resource: str = "") -> dict[str, Any]:
    code, body = pod.curl("http://127.0.0.1:15000/config_dump" + (f"?resource={resource}" if resource else ""))
    assert code == 200, body
    return json.loads(body)


def details_endpoints(pod: Pod) -> list[str]:
    for c in config_dump(pod, "dynamic_endpoint_configs")["configs"]:
        ec = c["endpoint_config"]
        if ec["cluster_name"] == "outbound|9080||details.default.svc.cluster.local":
            return sorted(e["endpoint"]["address"]["socket_address"]["address"]
                          for loc in ec.get("endpoints", []) for e in loc["lb_endpoints"])
    raise AssertionError("no assignment for details")


def syncz(pod: Pod) -> list[dict[str, Any]]:
    code, body = pod.curl("http://127.0.0.1:15014/debug/syncz")
    assert code == 200, body
    return json.loads(body)


def stat(pod: Pod, name: str) -> str:
    return pod.curl(f"http://127.0.0.1:15000/stats?filter=^{name}$")[1].strip()


def test_config_from_the_push_server_nack_and_reconnect(pod: Pod) -> None:
    agent = pod.agent()
    agent.wait_for("started the proxy")
    # no push server yet: not ready, and the reason says so
    code, why = eventually(lambda: when(ready(pod), lambda r: "push server" in r[1]), what="a readiness reason")
    assert code == 503 and "PRE_INITIALIZING: not connected to the push server 127.0.0.1:15010" in why, why

    pilot = pod.pilot()
    load_mesh(pilot)
    eventually(lambda: ready(pod)[0] == 200, what="ready after the first complete config")
    dump = config_dump(pod)
    listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    names = sorted(x["name"] for x in listeners["dynamic_listeners"])
    assert {"virtualInbound", "virtualOutbound", "0.0.0.0_9080"} <= set(names), names
    assert all(x["active_state"]["version_info"] for x in listeners["dynamic_listeners"])
    assert [x["listener"]["name"] for x in listeners["static_listeners"]] == ["prometheus_stats"]
    assert details_endpoints(pod) == ["10.244.0.11"]
    [row] = syncz(pod)
    assert row["proxy"] == f"sidecar~{POD_IP}~sleep-5d8b-x1.default~default.svc.cluster.local"
    assert all(row[f"{t}_synced"] for t in ("cluster", "endpoint", "listener", "route")), row
    assert row["listener_version_acked"] == listeners["version_info"]
    # the proxy really listens where iptables would send traffic
    assert pod.curl("http://127.0.0.1:15090/stats/prometheus")[0] == 200

    # an endpoint change is an EDS push
    pilot.apply("EndpointSlice", endpoints("details", ["10.244.0.11", "10.244.0.12"], 9080))
    eventually(lambda: details_endpoints(pod) == ["10.244.0.11", "10.244.0.12"], what="EDS update")

    # a route the proxy cannot parse: NACKed, the last good routes stay, the push server records it
    routes_before = config_dump(pod, "dynamic_route_configs")
    pilot.apply("VirtualService", {"metadata": {"name": "bad", "namespace": "default", "resourceVersion": "1"},
                                   "spec": {"hosts": ["details"], "http": [{"match": [{"uri": {"regex": "/d/(\\d+"}}],
                                                                            "route": [{"destination": {"host": "details"}}]}]}})
    row = eventually(lambda: when(syncz(pod)[0], lambda r: "route_error" in r), what="a NACK in syncz")
    assert "bad regex '/d/(\\\\d+'" in row["route_error"] and row["route_nacks"] == 1
    assert config_dump(pod, "dynamic_route_configs") == routes_before
    assert ready(pod)[0] == 200
    assert stat(pod, "control_plane.rds.update_rejected") == "control_plane.rds.update_rejected: 1"
    metrics = pod.curl("http://127.0.0.1:15014/metrics")[1]
    assert 'pilot_total_xds_rejects_total{type="rds"} 1.0' in metrics

    # the push server goes away: the proxy keeps serving its config; it reconnects when one is back
    pilot.proc.stop()
    eventually(lambda: stat(pod, "control_plane.connected_state").endswith(": 0"), what="disconnected")
    assert ready(pod)[0] == 200 and details_endpoints(pod) == ["10.244.0.11", "10.244.0.12"]
    pilot = pod.pilot()
    load_mesh(pilot)
    eventually(lambda: len(syncz(pod)) == 1, timeout=30, what="the proxy to reconnect")
    eventually(lambda: details_endpoints(pod) == ["10.244.0.11"], what="the new server's config")
    assert stat(pod, "control_plane.connected_state").endswith(": 1")
    agent.stop()


def test_sigterm_drains_then_stops_and_quitquitquit_stops_now(pod: Pod) -> None:
    pilot = pod.pilot()
    load_mesh(pilot)
    agent = pod.agent("--termination-drain-duration", "1.5")
    eventually(lambda: ready(pod)[0] == 200, what="ready")
    proxy_pid = int(agent.output().split("started the proxy (pid ")[1].split(")")[0])
    agent.popen.send_signal(signal.SIGTERM)
    code, why = eventually(lambda: when(ready(pod), lambda r: r[0] == 503), timeout=5, what="draining")
    assert "draining" in why
    assert pod.curl("http://127.0.0.1:15000/ready")[1].strip() == "DRAINING"  # the proxy's health check failed
    assert agent.popen.wait(15) == 0
    assert "the proxy exited with code 0" in agent.output()
    assert subprocess.run(["kill", "-0", str(proxy_pid)], capture_output=True).returncode != 0

    agent = pod.agent("--termination-drain-duration", "30")
    eventually(lambda: ready(pod)[0] == 200, what="ready again")
    code, _ = pod.curl("http://127.0.0.1:15020/quitquitquit", "-X", "POST")
    assert code == 200
    assert agent.popen.wait(10) == 0  # no 30 s drain: /quitquitquit is "stop now"


def test_app_probes_run_inside_the_pod(pod: Pod) -> None:
    pilot = pod.pilot()
    load_mesh(pilot)
    app = pod.start([PY, "-m", "minimesh.apps.echo", "--port", "9080"], uid=1000, name="app")
    probers = {"/app-health/app/readyz": {"httpGet": {"path": "/health", "port": 9080}},
               "/app-health/app/livez": {"tcpSocket": {"port": 9080}}}
    pod.agent(env={"MESH_KUBE_APP_PROBERS": json.dumps(probers), "MESH_APP_CONTAINERS": "app"})
    eventually(lambda: pod.curl("http://127.0.0.1:15020/app-health/app/readyz")[0] == 200, what="app ready")
    assert pod.curl(f"http://{POD_IP}:15020/app-health/app/livez")[0] == 200  # the kubelet asks the pod IP
    app.stop()
    code, body = pod.curl("http://127.0.0.1:15020/app-health/app/readyz")
    assert code == 503 and "GET http://127.0.0.1:9080/health: Connection refused" in body, body


@pytest.mark.parametrize("env, extra, message", [
    ({"POD_NAME": ""}, (), "environment variable POD_NAME is not set"),
    ({"MESH_KUBE_APP_PROBERS": "{oops"}, (), "MESH_KUBE_APP_PROBERS: not JSON"),
    ({}, ("--discovery-address", "minimeshd"), "--discovery-address 'minimeshd': want host:port"),
    ({}, ("--config-path", "/proc/nope"), "cannot write the proxy bootstrap to /proc/nope/envoy-rev.json"),
])
def test_bad_settings_exit_1_naming_the_problem(env: dict[str, str], extra: tuple[str, ...], message: str) -> None:
    base = {"POD_NAME": "p", "POD_NAMESPACE": "default", "INSTANCE_IP": "10.0.0.1", "SERVICE_ACCOUNT": "sleep",
            "PYTHONPATH": _pythonpath()}
    argv = [PY, "-m", "minimesh.agent", "proxy", "sidecar", "--podinfo-path", "/nonexistent", *extra]
    if "--config-path" not in extra:
        argv += ["--config-path", "/proc/self/nope"] if message.startswith("cannot write") else []
    start = time.monotonic()
    r = subprocess.run(argv, env={**base, **env}, capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 1, r.stderr
    assert message in r.stderr, r.stderr
    assert time.monotonic() - start < 60


def _pythonpath() -> str:
    import os

    return os.environ.get("PYTHONPATH", "") or ":".join(sys.path)
