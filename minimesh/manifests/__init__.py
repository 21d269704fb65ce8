"""The YAML the kit applies (bookinfo-lite, sleep, and later the mesh's own), and a loader for it.

`load("bookinfo")` -> the Kubernetes objects of `minimesh/manifests/bookinfo.yaml`, in file order.
Names may carry a sub-directory (`load("lab01/sidecar")`) and may end in `.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


class ManifestError(ValueError):
    """A manifest is missing or malformed; the message names the file and where."""


def available() -> list[str]:
    """Every manifest name under this package (without `.yaml`), sorted."""
    return sorted(str(p.relative_to(HERE).with_suffix("")) for p in HERE.rglob("*.yaml"))


def path(name: str) -> Path:
    """The file for a manifest name; a clear error lists what exists when it does not."""
    rel = name[: -len(".yaml")] if name.endswith(".yaml") else name
    candidate = (HERE / f"{rel}.yaml").resolve()
    if HERE not in candidate.parents or not candidate.is_file():
        raise ManifestError(f"no manifest named {name!r}; available: {', '.join(available()) or 'none'}")
    return candidate


def load_file(file: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file; each must be a Kubernetes object (apiVersion, kind, name)."""
    try:
        docs = list(yaml.safe_load_all(file.read_text()))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise ManifestError(f"{where}: invalid YAML: {e.problem or e}") from None
    objects: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{file}: document {index + 1} is a {type(doc).__name__}, not a Kubernetes object")
        missing = [k for k in ("apiVersion", "kind") if not doc.get(k)]
        if not (doc.get("metadata") or {}).get("name"):
            missing.append("metadata.name")
        if missing:
            raise ManifestError(f"{file}: document {index + 1} ({doc.get('kind', '?')}) lacks {', '.join(missing)}")
        objects.append(doc)
    return objects


def load(name: str) -> list[dict[str, Any]]:
    return load_file(path(name))
