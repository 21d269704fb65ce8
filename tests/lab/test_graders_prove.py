"""Every grader fails on the untouched starter and passes with the solutions, on real local clusters.

One cluster per tree: the starter tree's cluster runs starter code, the solved tree's runs solutions.
Stages are played in order on each cluster (each stage's `setup`, as its notebook does), then graded with
`minimesh lab grade NN` in a subprocess that imports that tree.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from minimesh.lab import runner, stages, trees

from .clusters import local_cluster, minimesh

REPO = Path(os.environ["MINIMESH_REPO"])
GRADED = [s for s in stages.STAGES if list((REPO / "tests" / "graders").glob(s.grader_glob))]

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1800)]


def _grade(tree: Path, cluster: str, stage: stages.Stage, out: Path) -> dict:
    report = out / f"{cluster}-{stage.id}-{len(list(out.iterdir()))}.json"
    res = minimesh(tree, cluster, "lab", "grade", stage.id, "--json", str(report), timeout=900)
    assert report.exists(), f"grade {stage.id} wrote no report:\n{res.stdout}\n{res.stderr}"
    result = json.loads(report.read_text())
    assert res.returncode == (0 if result["passed"] else 1), res.stdout
    result["table"] = res.stdout
    return result


def _setup(tree: Path, cluster: str, stage: stages.Stage) -> None:
    res = minimesh(tree, cluster, "lab", "setup", stage.id)
    assert res.returncode == 0, f"setup {stage.id}:\n{res.stdout}\n{res.stderr}"


def _failed(result: dict) -> list[str]:
    return [f"{c['check']}: want {c['want']}, got {c['got']}" for c in result["checks"] if c["outcome"] == "failed"]


def _play_starter(tree: Path, cluster: str, out: Path, results: dict) -> None:
    for st in GRADED:
        if not st.regions(REPO):
            results[(st.id, "before setup")] = _grade(tree, cluster, st, out)  # nothing done yet: must fail
            _setup(tree, cluster, st)
        else:
            _setup(tree, cluster, st)  # the steps done, the code not written: must fail
            results[(st.id, "after setup")] = _grade(tree, cluster, st, out)


def _play_solved(tree: Path, cluster: str, out: Path, results: dict) -> None:
    for st in GRADED:
        _setup(tree, cluster, st)
        results[st.id] = _grade(tree, cluster, st, out)


def _thread(fn: Callable[..., None], *args: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn(*args)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, errors


def test_graders_fail_on_the_starter_and_pass_on_the_solutions(need_root: None, tmp_path: Path) -> None:
    assert [s.id for s in GRADED][:2] == ["00", "01"]
    starter_tree, solved_tree = trees.build_starter_tree(REPO), trees.build_solved_tree(REPO)
    starter_results: dict = {}
    solved_results: dict = {}
    with local_cluster(starter_tree, "pst") as starter, local_cluster(solved_tree, "pso") as solved:
        a, a_err = _thread(_play_starter, starter_tree, starter, tmp_path, starter_results)
        b, b_err = _thread(_play_solved, solved_tree, solved, tmp_path, solved_results)
        a.join()
        b.join()
    if a_err or b_err:
        raise (a_err or b_err)[0]
    for key, result in starter_results.items():
        assert not result["passed"], f"stage {key} passes on the starter:\n{result['table']}"
    for sid, result in solved_results.items():
        assert result["passed"], f"stage {sid} fails with the solutions:\n{result['table']}\n" + "\n".join(_failed(result))
    # Stage 1 on the starter: the cluster part is done, so exactly the exercise's checks fail.
    s1 = starter_results[("01", "after setup")]
    assert all("NotImplementedError" in c["got"] for c in s1["checks"] if c["outcome"] == "failed"), _failed(s1)
    assert any(c["outcome"] == "passed" for c in s1["checks"]), s1["table"]


def test_runner_finds_the_graded_stages() -> None:
    for st in GRADED:
        assert runner.grader_files(st, REPO)
        assert st.setup, f"stage {st.id} has graders but no setup steps in minimesh/lab/stages.py"
