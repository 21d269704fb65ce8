"""Pod volumes on the node: where each volume lives on disk, and what its files contain.

    <pod dir>/volumes/kubernetes.io~empty-dir/<name>/      (medium Memory: a tmpfs mounted there)
    <pod dir>/volumes/kubernetes.io~configmap/<name>/      atomic_writer layout (..data symlink swap)
    <pod dir>/volumes/kubernetes.io~secret/<name>/
    <pod dir>/volumes/kubernetes.io~projected/<name>/
    <pod dir>/volumes/kubernetes.io~downward-api/<name>/
    hostPath: the host path itself (through the cluster's extra_mounts first, like a kind node)

`payload()` is pure (objects come from the informer caches, tokens from the TokenManager); `VolumeManager`
does the file system work and remembers which tmpfs it mounted so teardown can unmount it.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minimesh.cluster.local.node import atomic_writer, quantity
from minimesh.cluster.local.node.atomic_writer import FileProjection, Payload
from minimesh.cluster.local.node.envvars import Getter, PodContext, field_ref, resource_field_ref
from minimesh.cluster.local.node.security import ConfigError

PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "projected": "kubernetes.io~projected",
    "downwardAPI": "kubernetes.io~downward-api",
}
SUPPORTED = (*PLUGIN_DIRS, "hostPath")
DEFAULT_MODE = 0o644


class MountError(Exception):
    """A volume cannot be set up (event FailedMount; the pod waits in ContainerCreating)."""

    def __init__(self, volume: str, message: str):
        self.volume = volume
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {message}')


TokenSource = Callable[[dict[str, Any], dict[str, Any]], Awaitable[str]]  # (pod, serviceAccountToken source)


def volume_type(volume: dict[str, Any]) -> str:
    for key in volume:
        if key != "name":
            return key
    return ""


# ---- payloads (pure) -------------------------------------------------------------------------------
def _items(name: str, data: dict[str, bytes], items: list[dict[str, Any]] | None, default_mode: int,
           optional: bool, kind: str) -> Payload:
    if not items:
        return {k: FileProjection(v, default_mode) for k, v in data.items()}
    out: Payload = {}
    for it in items:
        if it["key"] not in data:
            if optional:
                continue
            raise ConfigError(f"{kind} references non-existent {kind} key: {it['key']}")
        out[it["path"]] = FileProjection(data[it["key"]], it.get("mode", default_mode))
    return out


def configmap_files(source: dict[str, Any], namespace: str, get: Getter, default_mode: int) -> Payload:
    name = source.get("name", "")
    cm = get(namespace, name)
    if cm is None:
        if source.get("optional"):
            return {}
        raise ConfigError(f'configmap "{name}" not found')
    data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return _items(name, data, source.get("items"), source.get("defaultMode", default_mode),
                  bool(source.get("optional")), "configmap")


def secret_files(source: dict[str, Any], namespace: str, get: Getter, default_mode: int, *, key: str = "name") -> Payload:
    name = source.get(key, "")
    sec = get(namespace, name)
    if sec is None:
        if source.get("optional"):
            return {}
        raise ConfigError(f'secret "{name}" not found')
    data = {k: base64.b64decode(v) for k, v in (sec.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (sec.get("stringData") or {}).items()})
    return _items(name, data, source.get("items"), source.get("defaultMode", default_mode),
                  bool(source.get("optional")), "secret")


def downward_files(source: dict[str, Any], ctx: PodContext, default_mode: int) -> Payload:
    out: Payload = {}
    for it in source.get("items") or []:
        if "fieldRef" in it:
            value = field_ref(ctx, it["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in it:
            value = resource_field_ref(ctx, it["resourceFieldRef"], None)
        else:
            continue
        out[it["path"]] = FileProjection(value.encode(), it.get("mode", source.get("defaultMode", default_mode)))
    return out


async def payload(volume: dict[str, Any], ctx: PodContext, get_configmap: Getter, get_secret: Getter,
                  token: TokenSource) -> Payload:
    ns = ctx.pod["metadata"]["namespace"]
    kind = volume_type(volume)
    src = volume[kind]
    if kind == "configMap":
        return configmap_files(src, ns, get_configmap, DEFAULT_MODE)
    if kind == "secret":
        return secret_files(src, ns, get_secret, DEFAULT_MODE, key="secretName")
    if kind == "downwardAPI":
        return downward_files(src, ctx, DEFAULT_MODE)
    if kind == "projected":
        mode = src.get("defaultMode", DEFAULT_MODE)
        out: Payload = {}
        for s in src.get("sources") or []:
            if "serviceAccountToken" in s:
                sat = s["serviceAccountToken"]
                out[sat["path"]] = FileProjection((await token(ctx.pod, sat)).encode(), mode)
            elif "configMap" in s:
                out.update(configmap_files({**s["configMap"], "defaultMode": mode}, ns, get_configmap, mode))
            elif "secret" in s:
                out.update(secret_files({**s["secret"], "defaultMode": mode}, ns, get_secret, mode))
            elif "downwardAPI" in s:
                out.update(downward_files({**s["downwardAPI"], "defaultMode": mode}, ctx, mode))
        return out
    raise ConfigError(f"volume type {kind} has no file payload")


def resolve_host_path(path: str, extra_mounts: list[dict[str, str]]) -> str:
    """A hostPath as the node sees it: kind-style extraMounts map node paths to host paths."""
    norm = os.path.normpath(path)
    for m in sorted(extra_mounts, key=lambda m: len(m.get("containerPath", "")), reverse=True):
        cp = os.path.normpath(m.get("containerPath", ""))
        if cp and (norm == cp or norm.startswith(cp.rstrip("/") + "/")):
            return m["hostPath"] + norm[len(cp):]
    return norm


def check_host_path(name: str, path: str, typ: str) -> None:
    """hostPath `type` checks (and the *OrCreate creations) as the kubelet does them."""
    if typ in ("", None):
        return
    if typ == "DirectoryOrCreate":
        if not os.path.exists(path):
            os.makedirs(path, mode=0o755, exist_ok=True)
        typ = "Directory"
    if typ == "FileOrCreate":
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a"):
                pass
            os.chmod(path, 0o644)
        typ = "File"
    if not os.path.exists(path):
        raise MountError(name, f"hostPath type check failed: {path} does not exist" if typ != "Directory"
                         else f"hostPath type check failed: {path} is not a directory")
    mode = os.stat(path).st_mode
    checks = {
        "Directory": (stat.S_ISDIR, "a directory"), "File": (stat.S_ISREG, "a file"),
        "Socket": (stat.S_ISSOCK, "a socket file"), "CharDevice": (stat.S_ISCHR, "a character device"),
        "BlockDevice": (stat.S_ISBLK, "a block device"),
    }
    if typ not in checks:
        raise MountError(name, f"unknown hostPath type {typ!r}")
    fn, what = checks[typ]
    if not fn(mode):
        raise MountError(name, f"hostPath type check failed: {path} is not {what}")


# ---- the manager (I/O) -----------------------------------------------------------------------------
@dataclass
class PreparedVolume:
    path: str  # host path a volumeMount binds (subPath is resolved below it)
    api_data: bool  # configMap/secret/projected/downwardAPI: always mounted read-only


class VolumeManager:
    def __init__(self, pod_dir: Path, extra_mounts: list[dict[str, str]], get_configmap: Getter,
                 get_secret: Getter, token: TokenSource):
        self.pod_dir = pod_dir
        self.extra_mounts = extra_mounts
        self.get_configmap = get_configmap
        self.get_secret = get_secret
        self.token = token

    def volume_dir(self, volume: dict[str, Any]) -> Path:
        return self.pod_dir / "volumes" / PLUGIN_DIRS[volume_type(volume)] / volume["name"]

    async def setup(self, ctx: PodContext) -> dict[str, PreparedVolume]:
        """Create/refresh every volume of the pod; raises MountError for the first that fails."""
        spec = ctx.pod.get("spec", {})
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        out: dict[str, PreparedVolume] = {}
        for vol in spec.get("volumes") or []:
            name = vol["name"]
            kind = volume_type(vol)
            if kind not in SUPPORTED:
                raise MountError(name, f"volume type {kind!r} is not supported by the local cluster "
                                       f"(supported: {', '.join(SUPPORTED)})")
            try:
                if kind == "hostPath":
                    hp = vol["hostPath"]
                    path = resolve_host_path(hp["path"], self.extra_mounts)
                    check_host_path(name, path, hp.get("type", ""))
                    out[name] = PreparedVolume(path, False)
                elif kind == "emptyDir":
                    d = self.volume_dir(vol)
                    if not d.exists():
                        d.mkdir(parents=True)
                        os.chmod(d, 0o777)
                    if vol["emptyDir"].get("medium") == "Memory" and not os.path.ismount(d):
                        size = vol["emptyDir"].get("sizeLimit")
                        opts = "mode=0777" + (f",size={_bytes(size)}" if size else "")
                        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], check=True,
                                       capture_output=True)
                    if fs_group is not None:
                        os.chown(d, -1, int(fs_group))
                        os.chmod(d, 0o2777)
                    out[name] = PreparedVolume(str(d), False)
                else:
                    files = await payload(vol, ctx, self.get_configmap, self.get_secret, self.token)
                    d = self.volume_dir(vol)
                    atomic_writer.write(d, files, gid=int(fs_group) if fs_group is not None else None)
                    out[name] = PreparedVolume(str(d), True)
            except MountError:
                raise
            except ConfigError as e:
                raise MountError(name, str(e)) from None
            except (OSError, ValueError, subprocess.CalledProcessError) as e:
                raise MountError(name, str(e)) from None
        return out

    def teardown(self) -> None:
        """Unmount tmpfs volumes of the pod (the caller removes the directory)."""
        base = self.pod_dir / "volumes"
        if not base.exists():
            return
        for d in base.glob("*/*"):
            if os.path.ismount(d):
                subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _bytes(size: str) -> int:
    return int(quantity.parse(size))


def subpath_source(volume_path: str, sub_path: str, *, create: bool) -> str:
    """Host path of `subPath` inside a volume, refusing anything that escapes the volume."""
    if sub_path.startswith("/") or ".." in sub_path.split("/"):
        raise ConfigError(f"subPath {sub_path!r} must be a relative path without '..'")
    target = os.path.join(volume_path, sub_path)
    if create and not os.path.lexists(target):
        os.makedirs(target, mode=0o777, exist_ok=True)
        os.chmod(target, 0o777)
    real = os.path.realpath(target)
    base = os.path.realpath(volume_path)
    if real != base and not real.startswith(base + "/"):
        raise ConfigError(f"subPath {sub_path!r} resolves outside the volume")
    if not os.path.exists(real):
        raise ConfigError(f"subPath {sub_path!r} does not exist in the volume")
    return real
