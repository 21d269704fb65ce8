"""The local cluster's images: image references mapped to content already on this machine.

There is no registry and no pulling. An image is a few overlay layers (laid over the host's "/", so
Debian's binaries are the base), bind mounts, and the metadata a real image config carries
(entrypoint, cmd, env, working dir, user, stop signal). Known images:

    minimesh/minimesh:<any tag>   the minimesh tree at /opt/minimesh (read-only) and the project's venv at
                                  /opt/minimesh-venv, first on PATH, so `python` is the venv's interpreter
    busybox[:tag]                 busybox applets first on PATH, default command `sh`
    nginx[:tag]                   Debian's nginx with the official image's configuration
    curlimages/curl[:tag]         curl (+ busybox applets), entrypoint `curl`, user 100:101
    alpine[:tag], debian[:tag]    shells
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from minimesh.paths import CLUSTERS_DIR, IMAGE_SOURCE_MOUNT, state_root

VENV_MOUNT = "/opt/minimesh-venv"
BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = "/usr/lib/minimesh-busybox/bin"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STATIC_LAYERS = CLUSTERS_DIR / "local" / "images"


class UnknownImage(LookupError):
    """No local content for this reference (the kubelet reports ErrImagePull / ImagePullBackOff)."""


@dataclass(frozen=True)
class ImageRef:
    repository: str  # normalized, e.g. "library/nginx", "minimesh/minimesh", "curlimages/curl"
    tag: str
    digest: str = ""

    @property
    def canonical(self) -> str:
        """What `status.containerStatuses[].image` shows, as containerd reports it."""
        first = self.repository.split("/", 1)[0]
        registry = "" if ("." in first or ":" in first or first == "localhost") else "docker.io/"
        return f"{registry}{self.repository}:{self.tag}"


def parse_reference(ref: str) -> ImageRef:
    """`nginx`, `nginx:1.27`, `docker.io/library/nginx@sha256:…`, `minimesh/minimesh:dev` → ImageRef."""
    ref = ref.strip()
    if not ref or any(c.isspace() for c in ref):
        raise UnknownImage(f"invalid image reference {ref!r}")
    digest = ""
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if parts[0] not in ("docker.io", "index.docker.io"):
            return ImageRef("/".join(parts), tag, digest)  # another registry: kept whole (unknown here)
        parts = parts[1:]
    if len(parts) == 1:
        parts = ["library", *parts]
    return ImageRef("/".join(parts).lower(), tag, digest)


@dataclass(frozen=True)
class Bind:
    source: str
    target: str
    readonly: bool = True


@dataclass(frozen=True)
class Image:
    ref: ImageRef
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = "/"
    user: str = ""  # "", "uid", "uid:gid", "name" or "name:group" as in an image config
    stop_signal: str = "SIGTERM"
    layers: list[str] = field(default_factory=list)  # top first
    binds: list[Bind] = field(default_factory=list)

    @property
    def image_id(self) -> str:
        """A stable content id (`sha256:…`) over the configuration, like an image config digest."""
        config = {"ref": self.ref.repository, "entrypoint": self.entrypoint, "cmd": self.cmd, "env": self.env,
                  "wd": self.working_dir, "user": self.user, "layers": self.layers,
                  "binds": [(b.source, b.target) for b in self.binds]}
        return "sha256:" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()

    @property
    def repo_digest(self) -> str:
        """What `status.containerStatuses[].imageID` shows."""
        return f"docker.io/{self.ref.repository}@{self.image_id}"


KNOWN_IMAGES = (
    "minimesh/minimesh:<tag>",
    "busybox[:tag]",
    "nginx[:tag]",
    "curlimages/curl[:tag]",
    "alpine[:tag]",
    "debian[:tag]",
)


class ImageStore:
    """Resolves references to images; builds generated layers once per machine (cached under the state root)."""

    def __init__(self, source_root: str | Path, venv: str | Path, cache_dir: Path | None = None):
        self.source_root = str(source_root)
        self.venv = str(venv)
        self.cache_dir = cache_dir or state_root() / "images"

    def resolve(self, reference: str) -> Image:
        ref = parse_reference(reference)
        repo = ref.repository
        if repo == "minimesh/minimesh":
            # as clusters/image/Dockerfile: the tree is mounted, bytecode goes to /tmp
            return Image(
                ref, cmd=["python", "-m", "minimesh.apps.sleep"], working_dir=IMAGE_SOURCE_MOUNT,
                env={"PATH": f"{VENV_MOUNT}/bin:{BASE_PATH}", "PYTHONPATH": IMAGE_SOURCE_MOUNT,
                     "PYTHONUNBUFFERED": "1", "PYTHONPYCACHEPREFIX": "/tmp/pycache", "VIRTUAL_ENV": VENV_MOUNT},
                binds=[Bind(self.source_root, IMAGE_SOURCE_MOUNT), Bind(self.venv, VENV_MOUNT)],
            )
        if repo in ("library/busybox", "library/alpine"):
            return Image(ref, cmd=["sh"] if repo.endswith("busybox") else ["/bin/sh"],
                         env={"PATH": f"{BUSYBOX_APPLETS}:{BASE_PATH}"}, layers=[self.busybox_layer()])
        if repo == "library/nginx":
            return Image(ref, cmd=["nginx", "-g", "daemon off;"], stop_signal="SIGQUIT",
                         env={"PATH": BASE_PATH, "NGINX_VERSION": nginx_version()}, layers=[self.nginx_layer()])
        if repo == "curlimages/curl":
            return Image(ref, entrypoint=["curl"], cmd=["--help"], user="100:101",
                         env={"PATH": f"{BUSYBOX_APPLETS}:{BASE_PATH}"}, layers=[self.busybox_layer()])
        if repo == "library/debian":
            return Image(ref, cmd=["bash"], env={"PATH": BASE_PATH})
        raise UnknownImage(
            f'failed to pull and unpack image "{ref.canonical}": the local cluster has no registry; '
            f"known images: {', '.join(KNOWN_IMAGES)}"
        )

    # ---- generated layers ------------------------------------------------------------------------
    def _build(self, name: str, stamp: str, build) -> str:  # type: ignore[no-untyped-def]
        """Build layer `name` once (content keyed by `stamp`), safely against parallel builders."""
        final = self.cache_dir / name
        if (final / ".stamp").is_file() and (final / ".stamp").read_text() == stamp:
            return str(final / "rootfs")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (final / ".stamp").is_file() and (final / ".stamp").read_text() == stamp:
                return str(final / "rootfs")
            tmp = self.cache_dir / f".{name}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "rootfs").mkdir(parents=True)
            build(tmp / "rootfs")
            (tmp / ".stamp").write_text(stamp)
            old = self.cache_dir / f".{name}.old{os.getpid()}"
            if final.exists():
                final.rename(old)  # running containers keep their open lower dir; drop it lazily below
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        return str(final / "rootfs")

    def busybox_layer(self) -> str:
        applets = busybox_applets()

        def build(root: Path) -> None:
            d = root / BUSYBOX_APPLETS.lstrip("/")
            d.mkdir(parents=True)
            for applet in applets:
                (d / applet).symlink_to(BUSYBOX)

        return self._build("busybox", "1:" + ",".join(applets), build)

    def nginx_layer(self) -> str:
        static = STATIC_LAYERS / "nginx"
        digest = hashlib.sha256()
        for p in sorted(static.rglob("*")):
            if p.is_file():
                digest.update(str(p.relative_to(static)).encode() + p.read_bytes())

        def build(root: Path) -> None:
            shutil.copytree(static, root, dirs_exist_ok=True)
            logs = root / "var/log/nginx"
            logs.mkdir(parents=True, exist_ok=True)
            (logs / "access.log").symlink_to("/dev/stdout")
            (logs / "error.log").symlink_to("/dev/stderr")

        return self._build("nginx", "1:" + digest.hexdigest(), build)


@functools.cache
def busybox_applets() -> list[str]:
    try:
        out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return sorted(a for a in out.split() if a and "/" not in a)


@functools.cache
def nginx_version() -> str:
    try:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
        return out.strip().split("/", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
