"""Lab 04's exercises: the starter stubs raise with the TODO, the solutions pass the same calls."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from minimesh.lab.trees import build_starter_tree

REPO = Path(os.environ["MINIMESH_REPO"])
PROBE = """
from envoy.service.discovery.v3 import discovery_pb2
from minimesh.pilot import ads, clusters, sidecar
from minimesh.pilot.model import Service, ServicePort
svc = Service("details", "default", "10.96.0.20", (ServicePort("http", 9080, 9080),))
calls = {
    "outbound_cluster": lambda: clusters.outbound_cluster(svc, svc.ports[0])["name"],
    "load_assignment": lambda: clusters.load_assignment(svc, svc.ports[0], ())["endpoints"],
    "classify": lambda: ads.classify(discovery_pb2.DiscoveryRequest(), None).name,
    "host_allowed": lambda: sidecar.host_allowed(["./*"], "default", svc),
}
for name, call in calls.items():
    try:
        print(name, "->", call())
    except NotImplementedError as e:
        print(name, "raises", e)
"""


def probe(root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                          cwd=root).stdout


def test_starter_stubs_raise_and_solutions_answer() -> None:
    starter = probe(build_starter_tree(REPO))
    for name in ("outbound_cluster", "load_assignment", "classify", "host_allowed"):
        assert f"{name} raises lab 04: {name}: " in starter, starter
    solved = probe(Path(os.environ["MINIMESH_SOLVED_ROOT"]))
    assert solved.splitlines() == [
        "outbound_cluster -> outbound|9080||details.default.svc.cluster.local",
        "load_assignment -> []",
        "classify -> NEW",
        "host_allowed -> True",
    ]
