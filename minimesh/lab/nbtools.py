"""Notebook conventions for lab authors: check them, and strip outputs before committing.

A lab notebook `labs/NN-slug.ipynb` (NN and slug from `minimesh.lab.stages`):
- is committed without outputs, execution counts or widget state;
- uses the `python3` kernel (the venv's);
- opens with a markdown cell `# Lab NN — Title` that says what the trainee will build;
- ends with the grader cell `grade("NN")` (imported from `minimesh.lab.notebook`);
- guards cells that only make sense in JupyterLab with `if not nb.HEADLESS:` (CI runs every notebook).

`python -m minimesh.lab.nbtools check [FILES]` lists problems; `strip [FILES]` clears outputs in place.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat

from minimesh import paths
from minimesh.lab import stages

NAME_RE = re.compile(r"^(\d\d)-([a-z0-9-]+)\.ipynb$")


def strip(path: Path) -> bool:
    """Clear outputs, execution counts and widget state; True when the file changed."""
    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after)
        return True
    return False


def problems(path: Path) -> list[str]:
    """What breaks the conventions in one notebook (empty: fine)."""
    out: list[str] = []
    m = NAME_RE.match(path.name)
    if not m:
        return [f"{path.name}: name it NN-slug.ipynb (e.g. 01-sidecar-pattern.ipynb)"]
    try:
        stage = stages.get(m.group(1))
    except stages.UnknownStage as e:
        return [f"{path.name}: {e}"]
    if path.name != stage.notebook:
        out.append(f"{path.name}: stage {stage.id}'s notebook is {stage.notebook}")
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # any parse/validation error is a problem to report, not a crash
        return [*out, f"{path.name}: not a valid notebook: {e}"]
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        out.append(f"{path.name}: kernelspec must be python3 (the venv's kernel)")
    if "widgets" in nb.metadata:
        out.append(f"{path.name}: widget state is saved; run `python -m minimesh.lab.nbtools strip {path}`")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            out.append(f"{path.name}: cell {i} has outputs; run `python -m minimesh.lab.nbtools strip {path}`")
    first = nb.cells[0] if nb.cells else None
    if not first or first.cell_type != "markdown" or not first.source.startswith(f"# Lab {stage.id}"):
        out.append(f"{path.name}: the first cell must be markdown starting '# Lab {stage.id} — …'")
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or code[-1].source.strip() != f'grade("{stage.id}")':
        out.append(f'{path.name}: the last code cell must be exactly grade("{stage.id}")')
    return out


def notebooks(labs: Path | None = None) -> list[Path]:
    return sorted((labs or paths.LABS_DIR).glob("*.ipynb"))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimesh.lab.nbtools", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["check", "strip"])
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args(argv)
    files = args.files or notebooks()
    if args.command == "strip":
        for f in files:
            if strip(f):
                print(f"stripped {f}")
        return 0
    found = [p for f in files for p in problems(f)]
    for p in found:
        print(p, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
