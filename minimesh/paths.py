"""Where things live: the source tree, the venv, per-cluster state."""

from __future__ import annotations

import os
from pathlib import Path

# The tree the running code was imported from. Pods on the local cluster run this same tree (mounted at
# IMAGE_SOURCE_MOUNT), so a solved copy of the project runs solved pods.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = SOURCE_ROOT / "minimesh"
MANIFESTS = PACKAGE_ROOT / "manifests"
CLUSTERS_DIR = SOURCE_ROOT / "clusters"
LABS_DIR = SOURCE_ROOT / "labs"
SOLUTIONS_DIR = SOURCE_ROOT / "solutions"

# Inside a container of the minimesh image the tree is mounted here (kind: node extraMount + hostPath).
IMAGE_SOURCE_MOUNT = "/opt/minimesh"
MINIMESH_IMAGE = "minimesh/minimesh:dev"


def venv_python() -> Path:
    """The project's interpreter (built from /usr/bin/python3 so uid 1337 can run it)."""
    return SOURCE_ROOT / ".venv" / "bin" / "python"


def state_root() -> Path:
    """Root of per-cluster state for the local provider (override with MINIMESH_STATE_DIR)."""
    return Path(os.environ.get("MINIMESH_STATE_DIR", "/run/minimesh"))
