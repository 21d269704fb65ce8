"""The control-plane benchmark runs end to end at a small scale (numbers are reported, never asserted)."""

from __future__ import annotations

import pytest

from minimesh.bench import controlplane


@pytest.mark.slow
def test_bench_runs_small(tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = controlplane.run(services=20, namespaces=4, endpoints=2, proxies=30, processes=1, unscoped_proxies=6,
                              changes=3, out=str(out))
    assert out.exists()
    scoped = result["scoped"]
    assert scoped["proxies"] == 30 and len(scoped["full_push_s"]) == 3
    assert scoped["convergence_samples"] > 0 and scoped["eds_receivers_per_change"] >= 1
    assert result["unscoped"]["proxies"] == 6
    size = result["config_size"]
    assert size["unscoped"]["bytes_per_proxy"] > size["scoped"]["bytes_per_proxy"] > 0
    assert "full push to 30 proxies" in controlplane.table(result)


def test_synthetic_mesh_shape() -> None:
    objs = controlplane.synthetic_mesh(services=10, namespaces=5, endpoints=3)
    kinds = [k for k, _ in objs]
    assert kinds.count("Service") == 11 and kinds.count("EndpointSlice") == 11  # + the control plane's service
    assert kinds.count("Sidecar") == 5 and kinds.count("Namespace") == 6
    nodes = controlplane.proxy_nodes(7, 10, 5)
    assert len({n["id"] for n in nodes}) == 7
