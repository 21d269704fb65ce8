"""pods/log, pods/exec and pods/portforward, served from the kubelet's on-disk runtime state
(`runtime_state`): CRI log files, how to enter a running container, the pod's network namespace.

exec speaks the WebSocket channel protocols v5.channel.k8s.io and v4.channel.k8s.io (kubectl 1.32 and
the python client); portforward speaks the WebSocket form the python client uses (kubectl port-forward
needs SPDY, which is not implemented). attach is not implemented.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import struct
import termios
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from minimesh.cluster.local import netns_socket, runtime_state
from minimesh.cluster.local.apiserver import errors as E

if TYPE_CHECKING:
    from minimesh.cluster.local.apiserver.server import ApiServer, Target

Obj = dict[str, Any]
NSENTER = "/usr/bin/nsenter"
SETPRIV = "/usr/bin/setpriv"
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
FOLLOW_POLL = 0.5  # seconds between looks at a followed log (only while a client follows)


# ---- pure helpers ------------------------------------------------------------------------------
def pick_container(pod: Obj, requested: str | None) -> str:
    spec = pod.get("spec") or {}
    name = pod["metadata"]["name"]
    containers = [c["name"] for c in spec.get("containers") or []]
    inits = [c["name"] for c in spec.get("initContainers") or []]
    ephemeral = [c["name"] for c in spec.get("ephemeralContainers") or []]
    if not requested:
        if len(containers) == 1:
            return containers[0]
        msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        if inits:
            msg += f" or one of the init containers: [{' '.join(inits)}]"
        raise E.bad_request(msg)
    if requested not in containers + inits + ephemeral:
        raise E.bad_request(f"container {requested} is not valid for pod {name}")
    return requested


def container_status(pod: Obj, container: str) -> Obj | None:
    st = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in st.get(key) or []:
            if cs.get("name") == container:
                return cs
    return None


def render_log(lines: list[str], *, timestamps: bool, since: datetime | None, tail: int | None,
               limit: int | None) -> bytes:
    """CRI log lines -> what `kubectl logs` prints (partial lines joined)."""
    out: list[tuple[str, str]] = []
    pending = ""
    pending_ts = ""
    for raw in lines:
        ll = runtime_state.parse_cri_line(raw)
        if ll is None:
            continue
        if since is not None and ll.when() < since:
            continue
        if ll.partial:
            pending += ll.text
            pending_ts = pending_ts or ll.timestamp
            continue
        out.append((pending_ts or ll.timestamp, pending + ll.text))
        pending, pending_ts = "", ""
    if pending:
        out.append((pending_ts, pending))
    if tail is not None and tail >= 0:
        out = out[-tail:] if tail else []
    data = b"".join(((f"{ts} " if timestamps else "") + text + "\n").encode() for ts, text in out)
    return data[:limit] if limit else data


def exec_argv(ce: runtime_state.ContainerExec, command: list[str]) -> list[str]:
    argv = [NSENTER, "-t", str(ce.pid), "-m", "-n", "-u", "-i", "-r", "-w", SETPRIV,
            f"--reuid={ce.uid}", f"--regid={ce.gid}"]
    groups = list(ce.supplementary_groups or [])
    argv.append(f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups")
    if getattr(ce, "no_new_privs", False):
        argv.append("--no-new-privs")
    caps = [c.lower().removeprefix("cap_") for c in ce.capabilities or []]
    if not getattr(ce, "privileged", False) and "all" not in caps:
        argv.append("--inh-caps=-all")
        argv.append("--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in caps)]))
    return [*argv, "--", *command]


def exit_status(code: int) -> Obj:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _bool(q: Any, key: str, default: bool = False) -> bool:
    v = q.get(key)
    return default if v is None else v.lower() in ("true", "1")


class PodIO:
    def __init__(self, server: ApiServer):
        self.server = server
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def pods_dir(self) -> Path:
        if self.server.pods_dir is None:
            raise E.bad_request("this API server has no node runtime state (pods directory) configured")
        return Path(self.server.pods_dir)

    def _pod(self, t: Target) -> Obj:
        pod = self.server.store.get("/pods", t.namespace, t.name)  # type: ignore[union-attr]
        if pod is None:
            raise E.not_found("pods", "", t.name or "")
        return pod

    # ---- logs --------------------------------------------------------------------------------
    async def log(self, request: web.Request, t: Target) -> web.StreamResponse:
        if request.method != "GET":
            raise E.method_not_allowed()
        q = request.query
        pod = self._pod(t)
        name = pod["metadata"]["name"]
        container = pick_container(pod, q.get("container"))
        if not (pod.get("spec") or {}).get("nodeName"):
            raise E.bad_request(f"pod {name} does not have a host assigned")
        uid = pod["metadata"]["uid"]
        runs = runtime_state.log_runs(self.pods_dir, uid, container)
        previous = _bool(q, "previous")
        cs = container_status(pod, container) or {}
        if previous:
            if len(runs) < 2:
                raise E.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            run = runs[-2]
        else:
            if not runs:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                reason = waiting.get("reason") or "ContainerCreating"
                raise E.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
            run = runs[-1]
        try:
            tail = int(q["tailLines"]) if q.get("tailLines") else None
            limit = int(q["limitBytes"]) if q.get("limitBytes") else None
            since = None
            if q.get("sinceSeconds"):
                since = datetime.now(UTC) - timedelta(seconds=int(q["sinceSeconds"]))
            elif q.get("sinceTime"):
                since = datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
        except ValueError as e:
            raise E.bad_request(f"invalid log options: {e}") from None
        path = runtime_state.log_path(self.pods_dir, uid, container, run)
        timestamps = _bool(q, "timestamps")
        follow = _bool(q, "follow") and not previous
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        try:
            with open(path, "rb") as f:
                data = f.read()
                complete = data[: data.rfind(b"\n") + 1]
                chunk = render_log(complete.decode(errors="replace").splitlines(), timestamps=timestamps, since=since,
                                   tail=tail, limit=limit)
                await resp.write(chunk)
                sent += len(chunk)
                offset = len(complete)
                while follow and (limit is None or sent < limit):
                    f.seek(offset)
                    more = f.read()
                    cut = more.rfind(b"\n") + 1
                    if cut:
                        chunk = render_log(more[:cut].decode(errors="replace").splitlines(), timestamps=timestamps,
                                           since=None, tail=None, limit=(limit - sent) if limit else None)
                        await resp.write(chunk)
                        sent += len(chunk)
                        offset += cut
                        continue
                    if not self._still_running(t, uid, container, run):
                        break
                    await asyncio.sleep(FOLLOW_POLL)
        except FileNotFoundError:
            pass
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
        return resp

    def _still_running(self, t: Target, uid: str, container: str, run: int) -> bool:
        pod = self.server.store.get("/pods", t.namespace, t.name)  # type: ignore[union-attr]
        if pod is None or pod["metadata"].get("uid") != uid:
            return False
        if runtime_state.log_runs(self.pods_dir, uid, container)[-1:] != [run]:
            return False
        cs = container_status(pod, container) or {}
        state = cs.get("state") or {}
        return "terminated" not in state or not cs

    # ---- exec --------------------------------------------------------------------------------
    async def exec(self, request: web.Request, t: Target) -> web.StreamResponse:
        if request.method not in ("GET", "POST"):
            raise E.method_not_allowed()
        q = request.query
        pod = self._pod(t)
        name = pod["metadata"]["name"]
        container = pick_container(pod, q.get("container"))
        command = q.getall("command", [])
        if not command:
            raise E.bad_request("you must specify at least 1 command")
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise E.bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        ce = runtime_state.read_exec(self.pods_dir, pod["metadata"]["uid"], container) if (pod.get("spec") or {}).get("nodeName") else None
        if ce is None or not Path(f"/proc/{ce.pid}").exists():
            raise E.bad_request(f'container "{container}" in pod "{name}" is not running' if ce is None
                                else f'unable to upgrade connection: container not found ("{container}")')
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise E.ApiError(400, "BadRequest", "Upgrade request required")
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        await self._run_exec(ws, ce, command, stdin=_bool(q, "stdin"), tty=_bool(q, "tty"),
                             want_out=_bool(q, "stdout", True), want_err=_bool(q, "stderr", True))
        return ws

    async def _run_exec(self, ws: web.WebSocketResponse, ce: runtime_state.ContainerExec, command: list[str], *,
                        stdin: bool, tty: bool, want_out: bool, want_err: bool) -> None:
        argv = exec_argv(ce, command)
        env = dict(ce.env)
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        v5 = ws.ws_protocol == "v5.channel.k8s.io"
        master = -1
        if tty:
            master, slave = pty.openpty()
            env.setdefault("TERM", "xterm")
            proc = await asyncio.create_subprocess_exec(*argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                                        start_new_session=True)
            os.close(slave)
        else:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)

        async def send(channel: int, data: bytes) -> None:
            if not ws.closed:
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await ws.send_bytes(bytes([channel]) + data)

        async def pump(reader: asyncio.StreamReader | None, channel: int, wanted: bool) -> None:
            if reader is None:
                return
            while True:
                data = await reader.read(32768)
                if not data:
                    return
                if wanted:
                    await send(channel, data)

        async def pump_pty() -> None:
            loop = asyncio.get_running_loop()
            while True:
                try:
                    data = await loop.run_in_executor(None, os.read, master, 32768)
                except OSError:
                    return
                if not data:
                    return
                await send(STDOUT, data)

        async def from_client() -> None:
            async for msg in ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    break
                data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                if not data:
                    continue
                ch, payload = data[0], data[1:]
                if ch == STDIN:
                    if tty:
                        os.write(master, payload)
                    elif proc.stdin is not None and not proc.stdin.is_closing():
                        proc.stdin.write(payload)
                        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                            await proc.stdin.drain()
                elif ch == RESIZE and tty:
                    with contextlib.suppress(ValueError, KeyError, OSError):
                        size = json.loads(payload)
                        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size["Height"], size["Width"], 0, 0))
                elif ch == CLOSE and v5 and payload[:1] == bytes([STDIN]) and proc.stdin is not None:
                    proc.stdin.close()
            if proc.stdin is not None and not tty:
                proc.stdin.close()

        reader_task = asyncio.create_task(from_client())
        try:
            if tty:
                out_task = asyncio.create_task(pump_pty())
                code = await proc.wait()
                await asyncio.wait_for(out_task, 2) if not out_task.done() else None
            else:
                await asyncio.gather(pump(proc.stdout, STDOUT, want_out), pump(proc.stderr, STDERR, want_err))
                code = await proc.wait()
            await send(ERROR, json.dumps(exit_status(code)).encode())
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        finally:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader_task
            if master >= 0:
                os.close(master)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.close()

    # ---- port-forward ------------------------------------------------------------------------
    async def portforward(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        pod = self._pod(t)
        ports: list[int] = []
        for value in q.getall("ports", []):
            for p in value.split(","):
                try:
                    n = int(p)
                except ValueError:
                    raise E.bad_request(f"invalid port: {p!r}") from None
                if not 0 < n < 65536:
                    raise E.bad_request(f"port {n} is out of range")
                ports.append(n)
        if not ports:
            raise E.bad_request("at least 1 port must be specified (ports=)")
        rec = runtime_state.read_pod_record(self.pods_dir, pod["metadata"]["uid"])
        if rec is None or (pod.get("status") or {}).get("phase") != "Running":
            raise E.bad_request(f"pod {pod['metadata']['name']} is not running (phase {(pod.get('status') or {}).get('phase')})")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise E.ApiError(400, "BadRequest", "Upgrade request required (only the WebSocket protocol is served; "
                             "kubectl port-forward needs SPDY, which this API server does not implement)")
        ws = web.WebSocketResponse(protocols=PORTFORWARD_PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        writers: dict[int, asyncio.StreamWriter] = {}
        tasks: list[asyncio.Task[Any]] = []

        async def send(channel: int, data: bytes) -> None:
            if not ws.closed:
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await ws.send_bytes(bytes([channel]) + data)

        async def upstream(i: int, reader: asyncio.StreamReader) -> None:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await send(2 * i, data)

        for i, port in enumerate(ports):
            head = struct.pack("<H", port)
            await send(2 * i, head)
            await send(2 * i + 1, head)
            try:
                reader, writer = await netns_socket.open_connection(rec.netns, "127.0.0.1", port, timeout=5)
            except (TimeoutError, OSError) as e:
                await send(2 * i + 1, f"error forwarding port {port} to pod {pod['metadata']['uid']}: {e}".encode())
                continue
            writers[i] = writer
            tasks.append(asyncio.create_task(upstream(i, reader)))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
                    continue
                ch, payload = msg.data[0], msg.data[1:]
                w = writers.get(ch // 2) if ch % 2 == 0 else None
                if w is not None and payload:
                    w.write(payload)
                    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                        await w.drain()
        finally:
            for task in tasks:
                task.cancel()
            for w in writers.values():
                w.close()
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.close()
        return ws

    async def attach(self, request: web.Request, t: Target) -> web.StreamResponse:
        raise E.bad_request("pods/attach is not implemented by the minimesh API server; use exec")


def install(server: ApiServer) -> PodIO:
    io = PodIO(server)
    handlers: dict[tuple[str, str, str], Callable[..., Any]] = {
        ("", "pods", "log"): io.log,
        ("", "pods", "exec"): io.exec,
        ("", "pods", "portforward"): io.portforward,
        ("", "pods", "attach"): io.attach,
    }
    server.subresource_handlers.update(handlers)  # type: ignore[attr-defined]
    return io
