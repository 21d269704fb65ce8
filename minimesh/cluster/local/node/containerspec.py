"""From a pod's container + its image + resolved environment to the shim's RunSpec (pure)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from minimesh.cluster.local.images import Image
from minimesh.cluster.local.node import security
from minimesh.cluster.local.node.expansion import command_line, expand
from minimesh.cluster.local.node.runspec import MountSpec, RunSpec
from minimesh.cluster.local.node.security import ConfigError
from minimesh.cluster.local.node.volumes import PreparedVolume, subpath_source


@dataclass(frozen=True)
class PodPaths:
    hosts: str
    resolv_conf: str
    hostname: str


def container_env(image: Image, env: dict[str, str]) -> dict[str, str]:
    """Image env below the pod's (as containerd merges them), with HOSTNAME/HOME defaults."""
    merged = dict(image.env)
    merged.update(env)
    merged.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return merged


def volume_mounts(container: dict[str, Any], volumes: dict[str, PreparedVolume], env: dict[str, str]) -> list[MountSpec]:
    out = []
    for vm in container.get("volumeMounts") or []:
        name = vm["name"]
        if name not in volumes:
            raise ConfigError(f"volumeMount {name!r} of container {container['name']!r} names no volume of the pod")
        vol = volumes[name]
        source = vol.path
        sub = vm.get("subPath") or (expand(vm["subPathExpr"], env) if vm.get("subPathExpr") else "")
        if sub:
            source = subpath_source(vol.path, sub, create=not vol.api_data)
        mount_path = vm["mountPath"]
        if not mount_path.startswith("/"):
            raise ConfigError(f"volumeMount {name!r}: mountPath {mount_path!r} must be absolute")
        out.append(MountSpec(target=mount_path, source=source, readonly=bool(vm.get("readOnly")) or vol.api_data))
    return out


def build_runspec(
    *,
    pod: dict[str, Any],
    container: dict[str, Any],
    image: Image,
    env: dict[str, str],
    volumes: dict[str, PreparedVolume],
    pod_paths: PodPaths,
    passwd: security.Passwd,
    container_id: str,
    run: int,
    container_dir: str,
    netns: str,
    hostname: str,
    hide: list[str],
    cgroups: list[str],
) -> RunSpec:
    full_env = container_env(image, env)
    full_env.setdefault("HOSTNAME", hostname)
    ident = security.resolve_identity(pod.get("spec", {}), container, image.user, passwd)
    if "HOME" not in full_env:
        name = passwd.name_of(ident.uid)
        full_env["HOME"] = "/root" if ident.uid == 0 else (f"/home/{name}" if name else "/")
    argv = command_line(image.entrypoint, image.cmd, container.get("command"), container.get("args"), full_env)
    if not argv:
        raise ConfigError("no command specified")
    sc = container.get("securityContext") or {}
    mounts = [MountSpec(target=b.target, source=b.source, readonly=b.readonly) for b in image.binds]
    mounts += [
        MountSpec(target="/etc/hosts", source=pod_paths.hosts),
        MountSpec(target="/etc/resolv.conf", source=pod_paths.resolv_conf),
        MountSpec(target="/etc/hostname", source=pod_paths.hostname),
    ]
    mounts += volume_mounts(container, volumes, full_env)
    working_dir = container.get("workingDir") or image.working_dir or "/"
    return RunSpec(
        container_id=container_id,
        run=run,
        container_dir=container_dir,
        rootfs_dir=os.path.join(container_dir, "rootfs", str(run)),
        netns=netns,
        hostname=hostname,
        argv=argv,
        env=full_env,
        working_dir=working_dir,
        layers=list(image.layers),
        mounts=mounts,
        uid=ident.uid,
        gid=ident.gid,
        groups=ident.groups,
        capabilities=security.effective_capabilities(sc),
        privileged=bool(sc.get("privileged")),
        no_new_privs=security.no_new_privs(container),
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        hide=hide,
        cgroups=cgroups,
        termination_message_path=container.get("terminationMessagePath") or "/dev/termination-log",
        termination_message_policy=container.get("terminationMessagePolicy") or "File",
    )
