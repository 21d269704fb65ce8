"""Project tests run against the solved tree: `minimesh/` with every solution applied.

The tree is built before anything imports `minimesh`, then put first on sys.path and PYTHONPATH, so
both this process and every subprocess (cluster daemons, pods of a local cluster) run solved code.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("_minimesh_trees", REPO / "minimesh" / "lab" / "trees.py")
assert _spec and _spec.loader
_trees = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_trees)

SOLVED_ROOT = _trees.build_solved_tree(REPO)
for _name in [m for m in sys.modules if m == "minimesh" or m.startswith("minimesh.")]:
    del sys.modules[_name]
sys.path.insert(0, str(SOLVED_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(SOLVED_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("MINIMESH_REPO", str(REPO))
os.environ["MINIMESH_SOLVED_ROOT"] = str(SOLVED_ROOT)
# `python -m ...` run from the checkout would otherwise put the checkout (the starter) first on sys.path.
os.environ["PYTHONSAFEPATH"] = "1"

import pytest  # noqa: E402


@pytest.fixture
def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
