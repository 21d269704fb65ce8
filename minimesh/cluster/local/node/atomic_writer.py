"""The kubelet's AtomicWriter: publish a set of files into a volume directory all at once.

    <dir>/..2024_05_01_10_00_00.123456789/   the payload of one version
    <dir>/..data -> ..2024_05_01_...          swapped with a rename, so readers see old or new, never half
    <dir>/<key>  -> ..data/<key>              user-visible names (top-level path components)

Containers bind-mount <dir>, so a ConfigMap/Secret/projected volume changes under a running container
exactly as on a real node (subPath mounts do not follow, as on a real node).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

DATA = "..data"


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int = 0o644


Payload = dict[str, FileProjection]  # relative path -> content


def validate_path(rel: str) -> None:
    if not rel or rel.startswith("/") or ".." in rel.split("/") or rel.startswith(".."):
        raise ValueError(f"invalid file path {rel!r}: must be relative, without '..' and not start with '..'")


def write(directory: Path, payload: Payload, *, gid: int | None = None) -> bool:
    """Make `directory` show exactly `payload`. Returns False when the content was already current."""
    for rel in payload:
        validate_path(rel)
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / DATA
    current = directory / os.readlink(data_link) if data_link.is_symlink() else None
    if current is not None and _same(current, payload):
        return False

    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    version = directory / f"..{stamp}"
    version.mkdir(mode=0o755)
    for rel, proj in payload.items():
        path = version / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(proj.data)
        os.chmod(path, proj.mode)
        if gid is not None:
            os.chown(path, -1, gid)
    if gid is not None:
        os.chown(version, -1, gid)

    tmp_link = directory / "..data_tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(version.name)
    tmp_link.replace(data_link)

    wanted = {rel.split("/", 1)[0] for rel in payload}
    for name in wanted:
        link = directory / name
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            link.symlink_to(f"{DATA}/{name}")
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in (DATA, version.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name not in wanted and entry.is_symlink():
            entry.unlink()
    return True


def _same(current: Path, payload: Payload) -> bool:
    try:
        files = {str(p.relative_to(current)) for p in current.rglob("*") if p.is_file()}
        if files != set(payload):
            return False
        for rel, proj in payload.items():
            p = current / rel
            if p.read_bytes() != proj.data or (p.stat().st_mode & 0o7777) != proj.mode:
                return False
        return True
    except OSError:
        return False
