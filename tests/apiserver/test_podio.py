"""pods/log, pods/exec and pods/portforward over the kubelet's runtime-state contract.

The test plays the kubelet's part: it writes the runtime-state files for a real process (exec target)
and a real listener in a network namespace of its own (port-forward target)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward, stream

from minimesh.cluster.local import runtime_state as rs
from minimesh.cluster.local.apiserver.podio import render_log


def _running_pod(cluster: Any, ns: str, name: str, containers: tuple[str, ...] = ("app",)) -> Any:
    core = client.CoreV1Api(cluster.client())
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": {
        "nodeName": "node1", "containers": [{"name": c, "image": "busybox"} for c in containers]}})
    core.patch_namespaced_pod_status(name, ns, {"status": {"phase": "Running", "containerStatuses": [
        {"name": c, "ready": True, "restartCount": 1, "image": "busybox", "imageID": "", "state": {"running": {}}}
        for c in containers]}})
    return pod


def test_render_log_options() -> None:
    t0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    lines = [rs.cri_line("stdout", "one", t=t0), rs.cri_line("stderr", "tw", partial=True, t=t0 + timedelta(seconds=1)),
             rs.cri_line("stderr", "o", t=t0 + timedelta(seconds=1)), rs.cri_line("stdout", "three", t=t0 + timedelta(seconds=2))]
    assert render_log(lines, timestamps=False, since=None, tail=None, limit=None) == b"one\ntwo\nthree\n"
    assert render_log(lines, timestamps=False, since=None, tail=2, limit=None) == b"two\nthree\n"
    assert render_log(lines, timestamps=False, since=t0 + timedelta(seconds=2), tail=None, limit=None) == b"three\n"
    assert render_log(lines, timestamps=False, since=None, tail=None, limit=6) == b"one\ntw"
    assert render_log(lines[:1], timestamps=True, since=None, tail=None, limit=None) == \
        b"2024-05-01T10:00:00.000000000Z one\n"


def test_logs(cluster: Any) -> None:
    ns = cluster.namespace("logs")
    core = client.CoreV1Api(cluster.client())
    pod = _running_pod(cluster, ns, "lp", ("app", "side"))
    pods_dir = cluster.dir / "pods"
    uid = pod.metadata.uid
    for run, text in ((0, "old run"), (1, "new run")):
        p = rs.log_path(pods_dir, uid, "app", run)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rs.cri_line("stdout", text) + rs.cri_line("stderr", f"{text} err"))
    assert core.read_namespaced_pod_log("lp", ns, container="app") == "new run\nnew run err\n"
    assert core.read_namespaced_pod_log("lp", ns, container="app", previous=True) == "old run\nold run err\n"
    assert core.read_namespaced_pod_log("lp", ns, container="app", tail_lines=1) == "new run err\n"
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("lp", ns)
    assert e.value.status == 400 and "a container name must be specified for pod lp, choose one of: [app side]" in e.value.body
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("lp", ns, container="side", previous=True)
    assert 'previous terminated container \\"side\\" in pod \\"lp\\" not found' in e.value.body
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("lp", ns, container="side")
    assert 'container \\"side\\" in pod \\"lp\\" is waiting to start: ContainerCreating' in e.value.body
    # kubectl logs, with --timestamps
    out = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "-n", ns, "logs", "lp", "-c", "app",
                          "--timestamps"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].endswith("Z new run")


def test_logs_follow_ends_when_container_stops(cluster: Any) -> None:
    ns = cluster.namespace("follow")
    core = client.CoreV1Api(cluster.client())
    pod = _running_pod(cluster, ns, "fp")
    p = rs.log_path(cluster.dir / "pods", pod.metadata.uid, "app", 0)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(rs.cri_line("stdout", "first"))
    proc = subprocess.Popen(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "-n", ns, "logs", "-f", "fp"],
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        with open(p, "a") as f:
            f.write(rs.cri_line("stdout", "second"))
        time.sleep(1)
        core.patch_namespaced_pod_status("fp", ns, {"status": {"containerStatuses": [
            {"name": "app", "ready": False, "restartCount": 0, "image": "busybox", "imageID": "",
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}})
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out == "first\nsecond\n"


@pytest.fixture
def exec_target(cluster: Any, need_root: None) -> Any:
    ns = cluster.namespace("exec")
    pod = _running_pod(cluster, ns, "ep")
    target = subprocess.Popen(["sleep", "120"])
    rs.write_json(rs.container_dir(cluster.dir / "pods", pod.metadata.uid, "app") / "exec.json",
                  rs.ContainerExec(pid=target.pid, uid=65534, gid=65534, env={"GREETING": "hello from the container"}))
    try:
        yield ns
    finally:
        target.kill()
        target.wait()


@pytest.mark.cluster
def test_exec_python_client(cluster: Any, exec_target: str) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = exec_target
    resp = stream(core.connect_get_namespaced_pod_exec, "ep", ns,
                  command=["sh", "-c", "echo $GREETING; id -u; echo oops >&2; exit 3"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=10)
    assert resp.read_stdout() == "hello from the container\n65534\n"
    assert resp.read_stderr() == "oops\n"
    assert resp.returncode == 3
    # stdin
    resp = stream(core.connect_get_namespaced_pod_exec, "ep", ns, command=["cat"], stderr=True, stdin=True,
                  stdout=True, tty=False, _preload_content=False)
    resp.write_stdin("ping\n")
    deadline = time.monotonic() + 10
    got = ""
    while "ping" not in got and time.monotonic() < deadline:
        resp.update(timeout=1)
        got += resp.read_stdout() if resp.peek_stdout() else ""
    resp.close()
    assert got == "ping\n"


@pytest.mark.cluster
def test_exec_kubectl(cluster: Any, exec_target: str) -> None:
    base = ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "-n", exec_target, "exec"]
    ok = subprocess.run([*base, "ep", "--", "sh", "-c", "echo $GREETING"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout == "hello from the container\n", ok.stderr
    fail = subprocess.run([*base, "ep", "--", "sh", "-c", "exit 7"], capture_output=True, text=True, timeout=30)
    assert fail.returncode == 7 and "command terminated with exit code 7" in fail.stderr
    piped = subprocess.run([*base, "-i", "ep", "--", "tr", "a-z", "A-Z"], input="shout\n", capture_output=True,
                           text=True, timeout=30)
    assert piped.stdout == "SHOUT\n", piped.stderr


@pytest.mark.cluster
def test_portforward(cluster: Any, need_root: None) -> None:
    ns = cluster.namespace("pf")
    pod = _running_pod(cluster, ns, "web")
    netns = f"mmt-pf-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    server = None
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        code = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                "s.bind(('127.0.0.1',8080));s.listen()\nwhile True:\n c,_=s.accept();d=c.recv(100);c.sendall(b'echo:'+d);c.close()\n")
        server = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", code])
        rs.write_json(rs.pod_dir(cluster.dir / "pods", pod.metadata.uid) / "pod.json",
                      rs.PodRecord(pod.metadata.uid, ns, "web", netns, "10.244.0.9"))
        time.sleep(0.5)
        core = client.CoreV1Api(cluster.client())
        pf = portforward(core.connect_get_namespaced_pod_portforward, "web", ns, ports="8080")
        sock = pf.socket(8080)
        sock.setblocking(True)
        sock.sendall(b"hi")
        data = b""
        while not data.endswith(b"hi"):
            chunk = sock.recv(100)
            if not chunk:
                break
            data += chunk
        assert data == b"echo:hi"
        sock.close()
        assert pf.error(8080) is None
        pf.close()
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", netns], check=False)


def test_exec_errors(cluster: Any) -> None:
    ns = cluster.namespace("exerr")
    core = client.CoreV1Api(cluster.client())
    core.create_namespaced_pod(ns, {"metadata": {"name": "idle"}, "spec": {"containers": [{"name": "a", "image": "x"}]}})
    with pytest.raises(ApiException) as e:
        stream(core.connect_get_namespaced_pod_exec, "idle", ns, command=["true"], stdout=True, stderr=True,
               stdin=False, tty=False)
    # the python client reports a refused WebSocket handshake as status 0 with the HTTP status in the reason
    assert "400" in str(e.value.reason) and 'is not running' in str(e.value.reason)


pytestmark = pytest.mark.skipif(shutil.which("nsenter") is None or os.uname().sysname != "Linux", reason="needs Linux")
