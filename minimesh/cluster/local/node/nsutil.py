"""Thin ctypes wrappers for the Linux calls Python 3.11 lacks: setns, unshare, mount, pivot_root.

Used by the node process (join the host mount namespace, run a step inside another network namespace)
and by the container shim (build a container's mount namespace).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]

T = TypeVar("T")


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            flags,
            data.encode() if data is not None else None,
        ),
        f"mount {source} on {target} ({fstype or 'bind'})",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(f"pivot_root: unsupported architecture {platform.machine()}")
    _check(_libc.syscall(nr, new_root.encode(), put_old.encode()), "pivot_root")


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def ns_inode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` on a short-lived thread that has joined network namespace `netns` (None: here).

    A network namespace is per thread, so the rest of the process stays where it is; sockets created by
    `fn` keep the namespace they were made in.
    """
    if netns is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns_path(netns), os.O_RDONLY)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as e:  # re-raised in the caller
            error.append(e)

    t = threading.Thread(target=run, name=f"netns-{netns}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def write_sysctl(netns: str | None, key: str, value: str) -> None:
    """`sysctl -w key=value` in a network namespace (net.* keys are per namespace)."""
    path = "/proc/sys/" + key.replace(".", "/")
    in_netns(netns, lambda: Path(path).write_text(value))


def join_host_mount_namespace(candidates: list[int]) -> str:
    """Leave the private mount namespace `ip netns exec` created, for the host's.

    `ip netns exec` runs its command in a new mount namespace that is a slave of the host's, so network
    namespaces and tmpfs volumes this process mounted would be invisible to the host (the API server,
    `ip netns exec`, tests). The host's is the one of `candidates` (pids of processes known to live in
    it: the process that started us — `ip netns exec` execs in place — and the control plane). Must
    run while the process is still single-threaded. Returns what happened, for the log.
    """
    me = os.readlink("/proc/self/ns/mnt")
    for pid in candidates:
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/mnt")
            fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        except OSError:
            continue
        try:
            if theirs == me:
                return f"already in the host mount namespace (that of pid {pid})"
            setns(fd, CLONE_NEWNS)
        finally:
            os.close(fd)
        os.chdir("/")
        return f"joined the host mount namespace (that of pid {pid})"
    return "WARNING: could not find the host mount namespace; pod namespaces will not be visible on the host"
