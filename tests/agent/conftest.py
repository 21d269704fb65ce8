"""Make `agent_pod` importable, and give each test its own pod network namespace (see agent_pod.py)."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)

from agent_pod import POD_IP, Pod, sh  # noqa: E402


@pytest.fixture
def pod() -> Iterator[Pod]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    name = f"mmtest-agent-{secrets.token_hex(4)}"
    # not pytest's tmp_path: the agent runs as uid 1337, which cannot enter /tmp/pytest-of-root
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    tmp.chmod(0o755)
    sh("ip", "netns", "add", name)
    p = Pod(name, tmp)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        # the pod's own address, so INSTANCE_IP is a real local address as in a pod
        sh("ip", "-n", name, "addr", "add", f"{POD_IP}/32", "dev", "lo")
        yield p
    finally:
        p.stop_all()
        sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
