"""`minimesh lab grade` machinery: a real pytest subprocess, real grader files, per-check results."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minimesh.lab import runner, stages
from minimesh.lab.grading import GradeFailure, check, eventually, expect, parse_curl

REPO_GRADERS = Path(__file__).resolve().parents[1] / "graders"

GRADER = textwrap.dedent('''
    import pytest

    from minimesh.lab.grading import check, eventually, expect


    def test_right():
        """the answer is right"""
        expect(42, 42)


    def test_wrong():
        """the answer is wrong"""
        expect(41, 42, "add one", what="the answer")


    def test_unfinished_exercise():
        raise NotImplementedError("lab 01: pod_effective_resources: compute it")


    def test_gives_up_after_polling():
        """polls, then fails"""
        eventually(lambda: check(False, want="ready", got="pending", hint="wait"), timeout=0.3, interval=0.1)


    def test_crash():
        {}["missing"]


    @pytest.fixture
    def broken():
        raise RuntimeError("no cluster")


    def test_needs_fixture(broken):
        """uses a broken fixture"""


    @pytest.mark.parametrize("n", [1, 2])
    def test_each(n):
        expect(n, 1, what="n")
''')


@pytest.fixture
def graders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "graders"
    d.mkdir()
    shutil.copy(REPO_GRADERS / "grading.ini", d)
    shutil.copy(REPO_GRADERS / "conftest.py", d)
    (d / "test_lab01_demo.py").write_text(GRADER)
    monkeypatch.setenv("MINIMESH_GRADERS", str(d))
    return d


def test_run_collects_every_check(graders: Path) -> None:
    events: list[dict] = []
    result = runner.run(stages.get("01"), on_event=events.append)
    assert result.exitstatus == 1 and not result.passed
    assert events[0] == {"event": "collected", "count": 8}
    assert events[-1] == {"event": "done", "exitstatus": 1}
    by = {c.check: c for c in result.checks}
    assert list(by) == ["the answer is right", "the answer is wrong", "unfinished exercise", "polls, then fails",
                        "crash", "uses a broken fixture", "each [1]", "each [2]"]
    assert by["the answer is right"].passed and by["the answer is right"].detail == ""
    assert by["the answer is wrong"].detail == "want the answer 42, got 41, try add one"
    assert by["unfinished exercise"].got == "NotImplementedError: lab 01: pod_effective_resources: compute it"
    assert by["polls, then fails"].detail == "want ready, got pending (still, after 0.3 s), try wait"
    assert by["crash"].got == "KeyError: 'missing'"
    assert by["uses a broken fixture"].outcome == "failed" and "RuntimeError: no cluster" in by["uses a broken fixture"].got
    assert [by["each [1]"].outcome, by["each [2]"].outcome] == ["passed", "failed"]
    assert result.counts == {"passed": 2, "failed": 6, "skipped": 0}


def test_a_passing_stage(graders: Path) -> None:
    (graders / "test_lab01_demo.py").write_text("def test_ok():\n    assert True\n")
    result = runner.run(stages.get("01"))
    assert result.passed and result.counts["passed"] == 1


def test_a_grader_that_cannot_load_is_one_failed_check(graders: Path) -> None:
    (graders / "test_lab01_demo.py").write_text("import no_such_module_anywhere\n")
    result = runner.run(stages.get("01"))
    assert not result.passed
    assert [c.check for c in result.checks] == ["the grader runs"]
    assert "no_such_module_anywhere" in result.checks[0].got


def test_missing_grader_is_a_clear_error(graders: Path) -> None:
    with pytest.raises(runner.GraderNotFound, match=r"stage 05 has no grader yet"):
        runner.grader_files(stages.get("05"))


def test_project_runs_do_not_collect_graders(graders: Path) -> None:
    """Without MINIMESH_GRADING the graders' conftest keeps them out of `make test`."""
    env = {k: v for k, v in os.environ.items() if k != "MINIMESH_GRADING"}
    (graders / "test_lab00_x.py").write_text("def test_x():\n    raise AssertionError('collected')\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(graders),
                           str(graders)], env=env, capture_output=True, text=True, cwd=graders)
    assert proc.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, proc.stdout


def test_helpers_raise_readable_failures() -> None:
    with pytest.raises(GradeFailure, match=r"^want replicas 5, got 3; try kubectl get deploy$"):
        expect(3, 5, "kubectl get deploy", what="replicas")
    with pytest.raises(GradeFailure, match=r'^want a pod, got \["x"\]$'):
        check(False, want="a pod", got=["x"])
    calls = []
    assert eventually(lambda: calls.append(1) or len(calls) >= 3 or check(False, want="3", got=len(calls)),
                      timeout=5, interval=0.01) is True
    with pytest.raises(NotImplementedError):  # an unfinished exercise is not retried
        eventually(lambda: (_ for _ in ()).throw(NotImplementedError("lab 01")), timeout=5)


def test_parse_curl() -> None:
    from minimesh.cluster.provider import ExecResult

    ok = parse_curl(ExecResult(0, "hello\nworld\n\n@@minimesh-status@@200", ""))
    assert (ok.status, ok.body) == (200, "hello\nworld\n")
    down = parse_curl(ExecResult(7, "\n@@minimesh-status@@000", "curl: (7) Failed to connect"))
    assert down.status == 0 and "Failed to connect" in str(down)
