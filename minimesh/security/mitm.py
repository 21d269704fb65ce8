"""A man in the middle between a sidecar and the services it calls (stage 6's second proof).

`python -m minimesh.security.mitm` runs in an extra container `mitm` of a meshed pod (see `deployment_patch`):
as root with NET_ADMIN it adds two nat rules in the pod, in front of the mesh's own capture,

    -A OUTPUT -m owner --uid-owner 1338 -j RETURN                        (its own upstream connections)
    -A OUTPUT -p tcp --dport 9080 ! -d 127.0.0.0/8 -m owner --uid-owner 1337 -j REDIRECT --to-ports 15080

so every connection the sidecar proxy (uid 1337) opens to port 9080 of another pod lands in mitmdump
(transparent mode: it reads the original destination like the proxy does), then drops to uid 1338 and
runs mitmdump with an addon that writes what it could read (`mitm_addon.py`). Before mTLS it reads every
request; with mTLS the proxy checks the server certificate against the mesh root, mitmproxy's forged
certificate fails that check, and it reads nothing but a failed handshake.

The rules are pure (`rules`); the same iptables backend as the init container's is used (auto-detected).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROXY_UID = 1337
MITM_UID = 1338
LISTEN_PORT = 15080
CONTAINER = "mitm"
FLOWS = "/var/lib/mitm/flows.jsonl"


def rules(port: int = 9080, listen_port: int = LISTEN_PORT, proxy_uid: int = PROXY_UID,
          mitm_uid: int = MITM_UID) -> list[list[str]]:
    """iptables argv tails, in the order to run them (each inserts at the top of nat OUTPUT)."""
    return [
        ["-t", "nat", "-I", "OUTPUT", "1", "-p", "tcp", "--dport", str(port), "!", "-d", "127.0.0.0/8",
         "-m", "owner", "--uid-owner", str(proxy_uid), "-j", "REDIRECT", "--to-ports", str(listen_port)],
        ["-t", "nat", "-I", "OUTPUT", "1", "-m", "owner", "--uid-owner", str(mitm_uid), "-j", "RETURN"],
    ]


def mitmdump_args(listen_port: int, flows: str, confdir: str) -> list[str]:
    addon = str(Path(__file__).with_name("mitm_addon.py"))
    return ["--mode", "transparent", "--listen-port", str(listen_port), "--set", f"confdir={confdir}",
            "--set", "block_global=false", "--set", "ssl_insecure=true", "--set", f"minimesh_flows={flows}",
            "-s", addon, "-q"]


def container(image: str = "minimesh/minimesh:dev", port: int = 9080,
              source_volume: str = "minimesh-source") -> dict[str, Any]:
    """The `mitm` container to add to a pod (with an emptyDir `mitm` at /var/lib/mitm, and the pod's volume
    of the source tree, which every workload of the kit has)."""
    return {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "minimesh.security.mitm"],
        "args": ["--port", str(port), "--flows", FLOWS],
        "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW", "SETUID", "SETGID"], "drop": ["ALL"]}},
        "volumeMounts": [{"name": "mitm", "mountPath": "/var/lib/mitm"},
                         {"name": source_volume, "mountPath": "/opt/minimesh", "readOnly": True}],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
    }


def deployment_patch(image: str = "minimesh/minimesh:dev", port: int = 9080,
                     source_volume: str = "minimesh-source") -> dict[str, Any]:
    """Strategic-merge patch for a Deployment: add the `mitm` container and its volume (pods are re-created)."""
    return {"spec": {"template": {
        "metadata": {"annotations": {"minimesh.io/mitm": "true"}},
        "spec": {"containers": [container(image, port, source_volume)],
                 "volumes": [{"name": "mitm", "emptyDir": {}}]}}}}


def remove_patch(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON patch that takes the `mitm` container and volume out of a Deployment (its dict form) again."""
    spec = deployment["spec"]["template"]["spec"]
    ops: list[dict[str, Any]] = []
    for i, c in reversed(list(enumerate(spec.get("containers") or []))):
        if c.get("name") == CONTAINER:
            ops.append({"op": "remove", "path": f"/spec/template/spec/containers/{i}"})
    for i, v in reversed(list(enumerate(spec.get("volumes") or []))):
        if v.get("name") == "mitm":
            ops.append({"op": "remove", "path": f"/spec/template/spec/volumes/{i}"})
    annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
    if "minimesh.io/mitm" in annotations:
        ops.append({"op": "remove", "path": "/spec/template/metadata/annotations/minimesh.io~1mitm"})
    return ops


def _iptables() -> str:
    from minimesh.init.backend import detect

    backend, _ = detect()
    return f"iptables-{backend.name}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimesh.security.mitm", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=9080, help="destination port to intercept (the services' port)")
    ap.add_argument("--listen-port", type=int, default=LISTEN_PORT)
    ap.add_argument("--uid", type=int, default=MITM_UID, help="the uid mitmdump runs as (never captured)")
    ap.add_argument("--proxy-uid", type=int, default=PROXY_UID, help="whose connections to intercept")
    ap.add_argument("--flows", default=FLOWS, help="JSON-lines file of what it reads")
    args = ap.parse_args(argv)
    flows = Path(args.flows)
    flows.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(flows.parent, 0o1777)  # the unprivileged mitmdump writes here
    flows.touch()
    os.chmod(flows, 0o666)
    iptables = _iptables()
    for tail in rules(args.port, args.listen_port, args.proxy_uid, args.uid):
        done = subprocess.run([iptables, *tail], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"mitm: {iptables} {' '.join(tail)} failed: {done.stderr.strip()} (the container needs NET_ADMIN)",
                  file=sys.stderr)
            return 1
    print(f"mitm: intercepting uid {args.proxy_uid} -> :{args.port} with {iptables}; mitmdump as uid {args.uid}"
          f" on :{args.listen_port}; flows in {flows}", flush=True)
    os.setgroups([])
    os.setgid(args.uid)
    os.setuid(args.uid)
    os.environ["HOME"] = str(flows.parent)
    from mitmproxy.tools.main import mitmdump

    mitmdump(mitmdump_args(args.listen_port, str(flows), str(flows.parent / "conf")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
