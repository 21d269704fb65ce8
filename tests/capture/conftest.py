"""Fixtures for the capture tests: throwaway network namespaces (see tests/netns_support.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_support():
    name = "mm_netns_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "netns_support.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def netns_support():
    support = _load_support()
    why = support.need_root()
    if why:
        pytest.skip(why)
    return support
