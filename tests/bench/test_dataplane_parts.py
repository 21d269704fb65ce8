"""The data-plane benchmark's parts that need no cluster: sidecar configs (checked by the real nginx, HAProxy
and minimesh parsers), /proc sampling of a real process, the closed-loop load against a real server, and the
pure result logic (ramp stop, served-all, added latency, targets, the table, the plot)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from minimesh.bench import closedloop, dataplane, procstat, sidecars
from minimesh.bench.dataplane_loopback import LoadSpec
from minimesh.proxy.config import parse_bootstrap

# ---- sidecar configs -------------------------------------------------------------------------------------


def test_minimesh_bootstraps_parse() -> None:
    client = parse_bootstrap(yaml.safe_load(sidecars.client_config("minimesh", "10.244.0.7", 8080)))
    server = parse_bootstrap(yaml.safe_load(sidecars.server_config("minimesh", 8080)))
    assert {lis.name for lis in client.listeners} == {"virtualOutbound", "0.0.0.0_8080"}
    assert client.clusters[0].name == "outbound|8080||bench-server"
    inbound = server.clusters[0]
    assert inbound.name == "inbound|8080||" and inbound.upstream_bind_address == "127.0.0.6"


def test_mtls_pair_is_strict_and_authorises() -> None:
    """The minimesh-mtls pair: the client presents bench-client's certificate and checks bench-server's SPIFFE
    id; the server has only the mTLS chain and the push server's RBAC filters (DENY, then ALLOW) with the
    client's identity, and normalises paths."""
    material = sidecars.new_mtls_material()
    client = parse_bootstrap(yaml.safe_load(sidecars.client_config(sidecars.MTLS, "10.244.0.7", 8080, material)))
    server = parse_bootstrap(yaml.safe_load(sidecars.server_config(sidecars.MTLS, 8080, material)))
    tls = client.clusters[0].transport_socket
    assert tls is not None and tls.sni == "outbound_.8080_._.bench-server"
    [chain] = next(lis for lis in server.listeners if lis.name == "virtualInbound").filter_chains
    assert chain.transport_socket is not None and chain.transport_socket.require_client_certificate
    assert chain.filter_chain_match.transport_protocol == "tls"
    hcm = chain.terminal.config
    assert hcm.normalize_path
    rbac = [f.config.to_dict()["rules"] for f in hcm.http_filters]
    assert [r.get("action", "ALLOW") for r in rbac] == ["DENY", "ALLOW"]
    assert "spiffe://cluster.local/ns/bench/sa/bench-client" in json.dumps(rbac[1])
    assert material["root"] in yaml.safe_load(sidecars.server_config(sidecars.MTLS, 8080, material))[
        "static_resources"]["listeners"][1]["filter_chains"][0]["transport_socket"]["typed_config"][
        "common_tls_context"]["validation_context"]["trusted_ca"]["inline_string"]


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")
@pytest.mark.parametrize("role", ["client", "server"])
def test_nginx_configs_are_valid(tmp_path: Path, role: str) -> None:
    text = (sidecars.client_config("nginx", "10.244.0.7", 8080) if role == "client"
            else sidecars.server_config("nginx", 8080))
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    res = subprocess.run(["nginx", "-t", "-e", "stderr", "-c", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert ("listen 15001" if role == "client" else "proxy_bind 127.0.0.6") in text


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")
@pytest.mark.parametrize("role", ["client", "server"])
def test_haproxy_configs_are_valid(tmp_path: Path, role: str) -> None:
    text = (sidecars.client_config("haproxy", "10.244.0.7", 8080) if role == "client"
            else sidecars.server_config("haproxy", 8080))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    res = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ("bind :15001" if role == "client" else "source 127.0.0.6") in text


def test_unknown_sidecar_is_refused() -> None:
    with pytest.raises(ValueError, match="envoy"):
        sidecars.sidecar("envoy")


def test_pods_carry_capture_proxy_and_meter() -> None:
    sc = sidecars.sidecar("nginx")
    pod = dataplane.pod_manifest("nginx", "client", sc)
    spec = pod["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["minimesh-init"]
    assert spec["initContainers"][0]["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    users = {c["name"]: c["securityContext"]["runAsUser"] for c in spec["containers"]}
    assert users == {"loadgen": 1000, "proxy": 1337, "meter": 1337}  # the meter reads the proxy's /proc
    assert spec["shareProcessNamespace"] is True
    direct = dataplane.pod_manifest("direct", "server", None)["spec"]
    assert "initContainers" not in direct and [c["name"] for c in direct["containers"]] == ["echo"]


# ---- /proc sampling ----------------------------------------------------------------------------------------


def test_parse_stat_and_status() -> None:
    stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0"
    assert procstat.parse_stat(stat) == (250, 50)
    assert procstat.parse_status("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n") == {"VmRSS": 1024, "VmHWM": 2048}
    assert procstat.parse_status("Name:\tzombie\n") == {"VmRSS": 0, "VmHWM": 0}


def test_scan_finds_a_busy_process_in_this_network_namespace() -> None:
    marker = f"procstat-probe-{time.monotonic_ns()}"
    code = f"import time\n# {marker}\nend = time.time() + 30\nwhile time.time() < end: pass"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.5)
        first = procstat.scan(marker)
        time.sleep(0.5)
        second = procstat.scan(marker)
    finally:
        proc.kill()
        proc.wait()
    assert [p["pid"] for p in second["processes"]] == [proc.pid]
    assert second["cpu_s"] > first["cpu_s"] > 0
    assert second["peak_rss_mb"] >= second["rss_mb"] > 0
    assert procstat.scan("no-such-process-" + marker)["processes"] == []


# ---- closed loop against a real server -----------------------------------------------------------------------


def test_closed_loop_counts_answers_of_a_real_server() -> None:
    async def main() -> closedloop.ClosedLoopResult:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    status = b"503 Service Unavailable" if b"POST /fail" in head else b"200 OK"
                    writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n\r\nok")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            ok = await closedloop.run("127.0.0.1", port, 2, 0.5, body_size=64, warmup=0.1)
            bad = await closedloop.run("127.0.0.1", port, 1, 0.3, body_size=0, path="/fail", warmup=0.1)
        return ok, bad  # type: ignore[return-value]

    ok, bad = asyncio.run(main())  # type: ignore[misc]
    assert ok.completed > 50 and ok.errors == 0 and ok.non_2xx == 0 and ok.rate == ok.completed / 0.5
    assert bad.completed > 0 and bad.non_2xx == bad.completed


# ---- results -------------------------------------------------------------------------------------------------


def test_ramp_stops_when_the_rate_stops_growing() -> None:
    assert not dataplane.ramp_finished([1000])
    assert not dataplane.ramp_finished([1000, 2000])
    assert dataplane.ramp_finished([1000, 2000, 2050])
    assert dataplane.ramp_finished([1000, 900])


def test_served_all_needs_every_measured_request() -> None:
    spec = LoadSpec(rate=100, duration=2, warmup=1)
    good = {"errors": 0, "non_2xx": 0, "completed": 200}
    assert dataplane.served_all(good, spec)
    assert not dataplane.served_all({**good, "completed": 150}, spec)
    assert not dataplane.served_all({**good, "non_2xx": 1}, spec)
    assert not dataplane.served_all({**good, "errors": 1}, spec)


def test_proxy_usage_normalises_cpu_per_1000_requests() -> None:
    before = {"cpu_s": 1.0, "processes": [{}], "rss_mb": 20.0, "peak_rss_mb": 21.0}
    after = {"cpu_s": 4.0, "processes": [{}], "rss_mb": 25.0, "peak_rss_mb": 30.0}
    usage = dataplane.proxy_usage(before, after, requests=10000, seconds=10)
    assert usage["vcpu_per_1000rps"] == 0.3 and usage["cpu_vcpu"] == 0.3 and usage["peak_rss_mb"] == 30.0


def _topology(p50: float, p90: float, p99: float, proxies: dict[str, Any] | None = None) -> dict[str, Any]:
    load = {"target_rate": 1000, "achieved_rate": 1000, "sent": 22000, "completed": 20000, "errors": 0, "non_2xx": 0,
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "p999": p99, "max": p99, "mean": p50},
            "service_ms": {}, "generator_lag_ms": {}}
    t: dict[str, Any] = {"load": load, "served_all": True, "max_sustained": {"max_rate": 3000.0, "steps": []}}
    if proxies:
        t["proxies"] = proxies
    return t


def _usage(cpu: float, rss: float) -> dict[str, Any]:
    return {"cpu_s": 1.0, "cpu_vcpu": cpu, "vcpu_per_1000rps": cpu, "processes": 1, "rss_mb": rss, "peak_rss_mb": rss}


def test_summary_table_and_plot(tmp_path: Path) -> None:
    result = {"cluster": "local cluster t", "params": {**dataplane.asdict(dataplane.Options()), "cpus": 2},
              "topologies": {"direct": _topology(1.0, 2.0, 4.0),
                             "minimesh": _topology(1.5, 2.8, 6.0, {"client": _usage(0.2, 30), "server": _usage(0.25, 31)}),
                             "minimesh-mtls": _topology(1.9, 3.7, 7.0, {"client": _usage(0.3, 33), "server": _usage(0.35, 34)}),
                             "nginx": {"error": "pod srv-nginx: container proxy exited (1)"}}}
    out = dataplane.summarise(result)
    assert out["topologies"]["minimesh"]["added_latency_ms"] == {"p50": 0.5, "p90": 0.8, "p99": 2.0}
    assert out["targets"] == {"p90_added_ms<=1": True, "rss_mb<=40": True, "vcpu_per_1000rps<=0.3": True,
                              "mtls_authz_p90_added_ms<=1.5": False}
    text = dataplane.table(out)
    assert "p90 added 1.70 ms <= 1.5 ms  MISSED" in text
    assert "0.200 / 0.250" in text and "30.0 / 31.0" in text and "failed: pod srv-nginx" in text
    assert "Istio publishes ~2.7 ms" in text
    js, png = dataplane.save(out, tmp_path)
    assert json.loads(js.read_text())["targets"] == out["targets"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_options_are_checked() -> None:
    with pytest.raises(dataplane.BenchError, match="--only envoy"):
        dataplane.Options(only=("envoy",))
    with pytest.raises(dataplane.BenchError, match="--rate"):
        dataplane.Options(rate=0)
    assert dataplane.Options(only=("haproxy",)).topologies == ("direct", "haproxy")
