"""Server-side printing: kubectl's pod STATUS/READY/RESTARTS rules and the Table shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from minimesh.cluster.local.apiserver.podstatus import human_duration, pod_columns
from minimesh.cluster.local.apiserver.printers import PRINTERS, crd_printer, table

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def pod(phase: str = "Pending", init: list[dict[str, Any]] | None = None, main: list[dict[str, Any]] | None = None,
        n_init: int = 0, n_main: int = 1, deleting: bool = False, conditions: list[dict[str, Any]] | None = None,
        sidecars: int = 0) -> dict[str, Any]:
    inits = [{"name": f"i{k}", "image": "x"} for k in range(n_init)]
    for k in range(sidecars):
        inits.append({"name": f"s{k}", "image": "x", "restartPolicy": "Always"})
    meta: dict[str, Any] = {"name": "p", "creationTimestamp": "2024-05-01T11:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T12:00:30Z"
    return {"metadata": meta, "spec": {"initContainers": inits, "containers": [{"name": f"c{k}", "image": "x"} for k in range(n_main)]},
            "status": {"phase": phase, "initContainerStatuses": init or [], "containerStatuses": main or [],
                       "conditions": conditions or []}}


def waiting(reason: str, name: str = "c0", restarts: int = 0) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": restarts, "state": {"waiting": {"reason": reason}}}


def running(name: str = "c0", ready: bool = True, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": "x"}}, **extra}


def terminated(name: str, code: int = 0, reason: str = "Completed") -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason}}}


@pytest.mark.parametrize(("p", "want"), [
    (pod(), ("0/1", "Pending", "0")),
    (pod(n_init=1, init=[waiting("PodInitializing", "i0")], main=[waiting("PodInitializing")]), ("0/1", "Init:0/1", "0")),
    (pod(n_init=2, init=[terminated("i0"), running("i1", ready=False)], main=[waiting("PodInitializing")]),
     ("0/1", "Init:1/2", "0")),
    (pod(n_init=1, init=[waiting("CrashLoopBackOff", "i0", 3)]), ("0/1", "Init:CrashLoopBackOff", "3")),
    (pod(n_init=1, init=[terminated("i0", 2, "")]), ("0/1", "Init:ExitCode:2", "0")),
    (pod(n_init=1, init=[terminated("i0")], main=[waiting("PodInitializing")],
         conditions=[{"type": "Initialized", "status": "True"}]), ("0/1", "PodInitializing", "0")),
    (pod("Running", main=[running()]), ("1/1", "Running", "0")),
    (pod("Running", main=[waiting("CrashLoopBackOff", restarts=5)]), ("0/1", "CrashLoopBackOff", "5")),
    (pod("Succeeded", main=[terminated("c0")]), ("0/1", "Completed", "0")),
    (pod("Failed", main=[terminated("c0", 1, "Error")]), ("0/1", "Error", "0")),
    (pod("Running", main=[running()], deleting=True), ("1/1", "Terminating", "0")),
    (pod("Running", n_main=2, main=[running("c0"), terminated("c1")], conditions=[{"type": "Ready", "status": "False"}]),
     ("1/2", "NotReady", "0")),
    (pod("Running", sidecars=1, init=[running("s0", started=True)], main=[running()]), ("2/2", "Running", "0")),
])
def test_pod_columns(p: dict[str, Any], want: tuple[str, str, str]) -> None:
    assert pod_columns(p, NOW) == want


def test_restarts_show_when() -> None:
    cs = running(restarts=2, lastState={"terminated": {"finishedAt": "2024-05-01T11:55:00Z", "exitCode": 1}})
    assert pod_columns(pod("Running", main=[cs]), NOW)[2] == "2 (5m ago)"


def test_human_duration() -> None:
    cases = {5: "5s", 119: "119s", 125: "2m5s", 600: "10m", 3 * 3600 + 60: "3h1m", 30 * 3600: "30h", 50 * 3600: "2d2h",
             40 * 86400: "40d", 3 * 365 * 86400: "3y"}
    for secs, want in cases.items():
        assert human_duration(timedelta(seconds=secs).total_seconds()) == want


def test_table_shape() -> None:
    t = table(PRINTERS[("", "Pod")], [pod("Running", main=[running()])], list_meta={"resourceVersion": "7"})
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1" and t["metadata"] == {"resourceVersion": "7"}
    assert [c["name"] for c in t["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert [c["priority"] for c in t["columnDefinitions"]][5:] == [1, 1, 1, 1]
    row = t["rows"][0]
    assert row["cells"][:4] == ["p", "1/1", "Running", "0"]
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "p"
    cols, fn = crd_printer([{"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts[0]"},
                            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'}])
    obj = {"metadata": {"name": "x"}, "spec": {"hosts": ["a", "b"]}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert [c[0] for c in cols] == ["Name", "Hosts", "Ready"] and fn(obj) == ["x", "a", "True"]
