"""Build the solved tree (`minimesh/` + every solution) that the project's own tests and the demo run.

Deliberately free of other minimesh imports: `tests/conftest.py` loads this file by path *before*
`minimesh` is imported, so that `import minimesh` then resolves to the solved copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path

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
    dest = (dest or source_root / ".minimesh" / "solved").resolve()
    pkg, sol = source_root / "minimesh", source_root / "solutions" / "minimesh"
    want = _digest(pkg, sol) if sol.exists() else _digest(pkg)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = dest / ".digest"
        if stamp.exists() and stamp.read_text() == want:
            return dest
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(pkg, tmp / "minimesh", ignore=IGNORE)
        if sol.exists():
            shutil.copytree(sol, tmp / "minimesh", ignore=IGNORE, dirs_exist_ok=True)
        for extra in ("clusters", "labs", "pyproject.toml"):
            src = source_root / extra
            if src.is_dir():
                os.symlink(src, tmp / extra)
            elif src.exists():
                shutil.copy2(src, tmp / extra)
        (tmp / ".digest").write_text(want)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        os.chmod(dest, 0o755)
    return dest
