"""The man in the middle for real, in throwaway network namespaces: it reads the sidecar's plaintext and
fails the TLS handshake of a client that checks the server against the mesh root."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minimesh.security import mitm

pytestmark = pytest.mark.cluster


def _support() -> Any:
    name = "mm_netns_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "netns_support.py")
        assert spec and spec.loader
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mm-mitm-"))
    os.chmod(d, 0o755)  # the unprivileged mitmdump (uid 1338) writes below it
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(path: Path, cond: Any, what: str, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = _events(path)
        if cond(ev):
            return ev
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; events: {_events(path)}")


TLS_CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cadata=open(sys.argv[3]).read())
ctx.check_hostname = False
ctx.set_alpn_protocols(["minimesh"])
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="outbound_.9080_._.details.default.svc.cluster.local") as t:
            t.sendall(b"GET /details/0 HTTP/1.1\r\nHost: details\r\n\r\n")
            print("SENT")
except ssl.SSLCertVerificationError as e:
    print("VERIFY-FAILED", e.verify_message)
"""


def test_mitm_reads_plaintext_and_fails_against_a_mesh_client(need_root: None, shared_dir: Path) -> None:
    from minimesh.install import pki

    support = _support()
    why = support.need_root()
    if why:
        pytest.skip(why)
    root = pki.new_root_ca(dt.datetime.now(dt.UTC))
    (shared_dir / "root.pem").write_bytes(root.cert_pem)
    os.chmod(shared_dir / "root.pem", 0o644)
    flows = shared_dir / "mitm" / "flows.jsonl"
    with support.netns_pair("mitm") as (pod, peer):
        peer.diag([9080], "details")
        runner = pod.start([support.PY, "-m", "minimesh.security.mitm", "--port", "9080", "--flows", str(flows)],
                           ready="intercepting")
        _wait(flows, lambda ev: any(e["event"] == "running" for e in ev), "mitmdump to run")
        rules = pod.run(["sh", "-c", "iptables-nft-save -t nat || iptables-legacy-save -t nat"]).stdout
        assert "--uid-owner 1337" in rules and "--to-ports 15080" in rules, rules
        # the sidecar's plaintext: read in full by the man in the middle, and still answered by the server
        got = pod.probe(f"{support.B_IP}:9080", uid=1337, http=True)
        assert got.get("name") == "details", got
        ev = _wait(flows, lambda ev: any(e["event"] == "request" for e in ev), "the plaintext request")
        req = next(e for e in ev if e["event"] == "request")
        assert req["server"][0] == support.B_IP and req["server"][1] == 9080
        # a mesh client verifies the server against the mesh root: mitmproxy's forged certificate fails
        done = pod.run([support.PY, "-c", TLS_CLIENT, support.B_IP, "9080", str(shared_dir / "root.pem")], uid=1337)
        assert done.stdout.startswith("VERIFY-FAILED"), (done.stdout, done.stderr)
        ev = _wait(flows, lambda ev: any(e["event"] == "tls_failed_client" for e in ev), "the failed handshake")
        failed = next(e for e in ev if e["event"] == "tls_failed_client")
        assert failed["sni"] == "outbound_.9080_._.details.default.svc.cluster.local"
        assert [e for e in ev if e["event"] == "request"] == [req]  # nothing more was read
        # other users (the app itself) are not intercepted
        other = pod.probe(f"{support.B_IP}:9080", uid=1000, http=True)
        assert other.get("name") == "details"
        assert len([e for e in _events(flows) if e["event"] == "request"]) == 1
        assert runner.poll() is None


def test_patches() -> None:
    patch = mitm.deployment_patch()
    c = patch["spec"]["template"]["spec"]["containers"][0]
    assert c["name"] == "mitm" and "NET_ADMIN" in c["securityContext"]["capabilities"]["add"]
    dep = {"spec": {"template": {"metadata": {"annotations": {"minimesh.io/mitm": "true"}}, "spec": {
        "containers": [{"name": "productpage"}, c], "volumes": [{"name": "minimesh-source"}, {"name": "mitm"}]}}}}
    import jsonpatch

    back = jsonpatch.apply_patch(dep, mitm.remove_patch(dep))
    assert back["spec"]["template"]["spec"] == {"containers": [{"name": "productpage"}],
                                                "volumes": [{"name": "minimesh-source"}]}
    assert back["spec"]["template"]["metadata"]["annotations"] == {}
