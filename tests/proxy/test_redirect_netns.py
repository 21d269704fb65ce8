"""A real iptables REDIRECT in a throwaway network namespace: the virtual outbound listener reads the
original destination with SO_ORIGINAL_DST and hands the connection to the per-port listener, or passes it
through (ALLOW_ANY) / drops it (REGISTRY_ONLY)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

SERVER = r"""
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"server": self.server.server_address[1], "path": self.path,
                           "client": self.client_address[0]}).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
import threading
servers = [http.server.ThreadingHTTPServer(("0.0.0.0", p), H) for p in (8080, 8081)]
for s in servers[1:]: threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
servers[0].serve_forever()
"""

CLIENT = r"""
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status, r.read().decode())
except Exception as e:
    print("error", type(e).__name__, e)
"""


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True)


def boot(policy: str) -> dict[str, Any]:
    def a(host: str, port: int) -> dict[str, Any]:
        return {"socket_address": {"address": host, "port_value": port}}
    return {
        "node": {"id": "netns-test"}, "admin": {"address": a("127.0.0.1", 0)},
        "minimesh": {"outbound_traffic_policy": policy},
        "static_resources": {
            "clusters": [{"name": "inbound|8082||", "connect_timeout": "1s",
                          "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
                          "load_assignment": {"cluster_name": "inbound|8082||", "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": a("127.0.0.1", 8080)}}]}]}},
                         {"name": "outbound|8080||svc", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": "outbound|8080||svc",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": a("10.77.0.1", 8080)}}]}]}}],
            "listeners": [
                {"name": "virtualInbound", "address": a("0.0.0.0", 15006), "traffic_direction": "INBOUND",
                 "listener_filters": [{"name": "envoy.filters.listener.original_dst"}],
                 "filter_chains": [{"filter_chain_match": {"destination_port": 8082}, "filters": [{
                     "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                         "stat_prefix": "inbound_0.0.0.0_8082", "http_filters": [{"name": "envoy.filters.http.router"}],
                         "route_config": {"name": "inbound|8082", "virtual_hosts": [{"name": "in", "domains": ["*"], "routes": [
                             {"match": {"prefix": "/"}, "route": {"cluster": "inbound|8082||"}}]}]}}}]}]},
                {"name": "virtualOutbound", "address": a("0.0.0.0", 15001), "use_original_dst": True,
                 "traffic_direction": "OUTBOUND", "filter_chains": []},
                {"name": "0.0.0.0_8080", "address": a("0.0.0.0", 8080), "bind_to_port": False,
                 "traffic_direction": "OUTBOUND", "filter_chains": [{"filters": [{
                     "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                         "stat_prefix": "outbound_0.0.0.0_8080", "http_filters": [{"name": "envoy.filters.http.router"}],
                         "route_config": {"name": "8080", "virtual_hosts": [{"name": "svc", "domains": ["*"], "routes": [
                             {"match": {"prefix": "/"}, "route": {"cluster": "outbound|8080||svc"}}]}]}}}]}]},
            ]}}


@pytest.fixture
def netns(need_root: None) -> Any:
    name = f"mmtest-proxy-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", "10.77.0.1/32", "dev", "lo")  # the "service" address
        # only uid 1000's outbound TCP is captured (the proxy runs as root, like uid 1337 in the mesh)
        sh("ip", "netns", "exec", name, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.77.0.1",
           "-m", "owner", "--uid-owner", "1000", "-j", "REDIRECT", "--to-ports", "15001")
        # uid 1001 plays a client in another pod: its connections land on the inbound listener
        sh("ip", "netns", "exec", name, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.77.0.1",
           "-m", "owner", "--uid-owner", "1001", "-j", "REDIRECT", "--to-ports", "15006")
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _start(ns: str, args: list[str], ready: str, stream: str = "stdout") -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pipe = p.stdout if stream == "stdout" else p.stderr
    assert pipe is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = pipe.readline()
        if ready in line:
            return p, line
        if not line and p.poll() is not None:
            break
    p.kill()
    raise AssertionError(f"{args} did not start: {p.stderr.read() if p.stderr else ''}")


def _client(ns: str, url: str, uid: int = 1000) -> str:
    cmd = ["ip", "netns", "exec", ns]
    if uid:
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    return subprocess.run([*cmd, sys.executable, "-c", CLIENT, url], capture_output=True, text=True, timeout=20).stdout


@pytest.mark.parametrize("policy", ["ALLOW_ANY", "REGISTRY_ONLY"])
def test_redirected_traffic_goes_through_the_proxy(netns: str, tmp_path: Path, policy: str) -> None:
    server, _ = _start(netns, [sys.executable, "-c", SERVER], "ready")
    b = boot(policy)
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(b))
    # the solved tree comes with PYTHONPATH (tests/conftest.py); `ip netns exec` keeps the environment
    proxy, line = _start(netns, [sys.executable, "-m", "minimesh.proxy", "--bootstrap", str(path)], "admin on",
                         stream="stderr")
    admin = int(re.search(r"admin on [\d.]+:(\d+)", line).group(1))  # type: ignore[union-attr]
    try:
        out = _client(netns, "http://10.77.0.1:8080/through")
        assert out.startswith("200 ") and json.loads(out[4:]) == {"server": 8080, "path": "/through", "client": "10.77.0.1"}
        # inbound: the filter chain for destination port 8082, then the app on 127.0.0.1 from 127.0.0.6
        out = _client(netns, "http://10.77.0.1:8082/in", uid=1001)
        assert out.startswith("200 ") and json.loads(out[4:]) == {"server": 8080, "path": "/in", "client": "127.0.0.6"}
        out = _client(netns, "http://10.77.0.1:8081/elsewhere")
        if policy == "ALLOW_ANY":
            assert out.startswith("200 ") and json.loads(out[4:])["server"] == 8081
        else:
            assert out.startswith("error"), out
        log = _client(netns, f"http://127.0.0.1:{admin}/access_log?format=json", uid=0)
        entries = json.loads(log[4:])
        http = [e for e in entries if e["method"] == "GET"]
        assert http[1]["path"] == "/in" and http[1]["downstream_local_address"] == "10.77.0.1:8082"
        assert http[0]["path"] == "/through" and http[0]["downstream_local_address"] == "10.77.0.1:8080"
        assert http[0]["upstream_cluster"] == "outbound|8080||svc"
        tcp = [e for e in entries if e["method"] is None]
        want = "PassthroughCluster" if policy == "ALLOW_ANY" else "BlackHoleCluster"
        assert tcp and tcp[0]["upstream_cluster"] == want and tcp[0]["downstream_local_address"] == "10.77.0.1:8081"
        # root's traffic is not captured: straight to the server
        assert _client(netns, "http://10.77.0.1:8081/direct", uid=0).startswith("200 ")
    finally:
        for p in (proxy, server):
            p.kill()
            p.wait()
