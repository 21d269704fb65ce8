"""Lab notebooks follow the conventions (minimesh.lab.nbtools) and are committed without outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest

from minimesh.lab import nbtools, stages

REPO = Path(os.environ["MINIMESH_REPO"])
NOTEBOOKS = sorted((REPO / "labs").glob("*.ipynb"))


def test_there_are_notebooks_for_stage_0_and_1() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {stages.get("00").notebook, stages.get("01").notebook} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_conventions(path: Path) -> None:
    assert nbtools.problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_code_cells_compile(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            compile(cell.source, f"{path.name}[cell {i}]", "exec")


def test_strip_removes_outputs(tmp_path: Path) -> None:
    src = tmp_path / "01-sidecar-pattern.ipynb"
    shutil.copy(NOTEBOOKS[0], src)
    nb = nbformat.read(src, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    code.execution_count = 3
    nb.metadata["widgets"] = {"state": {}}
    nbformat.write(nb, src)
    assert any("has outputs" in p for p in nbtools.problems(src))
    assert nbtools.strip(src) is True
    assert nbtools.strip(src) is False
    assert not any("outputs" in p or "widget" in p for p in nbtools.problems(src))


def test_bad_names_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "1-setup.ipynb"
    bad.write_text("{}")
    assert "name it NN-slug.ipynb" in nbtools.problems(bad)[0]
    wrong = tmp_path / "01-setup.ipynb"
    shutil.copy(NOTEBOOKS[0], wrong)
    assert "stage 01's notebook is 01-sidecar-pattern.ipynb" in nbtools.problems(wrong)[0]
