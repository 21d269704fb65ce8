"""The container shim: builds one container and supervises it, like containerd-shim + runc + conmon.

    python -S -m minimesh.cluster.local.node.shim <container dir>/<N>.spec.json

Steps: join the pod's network namespace; new mount and UTS namespaces (hostname = the pod's); an
overlay root (image layers over the host's "/", a fresh upper dir per run); /proc, a read-only /sys, a
small /dev, a private /tmp and /run (which also hides the cluster's state), the pod files and volumes;
pivot_root; then fork the container process, which joins its cgroups and execs through `setpriv` to
drop to its uid/gid/groups and keep only its capabilities. The shim stays as its parent: it turns the
container's stdout/stderr into a CRI log, and writes start/exit records the kubelet reads, so a
restarted kubelet can re-adopt running containers. Standard library only (it starts with -S).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import shutil
import signal
import socket
import stat
import sys
import time
from dataclasses import asdict

from minimesh.cluster.local import runtime_state
from minimesh.cluster.local.node import nsutil
from minimesh.cluster.local.node.runspec import (
    START_ERROR_EXIT_CODE,
    ExitRecord,
    MountSpec,
    RunSpec,
    StartRecord,
    rfc3339,
)

SETPRIV = "/usr/bin/setpriv"
MAX_LINE = 16 * 1024  # longer lines are split into partial (P) records, like containerd
PR_SET_CHILD_SUBREAPER = 36
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}


class StartError(Exception):
    """The container could not be created or started; the message is what `kubectl describe` shows."""


# ---- paths inside the new root ---------------------------------------------------------------------
def resolve_in_root(root: str, path: str, *, depth: int = 0) -> str:
    """Host path of container path `path` under `root`, following symlinks as if `root` were "/".

    Keeps a mount target inside the container root even when the image has symlinks such as
    /var/run -> /run or a volume path crossing an absolute link.
    """
    if depth > 40:
        raise StartError(f"too many levels of symbolic links resolving {path}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    cur = ""
    for i, part in enumerate(parts):
        if part == "..":
            cur = cur.rsplit("/", 1)[0] if "/" in cur else ""
            continue
        host = f"{root}{cur}/{part}"
        if os.path.islink(host):
            target = os.readlink(host)
            rest = "/".join(parts[i + 1 :])
            base = target if target.startswith("/") else f"{cur}/{target}"
            return resolve_in_root(root, f"{base}/{rest}", depth=depth + 1)
        cur = f"{cur}/{part}"
    return f"{root}{cur}" if cur else root


def make_mountpoint(host_target: str, *, is_file: bool) -> None:
    if os.path.lexists(host_target):
        return
    os.makedirs(os.path.dirname(host_target), exist_ok=True)
    if is_file:
        with open(host_target, "a"):
            pass
    else:
        os.makedirs(host_target, exist_ok=True)


def bind(source: str, target: str, *, readonly: bool, recursive: bool = True) -> None:
    flags = nsutil.MS_BIND | (nsutil.MS_REC if recursive else 0)
    nsutil.mount(source, target, None, flags)
    if readonly:
        nsutil.mount(None, target, None, nsutil.MS_BIND | nsutil.MS_REMOUNT | nsutil.MS_RDONLY)


# ---- building the root filesystem ------------------------------------------------------------------
def build_rootfs(spec: RunSpec) -> str:
    upper, work, root = (os.path.join(spec.rootfs_dir, d) for d in ("upper", "work", "merged"))
    for d in (upper, work, root):
        os.makedirs(d, exist_ok=True)
    # Image layers live on the host's own file system, below "/", and overlayfs refuses lower layers
    # that contain each other (ELOOP). They are small, so they are copied into this run's fresh upper
    # dir instead: same view (layer files over the host's), and a restart starts from them again.
    for layer in reversed(spec.layers):
        shutil.copytree(layer, upper, symlinks=True, dirs_exist_ok=True)
    nsutil.mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={upper},workdir={work}")

    nsutil.mount("proc", f"{root}/proc", "proc", nsutil.MS_NOSUID | nsutil.MS_NODEV | nsutil.MS_NOEXEC)
    if not spec.privileged:  # like Docker/containerd: kernel tunables are read-only in a container
        bind(f"{root}/proc/sys", f"{root}/proc/sys", readonly=True)
    sys_flags = nsutil.MS_NOSUID | nsutil.MS_NODEV | nsutil.MS_NOEXEC
    nsutil.mount("sysfs", f"{root}/sys", "sysfs", sys_flags | (0 if spec.privileged else nsutil.MS_RDONLY))
    build_dev(root)
    nsutil.mount("tmpfs", f"{root}/tmp", "tmpfs", nsutil.MS_NOSUID | nsutil.MS_NODEV, "mode=1777")
    nsutil.mount("tmpfs", f"{root}/run", "tmpfs", nsutil.MS_NOSUID | nsutil.MS_NODEV, "mode=755")
    os.makedirs(f"{root}/run/lock", mode=0o1777, exist_ok=True)
    os.chmod(f"{root}/run/lock", 0o1777)
    for hidden in spec.hide:
        host = resolve_in_root(root, hidden)
        if os.path.isdir(host):
            nsutil.mount("tmpfs", host, "tmpfs", nsutil.MS_NOSUID | nsutil.MS_NODEV, "mode=755,size=64k")

    term = termination_log_host_path(spec)
    with open(term, "a"):
        pass
    os.chmod(term, 0o666)
    mounts = [*spec.mounts, MountSpec(target=spec.termination_message_path, source=term)]
    for m in mounts:
        mount_one(root, m)
    return root


def build_dev(root: str) -> None:
    dev = f"{root}/dev"
    nsutil.mount("tmpfs", dev, "tmpfs", nsutil.MS_NOSUID, "mode=755,size=65536k")
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/pts")
    nsutil.mount("devpts", f"{dev}/pts", "devpts", nsutil.MS_NOSUID | nsutil.MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.mkdir(f"{dev}/shm")
    nsutil.mount("shm", f"{dev}/shm", "tmpfs", nsutil.MS_NOSUID | nsutil.MS_NODEV | nsutil.MS_NOEXEC,
                 "mode=1777,size=65536k")


def mount_one(root: str, m: MountSpec) -> None:
    target = resolve_in_root(root, m.target)
    try:
        if m.kind == "tmpfs":
            make_mountpoint(target, is_file=False)
            nsutil.mount("tmpfs", target, "tmpfs", nsutil.MS_NOSUID | nsutil.MS_NODEV, m.options or None)
            return
        if not os.path.exists(m.source):
            raise StartError(f"mount source {m.source} for {m.target} does not exist")
        make_mountpoint(target, is_file=not os.path.isdir(m.source))
        bind(m.source, target, readonly=m.readonly)
    except OSError as e:
        raise StartError(f"error mounting {m.source or m.kind!r} to rootfs at {m.target!r}: {e.strerror or e}") from e


def termination_log_host_path(spec: RunSpec) -> str:
    return os.path.join(spec.container_dir, f"{spec.run}.termination-log")


def enter_root(root: str, readonly: bool) -> None:
    os.chdir(root)
    nsutil.pivot_root(".", ".")
    nsutil.umount(".", nsutil.MNT_DETACH)
    os.chdir("/")
    if readonly:
        nsutil.mount(None, "/", None, nsutil.MS_BIND | nsutil.MS_REMOUNT | nsutil.MS_RDONLY)


def find_executable(cmd: str, env: dict[str, str]) -> str:
    """The program the container runs, looked up like runc does (PATH of the container's env)."""
    if "/" in cmd:
        if not os.path.exists(cmd):
            raise StartError(f'exec: "{cmd}": stat {cmd}: no such file or directory')
        return cmd
    for d in env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        cand = os.path.join(d or ".", cmd)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise StartError(f'exec: "{cmd}": executable file not found in $PATH')


def setpriv_argv(spec: RunSpec) -> list[str]:
    argv = [SETPRIV, f"--reuid={spec.uid}", f"--regid={spec.gid}"]
    argv.append(f"--groups={','.join(map(str, spec.groups))}" if spec.groups else "--clear-groups")
    if spec.no_new_privs:
        argv.append("--no-new-privs")
    if not spec.privileged:
        # As containerd: the bounding set is the container's set, nothing inheritable, no ambient caps
        # (so a non-root user ends up with no capabilities at all after exec, as on a real cluster).
        argv.append("--inh-caps=-all")
        argv.append("--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in spec.capabilities)]))
    return [*argv, "--", *spec.argv]


# ---- supervising -----------------------------------------------------------------------------------
class LogWriter:
    """Turns chunks of one stream into CRI log lines (`<time> <stream> <F|P> <text>`)."""

    def __init__(self, fd: int, stream: str):
        self.fd = fd
        self.stream = stream
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                break
            line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
            self._write(line, partial=False)
        while len(self.buf) >= MAX_LINE:
            chunk, self.buf = self.buf[:MAX_LINE], self.buf[MAX_LINE:]
            self._write(chunk, partial=True)

    def close(self) -> None:
        if self.buf:
            self._write(self.buf, partial=False)
            self.buf = b""

    def _write(self, line: bytes, *, partial: bool) -> None:
        text = line.decode("utf-8", errors="replace")
        os.write(self.fd, runtime_state.cri_line(self.stream, text, partial=partial).encode())


def write_json_at(dir_fd: int, name: str, obj: object) -> None:
    tmp = f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, json.dumps(asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj).encode())  # type: ignore[arg-type]
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def read_at(dir_fd: int, name: str, limit: int) -> bytes:
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    except FileNotFoundError:
        return b""
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            os.lseek(fd, size - limit, os.SEEK_SET)
        return os.read(fd, limit)
    finally:
        os.close(fd)


def cgroup_oom_kills(dir_fds: list[int]) -> int:
    for fd in dir_fds:
        for line in read_at(fd, "memory.oom_control", 4096).decode().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        for line in read_at(fd, "memory.events", 4096).decode().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return 0


def cgroup_pids(dir_fds: list[int]) -> set[int]:
    pids: set[int] = set()
    for fd in dir_fds:
        pids.update(int(p) for p in read_at(fd, "cgroup.procs", 1 << 20).split() if p.isdigit())
    return pids


def children_of(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if int(fields[1]) == ppid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


class Shim:
    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.dir_fd = os.open(spec.container_dir, os.O_RDONLY | os.O_DIRECTORY)
        # <N>.log next to the spec: runtime_state.log_path() of this container and run
        self.log_fd = os.open(f"{spec.run}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640, dir_fd=self.dir_fd)
        self.cgroup_fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in spec.cgroups if os.path.isdir(d)]
        self.started_at = ""
        self.sync_fd = -1  # written to once the container process exists (the kubelet waits on it)

    def fail(self, message: str) -> int:
        rec = ExitRecord(self.spec.container_id, START_ERROR_EXIT_CODE, "StartError", rfc3339(),
                         started_at=self.started_at or rfc3339(), message=message)
        write_json_at(self.dir_fd, f"{self.spec.run}.exit.json", rec)
        return 0

    def run(self) -> int:
        spec = self.spec
        try:
            fd = os.open(spec.netns if spec.netns.startswith("/") else nsutil.netns_path(spec.netns), os.O_RDONLY)
            nsutil.setns(fd, nsutil.CLONE_NEWNET)
            os.close(fd)
            nsutil.unshare(nsutil.CLONE_NEWNS | nsutil.CLONE_NEWUTS)
            nsutil.mount(None, "/", None, nsutil.MS_REC | nsutil.MS_PRIVATE)
            socket.sethostname(spec.hostname)
            root = build_rootfs(spec)
            enter_root(root, spec.readonly_rootfs)
            if not os.path.exists(SETPRIV):
                raise StartError(f"{SETPRIV} is missing from the container root")
            find_executable(spec.argv[0], spec.env)
            wd = spec.working_dir or "/"
            if os.path.exists(wd) and not os.path.isdir(wd):
                raise StartError(f"chdir to cwd ({wd!r}) set in config.json failed: not a directory")
            os.makedirs(wd, exist_ok=True)
        except StartError as e:
            return self.fail(str(e))
        except OSError as e:
            return self.fail(f"failed to create container: {e}")
        if not spec.argv:
            return self.fail("no command specified")
        return self.supervise()

    def supervise(self) -> int:
        spec = self.spec
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        oom_before = cgroup_oom_kills(self.cgroup_fds)
        argv = setpriv_argv(spec)
        pid = os.fork()
        if pid == 0:  # the container process
            try:
                os.setsid()
                for fd in self.cgroup_fds:
                    with contextlib.suppress(OSError):
                        os.write(os.open("cgroup.procs", os.O_WRONLY, dir_fd=fd), str(os.getpid()).encode())
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.closerange(3, 65536)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.chdir(spec.working_dir or "/")
                os.execve(SETPRIV, argv, spec.env)
            except BaseException as e:
                with contextlib.suppress(OSError):
                    os.write(2, f"minimesh shim: cannot start the container process: {e}\n".encode())
                os._exit(START_ERROR_EXIT_CODE)
        os.close(out_w)
        os.close(err_w)
        self.started_at = rfc3339()
        write_json_at(self.dir_fd, f"{spec.run}.start.json",
                      StartRecord(spec.container_id, pid, os.getpid(), self.started_at))
        caps = spec.capabilities if not spec.privileged else ["all"]
        write_json_at(self.dir_fd, "exec.json", runtime_state.ContainerExec(
            pid=pid, uid=spec.uid, gid=spec.gid, supplementary_groups=spec.groups, capabilities=caps,
            env=spec.env, working_dir=spec.working_dir or "/", no_new_privs=spec.no_new_privs,
            privileged=spec.privileged))
        if self.sync_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.sync_fd, b"s")
                os.close(self.sync_fd)
            self.sync_fd = -1

        writers = {out_r: LogWriter(self.log_fd, "stdout"), err_r: LogWriter(self.log_fd, "stderr")}
        sel = selectors.DefaultSelector()
        for fd in writers:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        status: int | None = None
        drain_deadline: float | None = None
        while writers:
            timeout = None if drain_deadline is None else max(0.0, drain_deadline - time.monotonic())
            events = sel.select(timeout)
            if not events and drain_deadline is not None:
                break
            for key, _ in events:
                fd = key.fd
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    continue
                data = os.read(fd, 65536)
                if data:
                    writers[fd].feed(data)
                else:
                    writers.pop(fd).close()
                    sel.unregister(fd)
                    os.close(fd)
            status = self.reap(pid, status)
            if status is not None and drain_deadline is None:
                self.kill_leftovers(pid)
                drain_deadline = time.monotonic() + 2.0
        for w in writers.values():
            w.close()
        while status is None:
            _, st = os.waitpid(pid, 0)
            status = st
        self.kill_leftovers(pid)

        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else 0
        exit_code = 128 + sig if sig else code
        oom = cgroup_oom_kills(self.cgroup_fds) > oom_before
        reason = "OOMKilled" if oom else ("Completed" if exit_code == 0 else "Error")
        message = self.termination_message(exit_code)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("exec.json", dir_fd=self.dir_fd)
        write_json_at(self.dir_fd, f"{spec.run}.exit.json", ExitRecord(
            spec.container_id, exit_code, reason, rfc3339(), started_at=self.started_at, signal=sig, message=message))
        return 0

    def reap(self, main: int, status: int | None) -> int | None:
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return status
            if pid == 0:
                return status
            if pid == main:
                status = st

    def kill_leftovers(self, main: int) -> None:
        """When the main process is gone the container is over: kill what it left (a pid namespace would)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(main, signal.SIGKILL)
        me = os.getpid()
        for _ in range(10):
            victims = cgroup_pids(self.cgroup_fds) | set(children_of(me))
            victims.discard(me)
            if not victims:
                break
            for p in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
            time.sleep(0.02)

    def termination_message(self, exit_code: int) -> str:
        msg = read_at(self.dir_fd, f"{self.spec.run}.termination-log", 4096).decode(errors="replace")
        if not msg and self.spec.termination_message_policy == "FallbackToLogsOnError" and exit_code != 0:
            lines = []
            for raw in read_at(self.dir_fd, f"{self.spec.run}.log", 64 * 1024).decode(errors="replace").splitlines()[-80:]:
                parsed = runtime_state.parse_cri_line(raw)
                if parsed:
                    lines.append(parsed.text)
            msg = "\n".join(lines)[-2048:]
        return msg


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m minimesh.cluster.local.node.shim <run spec json> [sync fd]", file=sys.stderr)
        return 2
    shim = Shim(RunSpec.load(argv[1]))
    shim.sync_fd = int(argv[2]) if len(argv) == 3 else -1
    return shim.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
