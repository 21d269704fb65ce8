"""One pod's life on the node: sandbox, volumes, containers in kubelet order, probes, status, deletion.

A PodWorker is an asyncio task per pod. It is level-triggered: every wake-up (pod changed, container
exited, probe verdict changed, a back-off or token refresh is due) runs `sync()`, which looks at what is
running, asks `podlogic.plan()` what to do next, does it, and patches the pod status when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minimesh.cluster.local import runtime_state
from minimesh.cluster.local.images import Image, UnknownImage
from minimesh.cluster.local.node import podlogic
from minimesh.cluster.local.node.containerspec import PodPaths, build_runspec
from minimesh.cluster.local.node.envvars import PodContext, make_environment
from minimesh.cluster.local.node.podfiles import pod_files
from minimesh.cluster.local.node.probes import ProbeSpec, ProbeWorker, exec_probe, http_probe, named_port
from minimesh.cluster.local.node.runspec import ExitRecord, read_exit
from minimesh.cluster.local.node.runtime import Run
from minimesh.cluster.local.node.sandbox import Sandbox, SandboxError
from minimesh.cluster.local.node.security import ConfigError
from minimesh.cluster.local.node.volumes import MountError, PreparedVolume, VolumeManager
from minimesh.k8s.aclient import ApiError, resource_path

if TYPE_CHECKING:
    from minimesh.cluster.local.node.kubelet import Kubelet

log = logging.getLogger(__name__)
IMAGE_BACKOFF_KEY = "image:"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class CRec:
    """What the worker knows about one container of the pod."""

    spec: dict[str, Any]
    init: bool
    runs: int = 0  # runs started so far; the latest run is number runs-1 (= restartCount)
    run: Run | None = None
    exits: dict[int, ExitRecord] = field(default_factory=dict)  # run number -> how it ended
    waiting: tuple[str, str] | None = None  # (reason, message) while it cannot (re)start
    image: Image | None = None
    started: bool = False  # past its startup probe
    ready: bool = False
    unhealthy: bool = False
    stopping: bool = False
    finished: float = 0.0  # wall time of the last exit (back-off is counted from it)
    run_image: str = ""  # the image reference the current run was started from
    kill_reason: str = ""
    probes: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    probe_workers: dict[str, ProbeWorker] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def sidecar(self) -> bool:
        return self.init and podlogic.is_sidecar(self.spec)

    @property
    def running(self) -> bool:
        return self.run is not None and self.run.running

    @property
    def last_exit(self) -> ExitRecord | None:
        return self.exits.get(self.runs - 1)

    def view(self) -> podlogic.CView:
        return podlogic.CView(
            name=self.name, running=self.running, started=self.running and self.started, runs=self.runs,
            last_exit_code=self.last_exit.exit_code if self.last_exit else None,
            unhealthy=self.unhealthy, stopping=self.stopping,
        )


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]):
        self.k = kubelet
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.wake = asyncio.Event()
        self.removed = False  # gone from the API (force-deleted): stop without a final DELETE
        self.sandbox: Sandbox | None = None
        self.terminal: str | None = None
        self.terminal_reason = ("", "")
        self.start_time: str = (pod.get("status") or {}).get("startTime") or ""
        self.last_status: dict[str, Any] | None = None
        self.mount_error: str | None = None
        self.sandbox_error: str | None = None
        self.retry_at: float | None = None
        self.crecs: dict[str, CRec] = {}
        self.bg: set[asyncio.Task[Any]] = set()
        self.sandbox_torn_down = False
        self._sync_containers()

    # ---- plumbing --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    @property
    def pod_dir(self) -> Path:
        return runtime_state.pod_dir(self.k.layout.pods_dir, self.uid)

    def cdir(self, name: str) -> Path:
        return runtime_state.container_dir(self.k.layout.pods_dir, self.uid, name)

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self._sync_containers()
        self.wake.set()

    def _sync_containers(self) -> None:
        spec = self.pod.get("spec", {})
        for c in spec.get("initContainers") or []:
            if c["name"] not in self.crecs:
                self.crecs[c["name"]] = CRec(c, True)
            self.crecs[c["name"]].spec = c
        for c in spec.get("containers") or []:
            if c["name"] not in self.crecs:
                self.crecs[c["name"]] = CRec(c, False)
            self.crecs[c["name"]].spec = c

    def event(self, type_: str, reason: str, message: str, c: CRec | None = None) -> None:
        self.k.recorder.emit(self.pod, type_, reason, message, c.name if c else None, init=bool(c and c.init))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.bg.add(task)
        task.add_done_callback(self.bg.discard)

    def adopt(self) -> None:
        """Pick up containers a previous node process started (their shims kept running)."""
        rec = runtime_state.read_pod_record(self.k.layout.pods_dir, self.uid)
        if rec and rec.pod_ip:
            self.sandbox = Sandbox(rec.netns, rec.pod_ip)
        for c in self.crecs.values():
            d = self.cdir(c.name)
            if not d.is_dir():
                continue
            numbers = sorted(int(p.name.split(".")[0]) for p in d.glob("*.start.json") if p.name.split(".")[0].isdigit())
            numbers += [int(p.name.split(".")[0]) for p in d.glob("*.exit.json")
                        if p.name.split(".")[0].isdigit() and int(p.name.split(".")[0]) not in numbers]
            if not numbers:
                continue
            for n in sorted(set(numbers)):
                ex = read_exit(d, n)
                if ex:
                    c.exits[n] = ex
            last = max(numbers)
            c.runs = last + 1
            c.image = self._image(c)
            c.run_image = c.spec.get("image", "")
            run = self.k.runtime.adopt(d, last)
            if run is not None:
                c.run = run
                if run.exit:
                    c.exits[last] = run.exit
                else:
                    self._spawn(self._watch_exit(c, run))
                    if self.sandbox:
                        self._start_probes(c, run)

    def _image(self, c: CRec) -> Image | None:
        try:
            return self.k.images.resolve(c.spec.get("image", ""))
        except UnknownImage:
            return None

    # ---- main loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                self.wake.clear()
                if self.removed or self.pod["metadata"].get("deletionTimestamp"):
                    await self.terminate()
                    return
                try:
                    deadline = await self.sync()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("sync of pod %s failed", self.name)
                    deadline = time.time() + 2
                timeout = None if deadline is None else max(0.05, deadline - time.time())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout)
        finally:
            for task in list(self.bg):
                task.cancel()

    async def sync(self) -> float | None:
        """One reconcile pass. Returns when it wants to run again (wall time), or None (on events only)."""
        pod = self.pod
        spec = pod.get("spec", {})
        if not self.start_time:
            self.start_time = now_rfc3339()
        wake: list[float] = []
        if self.terminal:
            await self._finish_terminal()
            await self.push_status()
            return None

        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:
            started = datetime.fromisoformat(self.start_time.replace("Z", "+00:00")).timestamp()
            if time.time() >= started + int(deadline):
                self.terminal = "Failed"
                self.terminal_reason = ("DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
                self.event("Normal", "DeadlineExceeded", self.terminal_reason[1])
                await self._finish_terminal()
                await self.push_status()
                return None
            wake.append(started + int(deadline))

        # sandbox
        if self.sandbox is None:
            try:
                self.sandbox = await asyncio.to_thread(self.k.sandboxes.create, pod)
                self.sandbox_error = None
            except SandboxError as e:
                if self.sandbox_error != str(e):
                    self.event("Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
                self.sandbox_error = str(e)
                await self.push_status()
                return time.time() + 5
        paths = self._write_pod_files()

        # volumes
        ctx = self.pod_context()
        try:
            volumes = await self._volume_manager().setup(ctx)
            self.mount_error = None
        except MountError as e:
            if self.mount_error != str(e):
                self.event("Warning", "FailedMount", str(e))
            self.mount_error = str(e)
            for c in self.crecs.values():
                if not c.running and c.runs == 0:
                    c.waiting = ("ContainerCreating", "")
            await self.push_status()
            return time.time() + 2
        except Exception as e:  # e.g. the TokenRequest API failed
            msg = f'MountVolume.SetUp failed: {e}'
            if self.mount_error != msg:
                self.event("Warning", "FailedMount", msg)
            self.mount_error = msg
            await self.push_status()
            return time.time() + 2
        refresh = self.k.tokens.next_refresh(self.uid)
        if refresh:
            wake.append(refresh)

        # containers; an image changed in the pod spec (`kubectl set image`) restarts the container
        for c in self.crecs.values():
            if c.running and c.run_image and c.spec.get("image") != c.run_image and not c.stopping:
                c.unhealthy, c.kill_reason = True, "definition changed"
        views = {c.name: c.view() for c in self.crecs.values()}
        plan = podlogic.plan(spec, views)
        if plan.terminal:
            # Finished: stop the sidecars (last started first) before reporting the terminal phase, so
            # a Succeeded pod never shows a running container.
            await self._finish_terminal()
            self.terminal = plan.terminal
            await self.push_status()
            return None
        for name, why in plan.kill:
            c = self.crecs[name]
            c.stopping = True
            grace = self._grace_for_kill(c, why)
            if why == "unhealthy" and c.kill_reason:
                self.event("Normal", "Killing", f"Container {name} {c.kill_reason}, will be restarted", c)
            elif why == "unhealthy":
                self.event("Normal", "Killing", f"Container {name} failed {self._failed_probe(c)} probe, will be restarted", c)
            else:
                self.event("Normal", "Killing", f"Stopping container {name}", c)
            self._spawn(self._kill(c, grace))
        for name in plan.start:
            c = self.crecs[name]
            due = await self._start(c, ctx, volumes, paths)
            if due:
                wake.append(due)
            if c.init and not c.sidecar:
                break  # one regular init container at a time
        await self.push_status()
        return min(wake) if wake else None

    # ---- sandbox files, volumes, environment -----------------------------------------------------
    def pod_context(self) -> PodContext:
        ip = self.sandbox.pod_ip if self.sandbox else ""
        return PodContext(self.pod, ip, self.k.layout.node_ip, self.k.allocatable)

    def _volume_manager(self) -> VolumeManager:
        return VolumeManager(self.pod_dir, self.k.layout.extra_mounts, self.k.get_configmap, self.k.get_secret,
                             self.k.tokens.token)

    def _write_pod_files(self) -> PodPaths:
        assert self.sandbox is not None
        files = pod_files(self.pod, self.sandbox.pod_ip, node_name=self.k.layout.node_name,
                          node_hosts=self.k.node_hosts, node_resolv=self.k.node_resolv)
        out = {}
        for name, text in (("etc-hosts", files.hosts), ("resolv.conf", files.resolv_conf), ("hostname", files.hostname)):
            path = self.pod_dir / name
            if not path.exists() or path.read_text() != text:
                tmp = path.with_name(name + ".tmp")
                tmp.write_text(text)
                tmp.chmod(0o644)
                tmp.replace(path)
            out[name] = str(path)
        return PodPaths(out["etc-hosts"], out["resolv.conf"], out["hostname"])

    def _services_for_env(self) -> list[dict[str, Any]]:
        ns = self.pod["metadata"]["namespace"]
        links = self.pod.get("spec", {}).get("enableServiceLinks", True) is not False
        out = [s for s in self.k.services() if s["metadata"].get("namespace") == ns] if links else []
        master = self.k.service("default", "kubernetes")
        if master and not any(s["metadata"]["name"] == "kubernetes" and s["metadata"].get("namespace") == "default"
                              for s in out):
            out.append(master)
        return out

    # ---- starting containers ---------------------------------------------------------------------
    def _backoff_key(self, c: CRec) -> str:
        return f"{self.uid}/{c.name}"

    async def _start(self, c: CRec, ctx: PodContext, volumes: dict[str, PreparedVolume], paths: PodPaths) -> float | None:
        pod = self.pod
        pod_ref = f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({self.uid})"
        now = time.time()
        image_ref = c.spec.get("image", "")
        # image
        try:
            c.image = self.k.images.resolve(image_ref)
        except UnknownImage as e:
            key = IMAGE_BACKOFF_KEY + self._backoff_key(c)
            wait = self.k.image_backoff.in_backoff(key, c.finished or now, now)
            if c.waiting and c.waiting[0] in ("ErrImagePull", "ImagePullBackOff") and wait > 0:
                c.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image_ref}": ErrImagePull: {e}')
                self.event("Normal", "BackOff", f'Back-off pulling image "{image_ref}"', c)
                return now + wait
            self.event("Normal", "Pulling", f'Pulling image "{image_ref}"', c)
            self.event("Warning", "Failed", f'Failed to pull image "{image_ref}": {e}', c)
            self.event("Warning", "Failed", "Error: ErrImagePull", c)
            c.waiting = ("ErrImagePull", str(e))
            c.finished = now
            self.k.image_backoff.next(key, now)
            return now + self.k.image_backoff.in_backoff(key, now, now)
        # crash-loop back-off
        if c.runs > 0:
            key = self._backoff_key(c)
            wait = self.k.backoff.in_backoff(key, c.finished, now)
            if wait > 0:
                delay = int(self.k.backoff.current(key))
                msg = f"back-off {delay}s restarting failed container={c.name} pod={pod_ref}"
                if c.waiting is None or c.waiting[0] != "CrashLoopBackOff":
                    self.event("Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod {pod_ref}", c)
                c.waiting = ("CrashLoopBackOff", msg)
                return now + wait
            self.k.backoff.next(key, c.finished)
        # configuration
        try:
            env_result = make_environment(ctx, c.spec, self._services_for_env(), self.k.get_configmap, self.k.get_secret)
            for w in env_result.warnings:
                self.event("Warning", "InvalidEnvironmentVariableNames", w, c)
            run_no = c.runs
            cid = secrets.token_hex(32)
            cdir = self.cdir(c.name)
            cdir.mkdir(parents=True, exist_ok=True)
            assert self.sandbox is not None
            hostname = Path(paths.hostname).read_text().strip()
            spec = build_runspec(
                pod=pod, container=c.spec, image=c.image, env=env_result.env, volumes=volumes, pod_paths=paths,
                passwd=self.k.passwd, container_id=cid, run=run_no, container_dir=str(cdir),
                netns=self.sandbox.netns, hostname=hostname, hide=[str(self.k.state_root)],
                cgroups=self.k.cgroups.create(self.uid, cid, c.spec.get("resources")),
            )
        except ConfigError as e:
            if c.waiting != ("CreateContainerConfigError", str(e)):
                self.event("Warning", "Failed", f"Error: {e}", c)
            c.waiting = ("CreateContainerConfigError", str(e))
            return now + 2
        policy = c.spec.get("imagePullPolicy") or ("Always" if (c.image.ref.tag == "latest") else "IfNotPresent")
        if policy == "Always":
            self.event("Normal", "Pulling", f'Pulling image "{image_ref}"', c)
            self.event("Normal", "Pulled", f'Successfully pulled image "{image_ref}" in 1ms (1ms including waiting). '
                                           f'Image size: 0 bytes.', c)
        else:
            self.event("Normal", "Pulled", f'Container image "{image_ref}" already present on machine', c)
        self.event("Normal", "Created", f"Created container: {c.name}", c)
        # a new run: fresh probe state
        self._stop_probes(c)
        c.started = c.ready = c.unhealthy = c.stopping = False
        c.kill_reason = ""
        c.run_image = image_ref
        c.waiting = None
        c.runs = run_no + 1
        prev_run = c.run
        run = await self.k.runtime.start(spec)
        c.run = run
        if prev_run is not None:
            self._cleanup_run(c, prev_run)
        if run.start is None:  # could not start (StartError)
            ex = run.exit
            if ex:
                c.exits[run_no] = ex
                self.event("Warning", "Failed", f"Error: {ex.message}", c)
            c.finished = time.time()
            self.k.cgroups.remove(self.uid, cid)
            self.wake.set()
            return None
        self.event("Normal", "Started", f"Started container {c.name}", c)
        self._spawn(self._watch_exit(c, run))
        await self._post_start(c, run)
        self._start_probes(c, run)
        return None

    async def _post_start(self, c: CRec, run: Run) -> None:
        """A postStart hook runs before the next container starts, as in the kubelet."""
        hook = ((c.spec.get("lifecycle") or {}).get("postStart")) or {}
        if not hook:
            return
        ok, msg = await self._run_hook(c, hook, timeout=30)
        if not ok:
            self.event("Warning", "FailedPostStartHook", f"PostStartHook failed: {msg}", c)
            c.stopping = True
            self._spawn(self._kill(c, self._pod_grace()))

    async def _run_hook(self, c: CRec, hook: dict[str, Any], timeout: float) -> tuple[bool, str]:
        if "exec" in hook:
            rec = runtime_state.read_exec(self.k.layout.pods_dir, self.uid, c.name)
            return await exec_probe(rec, list(hook["exec"].get("command") or []), timeout)
        if "httpGet" in hook:
            act = hook["httpGet"]
            try:
                port = named_port(c.spec, act["port"])
            except ValueError as e:
                return False, str(e)
            return await http_probe(act.get("host") or (self.sandbox.pod_ip if self.sandbox else ""), port, act, timeout)
        if "sleep" in hook:
            await asyncio.sleep(min(float(hook["sleep"].get("seconds", 0)), timeout))
            return True, ""
        return True, ""

    async def _watch_exit(self, c: CRec, run: Run) -> None:
        await run.done.wait()
        if run.exit is not None:
            c.exits[run.run] = run.exit
        if c.run is run:
            c.finished = time.time()
            c.stopping = False
            self._stop_probes(c)
            c.ready = False
            self.k.cgroups.remove(self.uid, run.container_id)
        self.wake.set()

    def _cleanup_run(self, c: CRec, run: Run) -> None:
        """`run` was replaced by a newer one: drop its writable layer, and everything of older runs.

        Like the kubelet, which keeps one dead container per container: the replaced run's log stays for
        `kubectl logs --previous`, older logs go.
        """
        d = self.cdir(c.name)
        shutil.rmtree(d / "rootfs" / str(run.run), ignore_errors=True)
        for p in d.iterdir():
            n = p.name.split(".", 1)[0]
            if n.isdigit() and int(n) < run.run:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        for n in [n for n in c.exits if n < run.run - 1]:
            del c.exits[n]

    # ---- probes ----------------------------------------------------------------------------------
    def _start_probes(self, c: CRec, run: Run) -> None:
        assert self.sandbox is not None
        pod_ip = self.sandbox.pod_ip
        has_startup = bool(c.spec.get("startupProbe"))
        c.started = not has_startup
        c.ready = not c.spec.get("readinessProbe") and c.started
        for kind in ("startup", "readiness", "liveness"):
            probe = c.spec.get(f"{kind}Probe")
            if not probe:
                continue

            def exec_rec() -> runtime_state.ContainerExec | None:
                return runtime_state.read_exec(self.k.layout.pods_dir, self.uid, c.name)

            def gate(kind: str = kind) -> bool:
                return kind == "startup" or c.started

            worker = ProbeWorker(
                ProbeSpec(kind, probe), c.spec, pod_ip, exec_rec,
                on_change=lambda k, result, msg, c=c, run=run: self._probe_changed(c, run, k, result, msg),
                on_failure=lambda k, msg, c=c: self.event("Warning", "Unhealthy", f"{k.capitalize()} probe failed: {msg}", c),
                gate=gate,
            )
            c.probe_workers[kind] = worker
            c.probes[kind] = asyncio.create_task(worker.run(), name=f"probe {self.name}/{c.name}/{kind}")

    def _probe_changed(self, c: CRec, run: Run, kind: str, result: bool | None, msg: str) -> None:
        if c.run is not run:
            return
        if kind == "startup":
            if result:
                c.started = True
                c.ready = not c.spec.get("readinessProbe")
                for w in c.probe_workers.values():
                    w.wake.set()  # readiness/liveness may run now
            elif result is False:
                c.unhealthy = True
        elif kind == "readiness":
            c.ready = bool(result)
        elif kind == "liveness" and result is False:
            c.unhealthy = True
        self.wake.set()

    def _failed_probe(self, c: CRec) -> str:
        sp = c.probe_workers.get("startup")
        return "startup" if sp and sp.state.result is False else "liveness"

    def _stop_probes(self, c: CRec) -> None:
        for task in c.probes.values():
            task.cancel()
        c.probes.clear()
        c.probe_workers.clear()

    # ---- stopping --------------------------------------------------------------------------------
    def _pod_grace(self) -> float:
        return float(self.pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))

    def _grace_for_kill(self, c: CRec, why: str) -> float:
        if why == "unhealthy" and not c.kill_reason:
            kind = self._failed_probe(c)
            probe = c.spec.get(f"{kind}Probe") or {}
            if probe.get("terminationGracePeriodSeconds") is not None:
                return float(probe["terminationGracePeriodSeconds"])
        return self._pod_grace()

    def _stop_signal(self, c: CRec) -> int:
        name = (c.image.stop_signal if c.image else "SIGTERM")
        lifecycle_sig = (c.spec.get("lifecycle") or {}).get("stopSignal")
        return getattr(signal, lifecycle_sig or name, signal.SIGTERM)

    async def _kill(self, c: CRec, grace: float, *, pre_stop: bool = True) -> None:
        run = c.run
        if run is None or not run.running:
            c.stopping = False
            return
        deadline = time.monotonic() + grace
        hook = ((c.spec.get("lifecycle") or {}).get("preStop")) or {}
        if pre_stop and hook:
            ok, msg = await self._run_hook(c, hook, timeout=max(grace, 0.1))
            if not ok:
                self.event("Warning", "FailedPreStopHook", f"PreStopHook failed: {msg}", c)
        await self.k.runtime.stop(run, max(0.0, deadline - time.monotonic()), self._stop_signal(c))

    async def _finish_terminal(self) -> None:
        """A pod that has finished: stop what still runs (sidecars), release its network."""
        running = [c for c in self.crecs.values() if c.running]
        regular = [c for c in running if not c.sidecar]
        sidecars = [c for c in reversed(list(self.crecs.values())) if c.running and c.sidecar]
        if regular:
            await asyncio.gather(*(self._kill(c, self._pod_grace()) for c in regular))
        for c in sidecars:
            if not c.stopping:
                self.event("Normal", "Killing", f"Stopping container {c.name}", c)
            await self._kill(c, self._pod_grace())
        for c in self.crecs.values():
            c.stopping = False
            c.ready = False
            self._stop_probes(c)
        if not self.sandbox_torn_down and self.sandbox and not self.pod.get("spec", {}).get("hostNetwork"):
            await asyncio.to_thread(self.k.sandboxes.destroy, self.uid)
            self.sandbox_torn_down = True
        self.k.tokens.forget(self.uid)

    async def terminate(self) -> None:
        """Graceful deletion: preStop + stop signal, grace period, SIGKILL; sidecars last; sandbox; DELETE."""
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        grace = float(grace if grace is not None else self._pod_grace())
        if self.removed:
            grace = min(grace, 2.0)
        deadline = time.monotonic() + grace
        for c in self.crecs.values():
            self._stop_probes(c)
        regular = [c for c in self.crecs.values() if c.running and not c.sidecar]
        for c in regular:
            self.event("Normal", "Killing", f"Stopping container {c.name}", c)
        await asyncio.gather(*(self._kill(c, max(0.0, deadline - time.monotonic())) for c in regular))
        for c in [c for c in reversed(list(self.crecs.values())) if c.running and c.sidecar]:
            self.event("Normal", "Killing", f"Stopping container {c.name}", c)
            await self._kill(c, max(2.0, deadline - time.monotonic()))
        for c in self.crecs.values():
            c.ready = False
        if not self.terminal:
            codes = [c.last_exit.exit_code if c.last_exit else 1 for c in self.crecs.values() if not c.init]
            self.terminal = "Succeeded" if codes and all(code == 0 for code in codes) else "Failed"
        # Everything is gone from the node before the final status and the DELETE: once the API shows
        # the pod terminal (or gone) nothing of it is left here.
        await self.k.teardown_pod(self.uid)
        self.sandbox_torn_down = True
        if not self.removed:
            with contextlib.suppress(Exception):
                await self.push_status()
        if not self.removed:
            try:
                await self.k.kube.delete(
                    resource_path("v1", "pods", meta["namespace"], meta["name"]),
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                     "preconditions": {"uid": self.uid}},
                )
            except ApiError as e:
                if e.code not in (404, 409):
                    log.warning("deleting pod %s: %s", self.name, e)

    # ---- status ----------------------------------------------------------------------------------
    def container_status(self, c: CRec) -> dict[str, Any]:
        image = c.image.ref.canonical if c.image else c.spec.get("image", "")
        st: dict[str, Any] = {
            "name": c.name, "image": image, "imageID": c.image.repo_digest if (c.image and c.runs) else "",
            "ready": bool(c.running and c.ready), "restartCount": max(0, c.runs - 1),
            "started": bool(c.running and c.started),
        }
        if c.run is not None:
            st["containerID"] = f"minimesh://{c.run.container_id}"
        latest = c.runs - 1
        last_exit = c.exits.get(latest)
        if c.running and c.run and c.run.start:
            st["state"] = {"running": {"startedAt": c.run.start.started_at}}
            prev = c.exits.get(latest - 1)
        elif c.waiting is not None and (c.waiting[0] != "ContainerCreating" or c.runs == 0):
            reason, message = c.waiting
            st["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
            prev = last_exit
        elif last_exit is not None:
            st["state"] = {"terminated": self._terminated(last_exit)}
            prev = c.exits.get(latest - 1)
        else:
            # as the kubelet reports containers that have not run yet: PodInitializing while init
            # containers are pending, ContainerCreating otherwise
            initializing = c.init or (bool(self.pod["spec"].get("initContainers"))
                                      and not podlogic.initialized(self.pod["spec"], self._views()))
            st["state"] = {"waiting": {"reason": "PodInitializing" if initializing else "ContainerCreating"}}
            prev = None
        st["lastState"] = {"terminated": self._terminated(prev)} if prev else {}
        return st

    @staticmethod
    def _terminated(ex: ExitRecord) -> dict[str, Any]:
        out: dict[str, Any] = {"exitCode": ex.exit_code, "reason": ex.reason, "startedAt": ex.started_at or ex.finished_at,
                               "finishedAt": ex.finished_at, "containerID": f"minimesh://{ex.container_id}"}
        if ex.signal:
            out["signal"] = ex.signal
        if ex.message:
            out["message"] = ex.message
        return out

    def _views(self) -> dict[str, podlogic.CView]:
        return {c.name: c.view() for c in self.crecs.values()}

    def build_status(self) -> dict[str, Any]:
        spec = self.pod.get("spec", {})
        views = self._views()
        now = now_rfc3339()
        current = self.pod.get("status") or {}
        prev_conds = {c["type"]: c for c in current.get("conditions") or []}
        phase = podlogic.phase(spec, views, self.terminal)
        inits = spec.get("initContainers") or []
        regular = spec.get("containers") or []

        def done(c: dict[str, Any]) -> bool:
            v = views[c["name"]]
            if podlogic.is_sidecar(c):
                return v.started or podlogic.initialized(spec, views)
            return (v.runs > 0 and v.last_exit_code == 0 and not v.running) or podlogic.initialized(spec, views)

        pending_init = [c["name"] for c in inits if not done(c)]
        initialized = not pending_init or self.terminal == "Succeeded"
        ready_check = [*regular, *(c for c in inits if podlogic.is_sidecar(c))]
        unready = [c["name"] for c in ready_check if not (self.crecs[c["name"]].running and self.crecs[c["name"]].ready)]
        completed = self.terminal == "Succeeded" or (phase in ("Succeeded", "Failed"))
        sandbox_ready = self.sandbox is not None and not self.sandbox_torn_down
        conds = [
            podlogic.condition("PodReadyToStartContainers", sandbox_ready, now=now, previous=prev_conds),
            podlogic.condition("Initialized", initialized, "" if initialized else "ContainersNotInitialized",
                               "" if initialized else f"containers with incomplete status: [{' '.join(pending_init)}]",
                               now=now, previous=prev_conds),
        ]
        if completed:
            ready_reason, ready_msg, ready = "PodCompleted", "", False
        elif unready:
            ready_reason, ready_msg, ready = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]", False
        else:
            ready_reason, ready_msg, ready = "", "", True
        gates = [g["conditionType"] for g in spec.get("readinessGates") or []]
        missing_gates = [g for g in gates if (prev_conds.get(g) or {}).get("status") != "True"]
        pod_ready = ready and not missing_gates
        conds.append(podlogic.condition("Ready", pod_ready, ready_reason if not ready else ("ReadinessGatesNotReady" if missing_gates else ""),
                                        ready_msg if not ready else (f"corresponding condition of pod readiness gate \"{missing_gates[0]}\" does not exist." if missing_gates else ""),
                                        now=now, previous=prev_conds))
        conds.append(podlogic.condition("ContainersReady", ready, ready_reason, ready_msg, now=now, previous=prev_conds))
        kubelet_types = {"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"}
        for t, cond in prev_conds.items():
            if t not in kubelet_types:
                conds.append(cond)  # PodScheduled, readiness gates, DisruptionTarget: not ours to change
        if "PodScheduled" not in prev_conds:
            conds.append(podlogic.condition("PodScheduled", True, now=now))

        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.k.layout.node_ip,
            "hostIPs": [{"ip": self.k.layout.node_ip}],
            "startTime": self.start_time,
            "qosClass": current.get("qosClass") or podlogic.qos_class(spec),
            "containerStatuses": [self.container_status(self.crecs[c["name"]]) for c in regular],
        }
        if self.sandbox:
            status["podIP"] = self.sandbox.pod_ip
            status["podIPs"] = [{"ip": self.sandbox.pod_ip}]
        if inits:
            status["initContainerStatuses"] = [self.container_status(self.crecs[c["name"]]) for c in inits]
        if self.terminal_reason[0]:
            status["reason"], status["message"] = self.terminal_reason
        elif self.sandbox_error:
            status["message"] = self.sandbox_error
        return status

    async def push_status(self) -> None:
        status = self.build_status()
        comparable = _without_times(status)
        if self.last_status is not None and comparable == self.last_status:
            return
        meta = self.pod["metadata"]
        try:
            updated = await self.k.kube.patch(
                resource_path("v1", "pods", meta["namespace"], meta["name"], "status"), {"status": status}, "merge"
            )
            self.last_status = comparable
            if isinstance(updated, dict) and updated.get("metadata", {}).get("uid") == self.uid:
                self.pod = {**self.pod, "status": updated.get("status", status)}
        except ApiError as e:
            if e.code == 404:
                self.removed = True
                self.wake.set()
            else:
                log.warning("status of %s: %s", self.name, e)


def _without_times(status: dict[str, Any]) -> Any:
    s = copy.deepcopy(status)
    for c in s.get("conditions", []):
        c.pop("lastTransitionTime", None)
    return s
