"""Building the minimesh image (minimesh/minimesh:dev) for kind and minikube, with the docker SDK.

The build context is made here, not by the Docker CLI: exactly the four files the Dockerfile needs
(Dockerfile, .dockerignore, requirements.lock, pyproject.toml), so a checkout's .venv, .git or captures
never travel to the daemon, and the same context serves `docker build` and `minikube image build`.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from minimesh import paths
from minimesh.cluster.provider import ProviderError

IMAGE = paths.MINIMESH_IMAGE
IMAGE_DIR = Path("clusters") / "image"


def repo_root(source_root: Path | None = None) -> Path:
    """The checkout holding requirements.lock: the source tree itself, or (for the solved tree the
    project's tests run) the repository named by MINIMESH_REPO."""
    candidates = [source_root or paths.SOURCE_ROOT]
    if os.environ.get("MINIMESH_REPO"):
        candidates.append(Path(os.environ["MINIMESH_REPO"]))
    for root in candidates:
        if (root / "requirements.lock").is_file() and (root / IMAGE_DIR / "Dockerfile").is_file():
            return root
    raise ProviderError(
        f"cannot find requirements.lock and {IMAGE_DIR}/Dockerfile under {', '.join(map(str, candidates))}: "
        "run from a minimesh checkout"
    )


def context_files(root: Path) -> dict[str, Path]:
    """Archive name -> file, for the image's build context."""
    files = {
        "Dockerfile": root / IMAGE_DIR / "Dockerfile",
        ".dockerignore": root / IMAGE_DIR / ".dockerignore",
        "requirements.lock": root / "requirements.lock",
        "pyproject.toml": root / "pyproject.toml",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ProviderError(f"the image's build context is incomplete, missing: {', '.join(missing)}")
    return files


def context_tar(files: dict[str, Path]) -> bytes:
    """A reproducible tar of the context (sorted, zero mtimes/owners): same inputs, same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(files):
            data = files[name].read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_context_dir(files: dict[str, Path], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        (dest / name).write_bytes(src.read_bytes())
    return dest


def build_messages(events: Iterable[dict[str, Any]]) -> Iterable[str]:
    """The text lines of a docker build's JSON event stream; a build error raises ProviderError."""
    for event in events:
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail", {}).get("message") or event.get("error")
            raise ProviderError(f"building {IMAGE} failed: {str(detail).strip()}")
        text = str(event.get("stream", "")).strip()
        if text:
            yield text


def docker_client() -> Any:
    """A docker SDK client for a reachable engine, or a ProviderError saying how to get one."""
    try:
        import docker
    except ImportError:
        raise ProviderError(
            "the docker SDK is missing: install the lab extras (.venv/bin/pip install -e '.[lab]')"
        ) from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # DockerException, requests' ConnectionError...: all mean "no engine"
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ProviderError(
            f"the Docker engine is not reachable at {host} ({type(e).__name__}): start Docker "
            "(Docker Desktop, or `sudo systemctl start docker`) and make sure your user may use it"
        ) from None
    return client


def build_image(
    client: Any, root: Path | None = None, *, tag: str = IMAGE, progress: Callable[[str], None] | None = None
) -> str:
    """Build the image with the SDK (low-level API, to stream progress); returns the tag."""
    tar = context_tar(context_files(repo_root(root)))
    events = client.api.build(
        fileobj=io.BytesIO(tar), custom_context=True, tag=tag, rm=True, forcerm=True, decode=True
    )
    for line in build_messages(events):
        if progress:
            progress(line)
    return tag
