"""The minimesh image, checked statically: Dockerfile facts, the build context, the ignore files, and
that the dependency list the Dockerfile computes is fully pinned by requirements.lock."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from minimesh.cluster import docker_images
from minimesh.cluster.provider import ProviderError

REPO = Path(os.environ.get("MINIMESH_REPO", Path(__file__).resolve().parents[2]))
DOCKERFILE = REPO / "clusters" / "image" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_base_is_python_311_slim_bookworm_pinned_by_digest() -> None:
    ins = instructions()
    arg = dict(i[1].split("=", 1) for i in ins if i[0] == "ARG" and "=" in i[1])
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", arg["PYTHON_IMAGE"])
    assert ins[1] == ("FROM", "${PYTHON_IMAGE}")


def test_tools_env_and_workdir() -> None:
    ins = instructions()
    runs = " ".join(args for word, args in ins if word == "RUN")
    for pkg in ("iptables", "iproute2", "tcpdump", "curl"):
        assert re.search(rf"apt-get install [^&]*\b{pkg}\b", runs), pkg
    assert "rm -rf /var/lib/apt/lists/*" in runs  # keep the image small
    env = " ".join(args for word, args in ins if word == "ENV")
    assert "PYTHONPATH=/opt/minimesh" in env
    assert ("WORKDIR", "/opt/minimesh") in ins


def test_the_code_is_not_copied_in() -> None:
    copies = [args for word, args in instructions() if word in ("COPY", "ADD")]
    assert copies == ["requirements.lock pyproject.toml /tmp/minimesh-deps/"]


def test_dependencies_the_dockerfile_installs_are_all_pinned_by_the_lock(tmp_path: Path) -> None:
    # run the Dockerfile's own one-liner against this checkout's pyproject.toml
    (run,) = [args for word, args in instructions() if word == "RUN" and "tomllib" in args]
    one_liner = re.search(r'python -c "(.*?)" >', run)
    assert one_liner
    code = one_liner[1].replace("/tmp/minimesh-deps/", f"{REPO}/")
    wanted = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    reqs = [Requirement(r) for r in wanted if r.strip()] + [Requirement("mitmproxy")]
    assert len(reqs) > 10
    locked = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            locked[canonicalize_name(name)] = version.strip()
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is installed in the image but not pinned in requirements.lock"
        assert req.specifier.contains(locked[name], prereleases=True), f"{req} vs locked {locked[name]}"
    assert locked["mitmproxy"] == "11.0.2"


def test_build_context_is_exactly_what_the_dockerfile_reads() -> None:
    files = docker_images.context_files(REPO)
    tar_bytes = docker_images.context_tar(files)
    assert tar_bytes == docker_images.context_tar(files)  # reproducible
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = tar.getnames()
        assert names == sorted([".dockerignore", "Dockerfile", "pyproject.toml", "requirements.lock"])
        member = tar.extractfile("requirements.lock")
        assert member and member.read() == (REPO / "requirements.lock").read_bytes()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())


def test_context_dir_for_minikube_image_build(tmp_path: Path) -> None:
    out = docker_images.write_context_dir(docker_images.context_files(REPO), tmp_path / "ctx")
    assert sorted(p.name for p in out.iterdir()) == [".dockerignore", "Dockerfile", "pyproject.toml", "requirements.lock"]


@pytest.mark.parametrize("name", [".dockerignore", "Dockerfile.dockerignore"])
def test_ignore_files_exclude_everything_but_the_inputs(name: str) -> None:
    patterns = [ln.strip() for ln in (REPO / "clusters" / "image" / name).read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:] for p in patterns[1:]}
    assert all(p.startswith("!") for p in patterns[1:])
    assert {"requirements.lock", "pyproject.toml"} <= allowed <= {"requirements.lock", "pyproject.toml", "Dockerfile"}


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    (tmp_path / "clusters" / "image").mkdir(parents=True)
    (tmp_path / "clusters" / "image" / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(ProviderError, match=r"missing: .*\.dockerignore.*requirements.lock.*pyproject.toml"):
        docker_images.context_files(tmp_path)


def test_build_errors_surface_the_daemon_message() -> None:
    events = [{"stream": "Step 1/9 : FROM x\n"}, {"stream": "\n"}, {"errorDetail": {"message": "apt-get failed"}, "error": "apt-get failed"}]
    seen = []
    with pytest.raises(ProviderError, match="building minimesh/minimesh:dev failed: apt-get failed"):
        for line in docker_images.build_messages(events):
            seen.append(line)
    assert seen == ["Step 1/9 : FROM x"]


def test_no_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(ProviderError, match=r"Docker engine is not reachable at unix://.*no-docker\.sock.*start Docker"):
        docker_images.docker_client()


def test_repo_root_finds_the_checkout_from_the_solved_tree() -> None:
    assert (docker_images.repo_root() / "requirements.lock").is_file()
