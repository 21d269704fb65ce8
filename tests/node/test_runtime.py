"""The container runtime on its own (no API server): real namespaces, overlayfs, setpriv, iptables."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from minimesh.cluster.local import runtime_state
from minimesh.cluster.local.node.runspec import read_exit

pytestmark = pytest.mark.cluster


def run(coro):
    return asyncio.run(coro)


async def wait_exit(r, timeout: float = 20):
    await asyncio.wait_for(r.done.wait(), timeout)
    return r.exit


def log_lines(cdir: str, n: int = 0) -> list[runtime_state.LogLine]:
    text = (Path(cdir) / f"{n}.log").read_text()
    lines = [runtime_state.parse_cri_line(line) for line in text.splitlines()]
    assert all(lines), f"not CRI format: {text!r}"
    return lines  # type: ignore[return-value]


def test_two_containers_share_an_emptydir_with_their_own_users(rt_node, make_pod_fn) -> None:
    writer = {"name": "writer", "image": "busybox",
              "command": ["sh", "-c", "echo hello-from-writer > /shared/msg; id -u > /shared/writer-uid; sleep 60"],
              "securityContext": {"runAsUser": 1234, "runAsGroup": 2345},
              "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
    reader = {"name": "reader", "image": "busybox",
              "command": ["sh", "-c", "while [ ! -s /data/msg ]; do sleep 0.1; done; cat /data/msg; id; hostname"],
              "securityContext": {"runAsUser": 4321},
              "volumeMounts": [{"name": "shared", "mountPath": "/data", "readOnly": True}]}
    pod = make_pod_fn([writer, reader], volumes=[{"name": "shared", "emptyDir": {}}],
                   securityContext={"supplementalGroups": [777]})

    async def go() -> None:
        node = rt_node
        if True:
            try:
                w, _ = await node.start(pod, writer)
                assert w.running, w.exit
                r, rdir = await node.start(pod, reader)
                ex = await wait_exit(r)
                assert ex.exit_code == 0 and ex.reason == "Completed", ex
                out = [line.text for line in log_lines(rdir)]
                assert out[0] == "hello-from-writer"
                assert out[1].startswith("uid=4321 ") and "groups=777" in out[1], out
                assert out[2] == pod["metadata"]["name"]
                shared = node.layout.pods_dir / pod["metadata"]["uid"] / "volumes/kubernetes.io~empty-dir/shared"
                assert (shared / "writer-uid").read_text().strip() == "1234"
                st = os.stat(shared / "msg")
                assert (st.st_uid, st.st_gid) == (1234, 2345)
            finally:
                await node.stop_all()

    run(go())


def test_capabilities_decide_whether_iptables_works(rt_node, make_pod_fn) -> None:
    chain = f"MMTEST{secrets.token_hex(3).upper()}"
    script = f"iptables -t nat -N {chain} && iptables -t nat -S {chain}"
    without = {"name": "plain", "image": "minimesh/minimesh:dev", "command": ["sh", "-c", script]}
    with_admin = {"name": "admin", "image": "minimesh/minimesh:dev", "command": ["sh", "-c", script],
                  "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}
    dropped = {"name": "dropped", "image": "busybox", "command": ["sh", "-c", "grep Cap /proc/self/status"],
               "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}
    pod = make_pod_fn([without, with_admin, dropped])

    async def go() -> None:
        node = rt_node
        if True:
            r1, d1 = await node.start(pod, without)
            ex1 = await wait_exit(r1)
            assert ex1.exit_code != 0, "iptables worked without NET_ADMIN"
            assert any("Permission denied" in line.text for line in log_lines(d1)), log_lines(d1)
            r2, d2 = await node.start(pod, with_admin)
            ex2 = await wait_exit(r2)
            assert ex2.exit_code == 0, log_lines(d2)
            assert any(f"-N {chain}" in line.text for line in log_lines(d2))
            netns = node.layout.pod_netns(pod["metadata"]["uid"])
            saved = subprocess.run(["ip", "netns", "exec", netns, "iptables-save", "-t", "nat"],
                                   capture_output=True, text=True).stdout
            assert f":{chain}" in saved  # the rule went into the pod's netns ...
            host = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
            assert chain not in host  # ... not the host's
            r3, d3 = await node.start(pod, dropped)
            await wait_exit(r3)
            caps = {line.text.split(":")[0]: line.text.split()[-1] for line in log_lines(d3)}
            assert int(caps["CapEff"], 16) == 1 << 10  # cap_net_bind_service only
            assert int(caps["CapBnd"], 16) == 1 << 10

    run(go())


def test_overlay_isolation_logs_and_exec(rt_node, make_pod_fn) -> None:
    marker = f"/etc/mm-test-{secrets.token_hex(4)}"
    c = {"name": "main", "image": "minimesh/minimesh:dev",
         "command": ["sh", "-c", f"echo written > {marker} && cat {marker} && echo oops >&2 && exec sleep 60"],
         "env": [{"name": "GREETING", "value": "hi $(POD)"}, {"name": "POD", "value": "x"}],
         "workingDir": "/work/here"}
    pod = make_pod_fn([c])

    async def go() -> None:
        node = rt_node
        if True:
            try:
                r, cdir = await node.start(pod, c)
                assert r.running, r.exit
                for _ in range(100):
                    if len(log_lines(cdir)) >= 2:
                        break
                    await asyncio.sleep(0.05)
                lines = log_lines(cdir)
                assert [(x.stream, x.text) for x in lines] == [("stdout", "written"), ("stderr", "oops")]
                assert not os.path.exists(marker), "a write to /etc in the container reached the host"

                rec = runtime_state.read_exec(node.layout.pods_dir, pod["metadata"]["uid"], "main")
                assert rec is not None and rec.pid == r.start.pid
                argv = runtime_state.enter_argv(rec, ["sh", "-c", f"cat {marker}; pwd; id -u; echo $GREETING; "
                                                                  "python -c 'import sys; print(sys.prefix)'"])
                done = subprocess.run(argv, env=rec.env, capture_output=True, text=True, timeout=30)
                assert done.returncode == 0, done.stderr
                assert done.stdout.split("\n")[:5] == ["written", "/work/here", "0", "hi $(POD)", "/opt/minimesh-venv"]
            finally:
                await node.stop_all()
            ex = r.exit
            assert ex is not None and ex.exit_code == 143 and ex.reason == "Error"  # SIGTERM
            assert runtime_state.read_exec(node.layout.pods_dir, pod["metadata"]["uid"], "main") is None
            assert json.loads(Path(cdir, "0.exit.json").read_text())["exit_code"] == 143

    run(go())


def test_start_error_for_a_missing_command(rt_node, make_pod_fn) -> None:
    c = {"name": "bad", "image": "busybox", "command": ["no-such-program-here"]}
    pod = make_pod_fn([c])

    async def go() -> None:
        node = rt_node
        if True:
            r, cdir = await node.start(pod, c)
            assert r.start is None
            ex = read_exit(Path(cdir), 0)
            assert ex and ex.reason == "StartError" and ex.exit_code == 128
            assert 'exec: "no-such-program-here": executable file not found in $PATH' in ex.message

    run(go())
