"""`minimesh lab status | solve | reset | grade` on a copy of the starter tree, as a trainee runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(os.environ["MINIMESH_REPO"])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private trainee checkout: the starter tree, copied (symlinks to solutions/, tests/ kept)."""
    from minimesh.lab import trees

    starter = trees.build_starter_tree(REPO)
    dest = tmp_path / "checkout"
    shutil.copytree(starter, dest, symlinks=True, ignore=shutil.ignore_patterns(".digest", "__pycache__"))
    return dest


def lab(tree: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in ("MINIMESH_GRADERS",)}
    e.update(PYTHONPATH=str(tree), COLUMNS="200", **(env or {}))
    return subprocess.run([sys.executable, "-m", "minimesh", "lab", *args], env=e, capture_output=True,
                          text=True, timeout=120, cwd=tree)


def test_status_lists_stages_and_stubs(tree: Path) -> None:
    out = lab(tree, "status")
    assert out.returncode == 0, out.stderr
    assert "The sidecar pattern" in out.stdout and "Operate the mesh" in out.stdout
    assert "pod_effective_resources" in out.stdout and "minimesh/k8s/resources.py:" in out.stdout
    assert "not started" in out.stdout


def test_solve_and_reset_round_trip(tree: Path) -> None:
    target = tree / "minimesh/k8s/resources.py"
    mine = target.read_text().replace(
        '    raise NotImplementedError("lab 01: pod_effective_resources: compute the pod\'s effective requests and'
        ' limits with Kubernetes\' rules.")\n',
        "    spec = spec_dict(pod_spec)  # my start\n    return PodResources({}, {})\n",
    ) + "\n\n# my notes at the end of the file\n"
    assert mine != target.read_text()
    target.write_text(mine)

    solved = lab(tree, "solve", "01")
    assert solved.returncode == 0, solved.stderr
    assert "your lab 01 code is saved in .minimesh/backups/lab01-" in solved.stdout
    text = target.read_text()
    assert "sidecars_req" in text and "# my notes at the end of the file" in text and "my start" not in text
    assert "all done" in lab(tree, "status").stdout

    reset = lab(tree, "reset", "01")
    assert reset.returncode == 0, reset.stderr
    assert target.read_text() == mine

    starter = lab(tree, "reset", "1", "--starter")
    assert starter.returncode == 0 and "restored from the starter" in starter.stdout
    assert 'raise NotImplementedError("lab 01: pod_effective_resources:' in target.read_text()
    assert "# my notes at the end of the file" in target.read_text()


def test_errors_are_clear(tree: Path) -> None:
    out = lab(tree, "reset", "01")
    assert out.returncode == 1 and "no backup of lab 01 yet" in out.stderr
    out = lab(tree, "solve", "42")
    assert out.returncode == 2 and "no stage '42'" in out.stderr
    out = lab(tree, "grade", "08")
    assert out.returncode == 1 and "stage 08 has no grader yet" in out.stderr


def test_grade_prints_a_table_and_remembers_the_result(tree: Path, tmp_path: Path) -> None:
    graders = tmp_path / "graders"
    graders.mkdir()
    shutil.copy(REPO / "tests/graders/grading.ini", graders)
    shutil.copy(REPO / "tests/graders/conftest.py", graders)
    (graders / "test_lab01_x.py").write_text(
        "from minimesh.k8s.resources import pod_effective_resources\n"
        "from minimesh.lab.grading import expect\n\n\n"
        "def test_fits():\n    '''a known pod'''\n"
        "    got = pod_effective_resources({'containers': [{'name': 'a', 'resources': {'requests': {'cpu': '1'}}}]})\n"
        "    expect(got.requests, {'cpu': 1000}, 'read the rules again')\n\n\n"
        "def test_always():\n    '''always fine'''\n"
    )
    env = {"MINIMESH_GRADERS": str(graders)}
    out = lab(tree, "grade", "01", "--json", str(tmp_path / "r.json"), env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "a known pod" in out.stdout and "FAIL" in out.stdout and "PASS" in out.stdout
    assert "NotImplementedError: lab 01: pod_effective_resources" in out.stdout
    assert "stage 01 does not pass yet: 1 of 2 checks fail" in out.stdout
    assert json.loads((tmp_path / "r.json").read_text())["counts"] == {"passed": 1, "failed": 1, "skipped": 0}
    assert "failing" in lab(tree, "status").stdout

    assert lab(tree, "solve", "01").returncode == 0
    out = lab(tree, "grade", "01", env=env)
    assert out.returncode == 0, out.stdout
    assert "stage 01 passes" in out.stdout
    state = json.loads((tree / ".minimesh/lab-state.json").read_text())
    assert state["stages"]["01"]["passed"] is True
    assert "passing" in lab(tree, "status").stdout
