"""Build the solved tree (`minimesh/` + every solution) that the project's own tests and the demo run,
and the starter tree (`minimesh/` + every generated starter) on which every grader must fail.

Deliberately free of minimesh imports (the starter generator is loaded by path): `tests/conftest.py`
loads this file by path *before* `minimesh` is imported, so that `import minimesh` then resolves to the
solved copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


def _digest(*roots: Path) -> str:
    h = hashlib.sha256()
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(root)).encode())
                st = p.stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def build_solved_tree(source_root: Path, dest: Path | None = None) -> Path:
    """Copy `source_root/minimesh` to `dest/minimesh` and overlay `source_root/solutions/minimesh`.

    Returns the root to put on sys.path / PYTHONPATH. Safe to call from parallel test workers.
    """
    source_root = source_root.resolve()
    sol = source_root / "solutions" / "minimesh"

    def overlay(tmp: Path) -> None:
        if sol.exists():
            shutil.copytree(sol, tmp / "minimesh", ignore=IGNORE, dirs_exist_ok=True)

    return _build_tree(source_root, dest or source_root / ".minimesh" / "solved", overlay, salt="")


def build_starter_tree(source_root: Path, dest: Path | None = None) -> Path:
    """Copy `source_root/minimesh` to `dest/minimesh` and write every starter generated from `solutions/`.

    This is what a trainee gets on day one, whatever state the checkout's own `minimesh/` is in; tests
    prove every grader fails on it. Returns the root to put on sys.path / PYTHONPATH.
    """
    source_root = source_root.resolve()
    exercises = _load_exercises()

    def overlay(tmp: Path) -> None:
        exercises.overlay_starters(source_root, tmp)

    salt = Path(exercises.__file__).read_text()  # a changed generator means a different starter
    return _build_tree(source_root, dest or source_root / ".minimesh" / "starter", overlay, salt=salt)


def _load_exercises() -> ModuleType:
    """`minimesh/lab/exercises.py` loaded by path (stdlib-only), keeping this file import-free."""
    import importlib.util
    import sys

    name = "_minimesh_exercises"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("exercises.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


KEEP_VERSIONS = 5  # older builds may still back running clusters and test sessions


def _build_tree(source_root: Path, dest: Path, overlay: Callable[[Path], None], salt: str) -> Path:
    """Build into `dest.<digest>` and point the `dest` symlink at it atomically.

    Returns the versioned directory, not the symlink: a test session or a cluster started from it keeps
    importing the same code even when a newer build replaces the symlink meanwhile.
    """
    dest = dest.absolute()
    pkg, sol = source_root / "minimesh", source_root / "solutions" / "minimesh"
    want = _digest(pkg, sol) if sol.exists() else _digest(pkg)
    if salt:
        want = hashlib.sha256((want + salt).encode()).hexdigest()
    version = dest.with_name(f"{dest.name}.{want[:16]}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (version / ".digest").exists():
            tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(pkg, tmp / "minimesh", ignore=IGNORE)
            overlay(tmp)
            for extra in ("clusters", "labs", "solutions", "tests", "pyproject.toml"):
                src = source_root / extra
                if src.is_dir():
                    os.symlink(src, tmp / extra)
                elif src.exists():
                    shutil.copy2(src, tmp / extra)
            (tmp / ".digest").write_text(want)
            os.chmod(tmp, 0o755)
            shutil.rmtree(version, ignore_errors=True)
            tmp.rename(version)
        link_tmp = dest.with_name(dest.name + f".link{os.getpid()}")
        link_tmp.unlink(missing_ok=True)
        os.symlink(version.name, link_tmp)
        if dest.is_dir() and not dest.is_symlink():  # a tree from before versioned builds
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(link_tmp, dest)
        _prune(dest, keep=version)
    return version


RECENT_SECONDS = 6 * 3600  # a build this young may back a test session or a cluster: never pruned


def _in_use_by_clusters() -> set[Path]:
    """Trees that local clusters run (their pods mount it): read from the clusters' records directly."""
    import json

    base = Path(os.environ.get("MINIMESH_STATE_DIR", "/run/minimesh")) / "clusters"
    used = set()
    for record in base.glob("*/cluster.json"):
        try:
            used.add(Path(json.loads(record.read_text())["source_root"]).resolve())
        except (OSError, ValueError, KeyError):
            continue
    return used


def _prune(dest: Path, keep: Path) -> None:
    import time

    builds = sorted(
        (p for p in dest.parent.glob(f"{dest.name}.*") if p.is_dir() and (p / ".digest").exists()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    in_use = _in_use_by_clusters()
    now = time.time()
    for old in builds[KEEP_VERSIONS:]:
        if old == keep or old.resolve() in in_use or now - old.stat().st_mtime < RECENT_SECONDS:
            continue
        shutil.rmtree(old, ignore_errors=True)
