"""Stage 5's grader, pure part: every check passes with the solution and fails on plausible wrong patch
builders (wrong order, '/-' on a missing array, unescaped keys, whole arrays or objects overwritten,
the pod edited in place). The cluster part is proven by test_graders_prove.py.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minimesh.inject import patch as solution
from minimesh.lab.grading import GradeFailure

REPO = Path(os.environ["MINIMESH_REPO"])


def _grader() -> Any:
    spec = importlib.util.spec_from_file_location("lab05_grader_under_test", REPO / "tests/graders/test_lab05_injection.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


G = _grader()
BUILD = solution.build_patch  # the wrong builders below start from the solution's


def _run_all(grader: Any) -> list[str]:
    """Names of the pure checks that failed."""
    failed = []
    checks: list[tuple[str, Callable[[str], None], list[str]]] = [
        ("escape", grader.test_escape, list(grader.ESCAPES)),
        ("append_ops", grader.test_append_ops, list(grader.APPENDS)),
        ("set_ops", grader.test_set_ops, list(grader.SETS)),
        ("build_patch", grader.test_build_patch, list(grader.PATCHES)),
    ]
    for name, fn, cases in checks:
        for case in cases:
            try:
                fn(case)
            except GradeFailure:
                failed.append(f"{name}[{case}]")
    return failed


def test_the_solution_passes_every_pure_check(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("escape", "append_ops", "set_ops", "build_patch"):
        monkeypatch.setattr(G, name, getattr(solution, name))
    assert _run_all(G) == []


def _init_first(pod: dict[str, Any], inj: Any) -> list[dict[str, Any]]:
    """minimesh-init inserted first even without native sidecars."""
    ops = BUILD(pod, inj)
    if inj.native:
        return ops
    return [{"op": "add", "path": "/spec/initContainers/0", "value": o["value"]}
            if o["path"] == "/spec/initContainers/-" else o for o in ops]


def _always_append(path: str, current: Any, items: Any) -> list[dict[str, Any]]:
    return [{"op": "add", "path": f"{path}/-", "value": i} for i in items]


def _unescaped(token: str) -> str:
    return token


def _replace_arrays(pod: dict[str, Any], inj: Any) -> list[dict[str, Any]]:
    """The whole containers array replaced by a new list (loses what other webhooks added meanwhile)."""
    spec = pod.get("spec") or {}
    ops = [o for o in BUILD(pod, inj) if o["path"] != "/spec/containers/-"]
    if not inj.native:
        ops.append({"op": "add", "path": "/spec/containers", "value": [*spec.get("containers", []), inj.proxy]})
    return ops


def _merge_objects(path: str, current: Any, entries: Any) -> list[dict[str, Any]]:
    """The whole object added again with the new entries merged in: right result, but overwrites."""
    return [{"op": "add", "path": path, "value": {**(current or {}), **entries}}] if entries else []


def _in_place(pod: dict[str, Any], inj: Any) -> list[dict[str, Any]]:
    """Edits the pod it was given."""
    ops = BUILD(copy.deepcopy(pod), inj)
    pod.setdefault("spec", {}).setdefault("containers", []).append(inj.proxy)
    return ops


def _native_in_containers(pod: dict[str, Any], inj: Any) -> list[dict[str, Any]]:
    """Ignores injection.native."""
    return BUILD(pod, dataclasses.replace(inj, native=False))


def _escape_backwards(token: str) -> str:
    return token.replace("/", "~1").replace("~", "~0")


WRONG: dict[str, tuple[dict[str, Callable[..., Any]], set[str]]] = {
    "init container first without native": ({"build_patch": _init_first}, {"build_patch[a pod with init containers, volumes and annotations]"}),
    "'/-' on a missing array": ({"append_ops": _always_append}, {"append_ops[the array is absent]", "build_patch[a bare pod]"}),
    "keys not escaped": ({"escape": _unescaped}, {"escape[a slash]", "build_patch[a pod with init containers, volumes and annotations]"}),
    "escape in the wrong order": ({"escape": _escape_backwards}, {"escape[tilde first, then slash]"}),
    "whole containers array replaced": ({"build_patch": _replace_arrays}, {"build_patch[a bare pod]"}),
    "whole annotations object re-added": ({"set_ops": _merge_objects}, {"set_ops[the object exists]",
                                                                        "build_patch[a pod with init containers, volumes and annotations]"}),
    "pod edited in place": ({"build_patch": _in_place}, {"build_patch[a bare pod]"}),
    "native ignored": ({"build_patch": _native_in_containers}, {"build_patch[native sidecar, no init containers]"}),
}


@pytest.mark.parametrize("wrong", list(WRONG))
def test_wrong_patch_builders_fail(wrong: str, monkeypatch: pytest.MonkeyPatch) -> None:
    replacements, must_fail = WRONG[wrong]
    for name in ("escape", "append_ops", "set_ops", "build_patch"):
        monkeypatch.setattr(G, name, getattr(solution, name))
    for name, fn in replacements.items():
        monkeypatch.setattr(G, name, fn)  # what the grader calls
        if name != "build_patch":
            monkeypatch.setattr(solution, name, fn)  # and what the solution's build_patch calls
    failed = set(_run_all(G))
    assert must_fail <= failed, f"{wrong}: these checks should fail: {sorted(must_fail - failed)}"
