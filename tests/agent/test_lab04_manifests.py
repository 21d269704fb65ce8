"""Lab 04's hand-injected Deployments are exactly what the injector makes of the plain ones (so stage 5's
webhook reproduces what trainees applied by hand, and a template change cannot leave lab 04 behind), and
what they run matches the agent's command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from minimesh import paths
from minimesh.agent.__main__ import parse_args
from minimesh.inject.offline import inject_object

LAB04 = paths.MANIFESTS / "lab04"
CASES = {"40-sleep-injected.yaml": ("sleep.yaml", "sleep"), "41-details-injected.yaml": ("bookinfo.yaml", "details-v1")}


def deployment(path: Path, name: str) -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all(path.read_text())
                if d and d["kind"] == "Deployment" and d["metadata"]["name"] == name)


@pytest.mark.parametrize("injected", list(CASES))
def test_hand_injected_matches_the_injector(injected: str) -> None:
    source, name = CASES[injected]
    want = inject_object(deployment(paths.MANIFESTS / source, name))
    got = deployment(LAB04 / injected, name)
    assert got == want, (f"minimesh/manifests/lab04/{injected} is out of date: regenerate it from"
                         f" minimesh/manifests/{source} with `python -m minimesh.inject.offline -f ...`"
                         " (keep the header comment)")


@pytest.mark.parametrize("injected", list(CASES))
def test_the_proxy_container_runs_the_agent_with_what_it_accepts(injected: str) -> None:
    _, name = CASES[injected]
    pod = deployment(LAB04 / injected, name)["spec"]["template"]["spec"]
    proxy = next(c for c in pod["containers"] if c["name"] == "minimesh-proxy")
    assert proxy["command"] == ["python", "-m", "minimesh.agent"]
    args = parse_args(proxy["args"])
    assert (args.command, args.type, args.discovery_address) == ("proxy", "sidecar", "minimeshd.mesh-system.svc:15010")
    mounts = {m["mountPath"] for m in proxy["volumeMounts"]}
    assert {args.config_path, args.podinfo_path} <= mounts
    env = {e["name"] for e in proxy["env"]}
    assert {"POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "SERVICE_ACCOUNT"} <= env
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": args.health_port}
