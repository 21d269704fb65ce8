"""Data-plane benchmark on loopback: client -> proxy A (outbound) -> proxy B (inbound) -> upstream, against
client -> upstream directly.

The harness does not know the topology:
  * `run_load(host, port, spec)` — an open-loop load generator in its own process: requests are due at a
    constant rate over N keep-alive connections; each latency is measured from the request's INTENDED send
    time, so a stalled proxy cannot hide its queueing (no coordinated omission). Service time (actual send
    to response) is reported too.
  * `ProcessMeter(pids)` — CPU seconds (psutil) and peak RSS (VmHWM) of the processes under test.
  * A topology is anything with `start() -> (host, port)`, `pids()`, `stop()`: `Direct` and `MinimeshPair`
    here; nginx/HAProxy pairs can be added with the same three methods and measured the same way.

`python -m minimesh.bench.dataplane_loopback [--rate 1000] [--connections 16] [--duration 10] [--body 1024]
[--proxy-loop uvloop|asyncio] [--max-rate] [--json FILE]` prints a table and optionally writes JSON.
Subcommands used internally: `upstream` (the 1 KB HTTP server) and `loadgen` (one load run, JSON on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

LOOPBACK = "127.0.0.1"


NICE = [0]  # niceness of every benchmark process (upstream, proxies, load generator); see --nice


def _set_nice() -> None:
    if NICE[0]:
        os.setpriority(os.PRIO_PROCESS, 0, NICE[0])


def child_env() -> dict[str, str]:
    """Children run the same tree as this process (the solved tree when started from it)."""
    import minimesh

    root = str(Path(minimesh.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
            "PYTHONSAFEPATH": "1"}


# --- the upstream: a small, fast HTTP/1.1 server (1 KB answers, keep-alive) -------------------------------
def serve_upstream(port: int, body_size: int) -> None:
    import httptools
    import uvloop

    body = b"u" * body_size
    response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n"
                % body_size) + body

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.p = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            try:
                self.p.feed_data(data)
            except httptools.HttpParserError:
                self.t.close()

        def on_message_complete(self) -> None:
            self.t.write(response)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Conn, LOOPBACK, port, backlog=1024)
        print(f"upstream listening on {server.sockets[0].getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    uvloop.run(main())


# --- the load generator --------------------------------------------------------------------------------
@dataclass
class LoadSpec:
    rate: float = 1000.0  # requests per second, constant
    connections: int = 16
    duration: float = 10.0  # measured seconds
    warmup: float = 1.0  # seconds sent but not measured
    body_size: int = 1024  # request body (POST)
    path: str = "/"
    host_header: str = "upstream"


@dataclass
class LoadResult:
    target_rate: float
    achieved_rate: float
    sent: int
    completed: int
    errors: int
    non_2xx: int
    latency_ms: dict[str, float]  # from the intended send time (coordinated-omission free)
    service_ms: dict[str, float]  # from the actual send time
    generator_lag_ms: dict[str, float]  # how late the generator itself sent (timer granularity)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, int(p * len(v)))], 3)

    return {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": round(v[-1], 3),
            "mean": round(sum(v) / len(v), 3)}


async def _load(host: str, port: int, spec: LoadSpec) -> LoadResult:
    import httptools

    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    body = b"b" * spec.body_size
    request = (f"POST {spec.path} HTTP/1.1\r\nhost: {spec.host_header}\r\nuser-agent: minimesh-bench\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
    lat: list[float] = []
    svc: list[float] = []
    lag: list[float] = []
    state = {"completed": 0, "errors": 0, "non_2xx": 0}
    measure_from = [0.0]
    backlog: list[float] = []
    free: list[Client] = []
    done = asyncio.Event()
    total = int(spec.rate * (spec.duration + spec.warmup))

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.intended = 0.0
            self.sent = 0.0
            self.status = 0
            self.t: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport  # type: ignore[assignment]

        def send(self, intended: float) -> None:
            self.intended = intended
            self.sent = clock()
            if self.t is None or self.t.is_closing():  # the server closed this connection: count, move on
                state["errors"] += 1
                finished[0] += 1
                if finished[0] >= total:
                    done.set()
                return
            self.t.write(request)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                state["errors"] += 1
                self._finish()

        def on_headers_complete(self) -> None:
            self.status = self.parser.get_status_code()

        def on_message_complete(self) -> None:
            now = clock()
            if self.intended >= measure_from[0]:
                lat.append((now - self.intended) * 1000)
                svc.append((now - self.sent) * 1000)
                lag.append((self.sent - self.intended) * 1000)
                state["completed"] += 1
                if not 200 <= self.status < 300:
                    state["non_2xx"] += 1
            self._finish()

        def _finish(self) -> None:
            if backlog:
                self.send(backlog.pop(0))
            else:
                free.append(self)
            finished[0] += 1
            if finished[0] >= total:
                done.set()

        def connection_lost(self, exc: Exception | None) -> None:
            if not done.is_set():
                state["errors"] += 1
                finished[0] += 1
                if finished[0] >= total:
                    done.set()

    finished = [0]
    clients = []
    for _ in range(spec.connections):
        _, c = await loop.create_connection(Client, host, port)
        clients.append(c)
        free.append(c)
    start = clock() + 0.05
    measure_from[0] = start + spec.warmup
    interval = 1.0 / spec.rate
    i = 0
    while i < total:
        now = clock()
        while i < total and start + i * interval <= now:
            due = start + i * interval
            if free:
                free.pop().send(due)
            else:
                backlog.append(due)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i * interval - clock()))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await done.wait()
    for c in clients:
        if c.t is not None:
            c.t.close()
    measured = state["completed"]
    return LoadResult(spec.rate, round(measured / spec.duration, 1), total, measured, state["errors"],
                      state["non_2xx"], _percentiles(lat), _percentiles(svc), _percentiles(lag))


def loadgen_main(host: str, port: int, spec: LoadSpec) -> None:
    import uvloop

    result = uvloop.run(_load(host, port, spec))
    print(json.dumps(asdict(result)))


def run_load(host: str, port: int, spec: LoadSpec) -> LoadResult:
    """One load run in a separate process (so the generator does not share a GIL with what it measures)."""
    cmd = [sys.executable, "-m", "minimesh.bench.dataplane_loopback", "loadgen", "--host", host, "--port", str(port),
           "--spec", json.dumps(asdict(spec))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=spec.duration + spec.warmup + 60, check=True,
                         env=child_env(), preexec_fn=_set_nice)
    return LoadResult(**json.loads(out.stdout.strip().splitlines()[-1]))


# --- measuring processes -------------------------------------------------------------------------------
def _vmhwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class ProcessMeter:
    """CPU time used by some processes between start() and stop(), and their peak RSS."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.t0 = 0.0
        self.cpu0: dict[str, float] = {}

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            t = p.cpu_times()
            out[name] = t.user + t.system
        return out

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = self._cpu()

    def stop(self) -> dict[str, dict[str, float]]:
        wall = time.monotonic() - self.t0
        cpu = self._cpu()
        return {name: {"cpu_vcpu": round((cpu[name] - self.cpu0[name]) / wall, 4),
                       "rss_mb": round(p.memory_info().rss / 2**20, 2), "peak_rss_mb": round(_vmhwm(p.pid) / 2**20, 2)}
                for name, p in self.procs.items()}


# --- topologies ----------------------------------------------------------------------------------------
class Topology(Protocol):
    name: str

    def start(self) -> tuple[str, int]: ...

    def pids(self) -> dict[str, int]:
        """Processes whose CPU and memory are reported (the proxies; not the upstream)."""
        ...

    def stop(self) -> None: ...


def _spawn(cmd: list[str], ready: str, *, stream: str = "stdout", env: dict[str, str] | None = None,
           stdout_to_null: bool = False) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL if stdout_to_null else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or child_env(), preexec_fn=_set_nice)
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    assert pipe is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        readable, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        line = pipe.readline()
        if ready in line:
            return proc, line
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{cmd[:4]} did not start: {proc.stderr.read() if proc.stderr else ''}")


class UpstreamProcess:
    def __init__(self, body_size: int = 1024) -> None:
        self.body_size = body_size
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> int:
        self.proc, line = _spawn([sys.executable, "-m", "minimesh.bench.dataplane_loopback", "upstream", "--port", "0",
                                  "--body", str(self.body_size)], "upstream listening on")
        self.port = int(line.rsplit(" ", 1)[1])
        return self.port

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Direct:
    upstream: UpstreamProcess
    name: str = "direct"

    def start(self) -> tuple[str, int]:
        return LOOPBACK, self.upstream.port

    def pids(self) -> dict[str, int]:
        return {}

    def stop(self) -> None:
        pass


def _addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _proxy_bootstrap(node: str, workload: str, direction: str, listener: str, cluster: str, port: int,
                     bind: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": cluster, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(LOOPBACK, port)}}]}]}}
    if bind:
        c["upstream_bind_config"] = {"source_address": {"address": bind, "port_value": 0}}
    return {
        "node": {"id": node, "cluster": workload, "metadata": {"WORKLOAD_NAME": workload, "NAMESPACE": "bench"}},
        "admin": {"address": _addr(LOOPBACK, 0)},
        "minimesh": {"access_log_path": "/dev/stdout"},
        "static_resources": {"clusters": [c], "listeners": [{
            "name": listener, "address": _addr(LOOPBACK, 0), "traffic_direction": direction,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "stat_prefix": listener, "http_filters": [{"name": "envoy.filters.http.router"}],
                "route_config": {"name": listener, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}}}]}]}]}}


@dataclass
class MinimeshPair:
    """client -> proxy A (outbound listener) -> proxy B (inbound listener, source 127.0.0.6) -> upstream."""

    upstream: UpstreamProcess
    loop: str = "uvloop"
    name: str = "minimesh"
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    tmp: str = ""

    def _start_proxy(self, label: str, boot: dict[str, Any]) -> int:
        import yaml

        path = Path(self.tmp) / f"{label}.yaml"
        path.write_text(yaml.safe_dump(boot))
        proc, line = _spawn([sys.executable, "-m", "minimesh.proxy", "--bootstrap", str(path), "--loop", self.loop,
                             "--log-level", "info"], "listeners:", stream="stderr", stdout_to_null=True)
        self.procs[label] = proc
        m = re.search(r"listeners: \S+=(\d+)", line)
        assert m, line
        return int(m.group(1))

    def start(self) -> tuple[str, int]:
        self.tmp = tempfile.mkdtemp(prefix="minimesh-bench-")
        b = self._start_proxy("proxy-b-inbound", _proxy_bootstrap(
            "sidecar~b", "upstream-v1", "INBOUND", "virtualInbound", "inbound|9080||", self.upstream.port, bind="127.0.0.6"))
        a = self._start_proxy("proxy-a-outbound", _proxy_bootstrap(
            "sidecar~a", "client-v1", "OUTBOUND", "0.0.0.0_9080", "outbound|9080||upstream.bench.svc.cluster.local", b))
        return LOOPBACK, a

    def pids(self) -> dict[str, int]:
        return {k: p.pid for k, p in self.procs.items()}

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        if self.tmp:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)


# --- the benchmark -------------------------------------------------------------------------------------
def measure(topology: Topology, spec: LoadSpec) -> dict[str, Any]:
    host, port = topology.start()
    try:
        run_load(host, port, LoadSpec(rate=min(spec.rate, 500), connections=spec.connections, duration=1, warmup=0.5,
                                      body_size=spec.body_size))  # warm the connections and pools
        meter = ProcessMeter(topology.pids())
        meter.start()
        result = run_load(host, port, spec)
        procs = meter.stop()
    finally:
        topology.stop()
    return {"topology": topology.name, "load": asdict(result), "processes": procs}


def find_max_rate(make: Any, spec: LoadSpec, start: float = 1000, limit: float = 64000) -> dict[str, Any]:
    """Highest constant rate the topology sustains: >= 97 % of the target delivered, no errors, p99 < 100 ms."""

    def ok(rate: float) -> tuple[bool, dict[str, Any]]:
        r = measure(make(), LoadSpec(rate=rate, connections=spec.connections, duration=3, warmup=0.5,
                                     body_size=spec.body_size))
        load = r["load"]
        good = (load["achieved_rate"] >= 0.97 * rate and not load["errors"] and load["latency_ms"].get("p99", 1e9) < 100)
        return good, r

    best, best_r, rate, bad = 0.0, None, start, None
    while rate <= limit:
        good, r = ok(rate)
        if not good:
            bad = rate
            break
        best, best_r, rate = rate, r, rate * 2
    if bad is not None and best:
        for _ in range(3):
            mid = (best + bad) / 2
            good, r = ok(mid)
            if good:
                best, best_r = mid, r
            else:
                bad = mid
    return {"max_rate": best, "at_max": best_r}


def check_exercises_done() -> None:
    from minimesh.proxy import routing
    from minimesh.proxy.config import ClusterWeight

    try:
        routing.pick_weighted_cluster((ClusterWeight("a", 1),), 0)
    except NotImplementedError as e:
        raise SystemExit(f"the proxy's stage-3 exercises are not done ({e}); benchmark the solved tree: "
                         "PYTHONPATH=.minimesh/solved PYTHONSAFEPATH=1 python -m minimesh.bench.dataplane_loopback") from None


def benchmark(spec: LoadSpec, proxy_loop: str = "uvloop", max_rate: bool = False) -> dict[str, Any]:
    check_exercises_done()
    up = UpstreamProcess(spec.body_size)
    up.start()
    try:
        direct = measure(Direct(up), spec)
        pair = measure(MinimeshPair(up, loop=proxy_loop), spec)
        added = {k: round(pair["load"]["latency_ms"][k] - direct["load"]["latency_ms"][k], 3)
                 for k in ("p50", "p90", "p99")}
        added_service = {k: round(pair["load"]["service_ms"][k] - direct["load"]["service_ms"][k], 3)
                         for k in ("p50", "p90", "p99")}
        rate_k = pair["load"]["achieved_rate"] / 1000 or 1
        out: dict[str, Any] = {
            "spec": asdict(spec), "proxy_loop": proxy_loop, "nice": NICE[0], "direct": direct, "minimesh": pair,
            "added_latency_ms": added, "added_service_ms": added_service,
            "cpu_vcpu_per_1000rps": {k: round(v["cpu_vcpu"] / rate_k, 4) for k, v in pair["processes"].items()},
            "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in pair["processes"].items()},
        }
        if max_rate:
            out["max_sustained"] = {
                "direct": find_max_rate(lambda: Direct(up), spec)["max_rate"],
                "minimesh": find_max_rate(lambda: MinimeshPair(up, loop=proxy_loop), spec)["max_rate"],
            }
        out["targets"] = {"p90_added_ms<=1": added["p90"] <= 1.0,
                          "rss_mb<=40": all(v <= 40 for v in out["peak_rss_mb"].values()),
                          "vcpu_per_1000rps<=0.3": all(v <= 0.3 for v in out["cpu_vcpu_per_1000rps"].values())}
        return out
    finally:
        up.stop()


def report(r: dict[str, Any]) -> str:
    s = r["spec"]
    lines = [f"loopback data plane, {s['rate']:.0f} req/s open loop, {s['connections']} connections, "
             f"{s['body_size']} B bodies, {s['duration']:.0f} s, proxies on {r['proxy_loop']}, nice {r['nice']}",
             f"{'':22}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}  (ms from intended send time)"]
    for key in ("direct", "minimesh"):
        lat = r[key]["load"]["latency_ms"]
        lines.append(f"{key:22}" + "".join(f"{lat[k]:9.3f}" for k in ("p50", "p90", "p99", "p999", "max"))
                     + f"   achieved {r[key]['load']['achieved_rate']:.0f}/s, errors {r[key]['load']['errors']}")
    a, b = r["added_latency_ms"], r["added_service_ms"]
    lines.append(f"{'added by the pair':22}" + "".join(f"{a[k]:9.3f}" for k in ("p50", "p90", "p99")))
    lines.append(f"{'added (service time)':22}" + "".join(f"{b[k]:9.3f}" for k in ("p50", "p90", "p99")))
    for name, v in r["minimesh"]["processes"].items():
        lines.append(f"{name:22} cpu {v['cpu_vcpu']:.3f} vCPU ({r['cpu_vcpu_per_1000rps'][name]:.3f} per 1000 req/s), "
                     f"peak RSS {v['peak_rss_mb']:.1f} MB")
    if "max_sustained" in r:
        m = r["max_sustained"]
        lines.append(f"max sustained: direct {m['direct']:.0f} req/s, minimesh pair {m['minimesh']:.0f} req/s")
    lines.append("targets: " + ", ".join(f"{k} {'OK' if v else 'MISSED'}" for k, v in r["targets"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minimesh.bench.dataplane_loopback", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    u = sub.add_parser("upstream")
    u.add_argument("--port", type=int, default=0)
    u.add_argument("--body", type=int, default=1024)
    lg = sub.add_parser("loadgen")
    lg.add_argument("--host", default=LOOPBACK)
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--spec", required=True)
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--body", type=int, default=1024)
    p.add_argument("--proxy-loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--max-rate", action="store_true", help="also search the highest sustained rate (slow)")
    p.add_argument("--nice", type=int, default=0,
                   help="run every benchmark process at this niceness (e.g. -10 as root on a shared machine)")
    p.add_argument("--json", help="write the full result here")
    args = p.parse_args(argv)
    if args.cmd == "upstream":
        serve_upstream(args.port, args.body)
        return 0
    if args.cmd == "loadgen":
        loadgen_main(args.host, args.port, LoadSpec(**json.loads(args.spec)))
        return 0
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    NICE[0] = args.nice
    spec = LoadSpec(rate=args.rate, connections=args.connections, duration=args.duration, body_size=args.body)
    result = benchmark(spec, args.proxy_loop, args.max_rate)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
