"""`minimesh bench dataplane`, really run: a short smoke run on a local cluster of its own (created and
removed by the command), every topology, checked for the JSON's shape and that every request was served.
Speed is what the command reports, not what this test asserts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minimesh.bench.dataplane import TOPOLOGIES

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1500)]


def test_smoke_run_serves_every_request(need_root: None, tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k not in ("MINIMESH_CLUSTER", "MINIMESH_PROVIDER")}
    res = subprocess.run([sys.executable, "-m", "minimesh", "bench", "dataplane", "--duration", "2", "--rate", "100",
                          "--warmup", "1", "--ramp", "1,4", "--ramp-duration", "1", "--out", str(out)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1400)
    assert res.returncode == 0, res.stdout + res.stderr
    [js] = out.glob("dataplane-*.json")
    [png] = out.glob("dataplane-*.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    result = json.loads(js.read_text())
    assert list(result["topologies"]) == list(TOPOLOGIES)
    for name, t in result["topologies"].items():
        assert "error" not in t, f"{name}: {t.get('error')}"
        load = t["load"]
        assert t["served_all"], f"{name}: {load}"
        assert load["errors"] == 0 and load["non_2xx"] == 0 and load["completed"] >= 199
        assert {"p50", "p90", "p99"} <= set(load["latency_ms"])
        assert t["max_sustained"]["max_rate"] > 0 and t["max_sustained"]["steps"]
        if name == "direct":
            assert "proxies" not in t
            continue
        assert set(t["added_latency_ms"]) == {"p50", "p90", "p99"}
        for role in ("client", "server"):
            usage = t["proxies"][role]
            assert usage["processes"] >= 1 and usage["cpu_s"] > 0 and usage["peak_rss_mb"] > 1
            assert usage["vcpu_per_1000rps"] is not None
    assert set(result["targets"]) == {"p90_added_ms<=1", "rss_mb<=40", "vcpu_per_1000rps<=0.3",
                                      "mtls_authz_p90_added_ms<=1.5"}
    assert "targets for the minimesh pair" in res.stdout
    own = re.search(r"creating local cluster (bench-[0-9a-f]+)", res.stderr)
    assert own, res.stderr
    left = subprocess.run([sys.executable, "-m", "minimesh", "cluster", "list"], capture_output=True, text=True,
                          env=env)
    assert own.group(1) not in left.stdout, f"the bench cluster was not removed:\n{left.stdout}"
