"""A container's identity and privileges from its securityContext, the pod's, and the image (pure).

Capabilities follow containerd: the default set, plus `capabilities.add`, minus `capabilities.drop`
("ALL" allowed in both), everything when privileged. User and groups follow the kubelet + containerd:
runAsUser/runAsGroup override the image user; fsGroup and supplementalGroups are added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# containerd's default capability set (oci.defaultUnixCaps)
DEFAULT_CAPS = (
    "chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid", "setuid", "setfcap",
    "setpcap", "net_bind_service", "sys_chroot", "kill", "audit_write",
)
ALL_CAPS = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
    "checkpoint_restore",
)


class ConfigError(ValueError):
    """The container cannot be created as specified (kubelet: CreateContainerConfigError)."""


def cap_name(name: str) -> str:
    n = name.strip().lower()
    n = n[4:] if n.startswith("cap_") else n
    if n != "all" and n not in ALL_CAPS:
        raise ConfigError(f"unknown capability {name!r}")
    return n


def effective_capabilities(sc: dict[str, Any] | None) -> list[str]:
    """The container's capability (bounding) set, in kernel order."""
    sc = sc or {}
    if sc.get("privileged"):
        return list(ALL_CAPS)
    caps = sc.get("capabilities") or {}
    add = [cap_name(c) for c in caps.get("add") or []]
    drop = [cap_name(c) for c in caps.get("drop") or []]
    have = set(DEFAULT_CAPS)
    # containerd: add ALL first, then drop; drop ALL then add what is listed
    if "all" in add:
        have = set(ALL_CAPS)
    if "all" in drop:
        have = set()
    have |= {c for c in add if c != "all"}
    if "all" not in add:
        have -= {c for c in drop if c != "all"}
    return [c for c in ALL_CAPS if c in have]


@dataclass(frozen=True)
class Passwd:
    """The image's /etc/passwd and /etc/group (the host's: images are layered over "/")."""

    users: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (uid, gid)
    groups: dict[str, int] = field(default_factory=dict)  # name -> gid
    members: dict[str, list[int]] = field(default_factory=dict)  # user name -> supplementary gids

    @classmethod
    def parse(cls, passwd: str, group: str) -> Passwd:
        users: dict[str, tuple[int, int]] = {}
        for line in passwd.splitlines():
            f = line.split(":")
            if len(f) >= 4 and f[2].isdigit() and f[3].isdigit():
                users.setdefault(f[0], (int(f[2]), int(f[3])))
        groups: dict[str, int] = {}
        members: dict[str, list[int]] = {}
        for line in group.splitlines():
            f = line.split(":")
            if len(f) >= 4 and f[2].isdigit():
                groups.setdefault(f[0], int(f[2]))
                for m in filter(None, f[3].split(",")):
                    members.setdefault(m, []).append(int(f[2]))
        return cls(users, groups, members)

    def name_of(self, uid: int) -> str | None:
        return next((n for n, (u, _) in self.users.items() if u == uid), None)


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: list[int]


def _lookup_user(user: str, pw: Passwd) -> tuple[int, int | None, str | None]:
    if user.isdigit():
        uid = int(user)
        name = pw.name_of(uid)
        return uid, (pw.users[name][1] if name else None), name
    if user in pw.users:
        uid, gid = pw.users[user]
        return uid, gid, user
    raise ConfigError(f"unable to find user {user}: no matching entries in passwd file")


def resolve_identity(pod_spec: dict[str, Any], container: dict[str, Any], image_user: str, pw: Passwd) -> Identity:
    psc = pod_spec.get("securityContext") or {}
    csc = container.get("securityContext") or {}
    run_as_user = csc.get("runAsUser", psc.get("runAsUser"))
    run_as_group = csc.get("runAsGroup", psc.get("runAsGroup"))
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))

    image_u, _, image_g = (image_user or "").partition(":")
    if run_as_user is not None:
        uid = int(run_as_user)
        name = pw.name_of(uid)
        gid = pw.users[name][1] if name else 0
    elif image_u:
        if non_root and not image_u.isdigit():
            raise ConfigError(f"container has runAsNonRoot and image has non-numeric user ({image_u}), cannot verify user is non-root")
        uid, found_gid, name = _lookup_user(image_u, pw)
        gid = found_gid if found_gid is not None else 0
    else:
        uid, gid, name = 0, 0, "root"
    if image_g and run_as_group is None and run_as_user is None:
        if image_g.isdigit():
            gid = int(image_g)
        elif image_g in pw.groups:
            gid = pw.groups[image_g]
        else:
            raise ConfigError(f"unable to find group {image_g}: no matching entries in group file")
    if run_as_group is not None:
        gid = int(run_as_group)
    if non_root and uid == 0:
        raise ConfigError("container has runAsNonRoot and image will run as root")

    groups: list[int] = []
    for g in [*(pw.members.get(name, []) if name else []), *(psc.get("supplementalGroups") or []),
              *([psc["fsGroup"]] if psc.get("fsGroup") is not None else [])]:
        if int(g) not in groups:
            groups.append(int(g))
    return Identity(uid, gid, groups)


def no_new_privs(container: dict[str, Any]) -> bool:
    sc = container.get("securityContext") or {}
    return sc.get("allowPrivilegeEscalation") is False and not sc.get("privileged")
