"""exec and port-forward through the Kubernetes API (the official client's WebSocket streams).

Graders, notebooks and the CLI use these, so they behave the same on the local cluster, kind and minikube.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

from minimesh.cluster.provider import ExecResult


def exec_in_pod(
    core: Any,
    namespace: str,
    pod: str,
    argv: list[str],
    *,
    container: str | None = None,
    stdin: str | None = None,
    timeout: float = 30,
) -> ExecResult:
    """Run argv in a container and collect stdout, stderr and the exit code."""
    from kubernetes.stream import stream

    kwargs: dict[str, Any] = {
        "command": argv,
        "stderr": True,
        "stdout": True,
        "stdin": stdin is not None,
        "tty": False,
        "_preload_content": False,
    }
    if container:
        kwargs["container"] = container
    resp = stream(core.connect_get_namespaced_pod_exec, pod, namespace, **kwargs)
    out, err = [], []
    try:
        if stdin is not None:
            resp.write_stdin(stdin)
            # Half-close is not part of the v4 protocol; callers pass whole inputs to commands that read them.
        resp.run_forever(timeout=timeout)
        out.append(resp.read_stdout() or "")
        err.append(resp.read_stderr() or "")
        code = resp.returncode
    finally:
        resp.close()
    return ExecResult(code if code is not None else -1, "".join(out), "".join(err))


def resolve_target(core: Any, namespace: str, target: str, port: int) -> tuple[str, int]:
    """`pod/x`, `x`, `svc/x` or `deploy/x` → (a running pod name, container port), as kubectl does."""
    kind, _, name = target.rpartition("/")
    kind = kind or "pod"
    if kind in ("pod", "pods", "po"):
        return name, port
    if kind in ("svc", "service", "services"):
        svc = core.read_namespaced_service(name, namespace)
        selector = ",".join(f"{k}={v}" for k, v in (svc.spec.selector or {}).items())
        target_port: Any = port
        for p in svc.spec.ports or []:
            if p.port == port:
                target_port = p.target_port or port
        pod = _ready_pod(core, namespace, selector, target)
        if isinstance(target_port, str) and not target_port.isdigit():
            for c in pod.spec.containers:
                for cp in c.ports or []:
                    if cp.name == target_port:
                        return pod.metadata.name, cp.container_port
            raise ValueError(f"{target}: named port {target_port!r} not found in pod {pod.metadata.name}")
        return pod.metadata.name, int(target_port)
    if kind in ("deploy", "deployment", "deployments"):
        from kubernetes import client

        dep = client.AppsV1Api(core.api_client).read_namespaced_deployment(name, namespace)
        selector = ",".join(f"{k}={v}" for k, v in (dep.spec.selector.match_labels or {}).items())
        return _ready_pod(core, namespace, selector, target).metadata.name, port
    raise ValueError(f"cannot forward to {target!r}: use pod/NAME, svc/NAME or deploy/NAME")


def _ready_pod(core: Any, namespace: str, selector: str, what: str) -> Any:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    ready = [p for p in running if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    if not (ready or running):
        raise ValueError(f"{what}: no running pod matches {selector!r} in namespace {namespace}")
    return (ready or running)[0]


class PortForward:
    """Listen on 127.0.0.1:local_port and relay each connection to pod:port through the API server."""

    def __init__(self, core: Any, namespace: str, pod: str, port: int, local_port: int = 0):
        self.core, self.namespace, self.pod, self.port = core, namespace, pod, port
        self.listener = socket.create_server(("127.0.0.1", local_port))
        self.local_port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="port-forward")

    def __enter__(self) -> PortForward:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()

    def wait(self) -> None:
        self._thread.join()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        from kubernetes.stream import portforward

        try:
            pf = portforward(
                self.core.connect_get_namespaced_pod_portforward, self.pod, self.namespace, ports=str(self.port)
            )
            remote = pf.socket(self.port)
        except Exception:
            conn.close()
            return
        remote.setblocking(True)
        try:
            _pump(conn, remote)
        finally:
            with contextlib.suppress(Exception):
                remote.close()
            conn.close()
            with contextlib.suppress(Exception):
                pf.close()


def _pump(a: Any, b: Any) -> None:
    socks = [a, b]
    while True:
        readable, _, _ = select.select(socks, [], [], 60)
        if not readable:
            continue
        for s in readable:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


@contextlib.contextmanager
def port_forward(core: Any, namespace: str, target: str, port: int, local_port: int = 0) -> Iterator[PortForward]:
    pod, container_port = resolve_target(core, namespace, target, port)
    with PortForward(core, namespace, pod, container_port, local_port) as pf:
        yield pf
