"""Every lab notebook runs top to bottom, headless, on a local cluster with the solutions applied."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from minimesh.lab import stages

from .clusters import local_cluster

REPO = Path(os.environ["MINIMESH_REPO"])
SOLVED = Path(os.environ["MINIMESH_SOLVED_ROOT"])

pytestmark = [pytest.mark.cluster, pytest.mark.notebook, pytest.mark.slow, pytest.mark.timeout(2400)]


def _execute(path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**os.environ, **env})  # passed on to the kernel's start
    return nb


def _grade_output(nb: nbformat.NotebookNode) -> str:
    """The grade table's text (the cell also shows a progress bar)."""
    cell = [c for c in nb.cells if c.cell_type == "code"][-1]
    texts = [o.get("data", {}).get("text/plain", "") for o in cell.outputs]
    return next((t for t in texts if t.startswith("stage ")), "\n".join(texts))


def test_notebooks_run_in_order(need_root: None) -> None:
    books = [REPO / "labs" / s.notebook for s in stages.STAGES if (REPO / "labs" / s.notebook).exists()]
    assert [b.name for b in books][:2] == ["00-setup.ipynb", "01-sidecar-pattern.ipynb"]
    with local_cluster(SOLVED, "nbk", up=False) as name:  # notebook 00 creates it
        env = {"MINIMESH_CLUSTER": name, "MINIMESH_PROVIDER": "local", "MINIMESH_HEADLESS": "1",
               "PYTHONPATH": str(SOLVED)}
        for book in books:
            nb = _execute(book, env)
            out = _grade_output(nb)
            stage = book.name[:2]
            assert out.startswith(f"stage {stage}: PASS"), f"{book.name} grade cell:\n{out}"
