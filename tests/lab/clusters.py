"""Local clusters for the lab tests: one per tree, uniquely named, always removed."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def tree_env(tree: Path, cluster: str, **extra: str) -> dict[str, str]:
    """Environment of a process that runs `tree`'s code against local cluster `cluster`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MINIMESH_GRADERS", "MINIMESH_PROVIDER")}
    env.update(PYTHONPATH=str(tree), MINIMESH_CLUSTER=cluster, MINIMESH_PROVIDER="local", COLUMNS="200", **extra)
    return env


def minimesh(tree: Path, cluster: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minimesh", *args], env=tree_env(tree, cluster), cwd=tree,
                          capture_output=True, text=True, timeout=timeout)


def unique_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"  # <= 15 characters, as cluster names must be


@contextmanager
def local_cluster(tree: Path, prefix: str, up: bool = True) -> Iterator[str]:
    """A local cluster started from `tree` (its pods run that tree's code); removed on exit."""
    name = unique_name(prefix)
    try:
        if up:
            res = minimesh(tree, name, "cluster", "up", "--name", name)
            if res.returncode:
                raise RuntimeError(f"cluster up {name} failed:\n{res.stdout}\n{res.stderr}")
        yield name
    finally:
        down = minimesh(tree, name, "cluster", "down", "--name", name, timeout=300)
        if down.returncode:  # say so: a leftover cluster costs every later run
            again = minimesh(tree, name, "cluster", "down", "--name", name, timeout=300)
            assert again.returncode == 0, f"cluster down {name}:\n{down.stdout}{down.stderr}\n{again.stdout}{again.stderr}"
