"""Stage 6 end to end on a real local cluster: the evidence of the seed article, produced for real.

bookinfo-lite and sleep meshed (`minimesh install`, injection), the mesh CA signing the sidecars'
certificates over TokenReview, SDS to the proxies. Then tcpdump in details' pod network namespace:

- details DISABLEs mTLS (a PeerAuthentication): `GET /details/0` crosses the wire in clear text;
- the policy removed (PERMISSIVE, auto mTLS): no plaintext request, only TLS with the mesh ALPN
  `minimesh` and Istio's SNI `outbound_.9080_._.details.default.svc.cluster.local`;
- STRICT: the client without a sidecar (namespace legacy) is refused, the meshed one still served.

The pcaps and their analyses are kept in MINIMESH_EVIDENCE_DIR when set (else the test's tmp dir).
One test function on purpose: the cluster and the install take most of the time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1500)]
SOLVED = Path(os.environ.get("MINIMESH_SOLVED_ROOT", "."))
REPO = Path(os.environ.get("MINIMESH_REPO", "."))
MESH_ALPN = "minimesh"  # what a sidecar offers in its ClientHello
WIRE = "tcp port 9080 and not net 127.0.0.0/8"
DEPLOYMENTS = ("details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1", "sleep")


class Mesh:
    def __init__(self, name: str) -> None:
        self.name = name
        self.env = {**os.environ, "MINIMESH_CLUSTER": name, "MINIMESH_PROVIDER": "local", "PYTHONPATH": str(SOLVED),
                    "PYTHONSAFEPATH": "1", "COLUMNS": "200"}
        self._api: Any = None

    def ok(self, *args: str, timeout: float = 600) -> str:
        res = subprocess.run([sys.executable, "-m", "minimesh", *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout, cwd=SOLVED)
        assert res.returncode == 0, f"minimesh {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        return res.stdout

    @property
    def cluster(self) -> Any:
        from minimesh.cluster import provider

        return provider.get("local", self.name)

    @property
    def core(self) -> Any:
        from kubernetes import client

        if self._api is None:
            self._api = self.cluster.api_client()
        return client.CoreV1Api(self._api)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        self.core  # noqa: B018 (makes the API client)
        return client.CustomObjectsApi(self._api)

    def pod(self, selector: str, namespace: str = "default") -> str:
        from minimesh.lab.grading import pod_named_by

        return pod_named_by(self.core, selector, namespace, timeout=300)

    def exec(self, pod: str, argv: list[str], namespace: str = "default", container: str | None = None) -> Any:
        from minimesh.lab.grading import exec_in

        return exec_in(self.core, pod, argv, namespace=namespace, container=container, timeout=60)


def wait(what: str, fn: Callable[[], Any], timeout: float = 180, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = fn()
            if result:
                return result
            last = result
        except Exception as e:  # the cluster is still settling
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _evidence_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("MINIMESH_EVIDENCE_DIR") or tmp_path / "evidence")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _policy(mesh: Mesh, name: str, mode: str | None) -> None:
    """PeerAuthentication `name` for details (mode None: delete it)."""
    from kubernetes.client.exceptions import ApiException

    args = ("security.minimesh.io", "v1", "default", "peerauthentications")
    try:
        mesh.custom.delete_namespaced_custom_object(*args, name)
    except ApiException as e:
        if e.status != 404:
            raise
    if mode:
        mesh.custom.create_namespaced_custom_object(*args, {
            "apiVersion": "security.minimesh.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "details"}}, "mtls": {"mode": mode}}})


def _capture(mesh: Mesh, details: str, sleep: str, out: Path) -> Any:
    from minimesh.capture.analyse import analyse_pcap
    from minimesh.capture.pod import pod_capture
    from minimesh.security.evidence import summarize

    with pod_capture(mesh.cluster, mesh.core, "default", details, bpf_filter=WIRE, path=out):
        codes = mesh.exec(sleep, ["sh", "-c", "for i in 1 2 3; do curl -s -m 5 -o /dev/null -w '%{http_code} '"
                                               " http://details:9080/details/0; done"], container="sleep").stdout.split()
    assert codes == ["200"] * 3, codes
    report = analyse_pcap(out)
    (out.with_suffix(".txt")).write_text(report.summary() + "\n")
    return report, summarize(report, 9080)


def test_capture_before_and_after_mtls(need_root: None, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tests" / "lab"))
    from clusters import (
        local_cluster,  # tests/lab/clusters.py: a uniquely named local cluster, always removed
    )

    evidence = _evidence_dir(tmp_path)
    with local_cluster(SOLVED, "mtl") as name:
        mesh = Mesh(name)
        mesh.ok("apply", "-f", str(SOLVED / "minimesh/manifests/bookinfo.yaml"), "-f",
                str(SOLVED / "minimesh/manifests/sleep.yaml"))
        mesh.ok("install", timeout=900)
        mesh.ok("kubectl", "label", "namespace", "default", "minimesh-injection=enabled", "--overwrite")
        mesh.ok("rollout", "restart", *(f"deploy/{d}" for d in DEPLOYMENTS))
        mesh.ok("rollout", "status", *(f"deploy/{d}" for d in DEPLOYMENTS), timeout=900)
        mesh.ok("apply", "-f", str(SOLVED / "minimesh/manifests/lab06/"))
        sleep, details = mesh.pod("app=sleep"), mesh.pod("app=details")
        legacy = mesh.pod("app=sleep", "legacy")

        # every sidecar gets a certificate for its service account from the CA (seen from outside the mesh)
        def identity() -> dict[str, Any] | None:
            out = mesh.exec(legacy, ["python", "-m", "minimesh.security.peek", "details.default.svc.cluster.local:9080"],
                            namespace="legacy", container="sleep").stdout
            got = json.loads(out.strip().splitlines()[-1])
            return got if got.get("subject_alt_names") == ["spiffe://cluster.local/ns/default/sa/bookinfo-details"] else None

        seen = wait("details' SPIFFE certificate", identity, timeout=120)
        (evidence / "details-certificate.json").write_text(json.dumps({k: v for k, v in seen.items() if k != "der_b64"},
                                                                        indent=2) + "\n")

        # before: details DISABLEs mTLS -> the request is readable on the wire
        _policy(mesh, "e2e-disable", "DISABLE")

        def plaintext() -> Any:
            # settled: requests in clear text and no TLS left (while DISABLE propagates, the client may still
            # open an mTLS connection, refused, then retried in plaintext)
            report, ev = _capture(mesh, details, sleep, evidence / "before.pcap")
            return (report, ev) if any("/details/0" in r for r in ev.plaintext_requests) and not ev.tls_connections \
                else None

        before_report, before = wait("GET /details/0 in clear text", plaintext, timeout=120)

        # after: PERMISSIVE (the default) with auto mTLS -> only TLS records, the mesh ALPN, Istio's SNI
        _policy(mesh, "e2e-disable", None)
        handshakes: list[Any] = []  # the sidecar pools its connection to details: the one handshake may be in
        attempt = 0                 # any capture, the requests that follow ride the same connection

        def encrypted() -> Any:
            nonlocal attempt
            attempt += 1
            report, ev = _capture(mesh, details, sleep, evidence / f"after-{attempt}.pcap")
            # A completed mesh connection: its ClientHello offers the mesh ALPN and records of application data
            # follow. (While the policy change propagates, the client may offer mTLS to a server still on
            # DISABLE: a lone ClientHello, then a retry. That capture shows the race, not the handshake.)
            if any(MESH_ALPN in t.alpn and {"handshake", "application_data"} <= set(t.content_types)
                   for t in report.tls_flows):
                handshakes.append((attempt, report, ev))
            return (report, ev) if not ev.plaintext_requests and ev.tls_connections and handshakes else None

        after_report, after = wait("only mTLS on the wire", encrypted, timeout=120)
        first, _, hs = handshakes[0]
        (evidence / f"after-{first}.pcap").rename(evidence / "after-handshake.pcap")
        assert hs.sni == ["outbound_.9080_._.details.default.svc.cluster.local"], hs.sni
        assert not after_report.http_requests and not after_report.http_responses

        # the sniff exercise's answer on the captured first bytes
        from minimesh.security.evidence import first_client_bytes
        from minimesh.security.sniff import Sniff, sniff

        assert {sniff(b) for _, b in first_client_bytes(evidence / "before.pcap", 9080)} == {Sniff.PLAINTEXT}
        assert Sniff.MESH_TLS in {sniff(b) for _, b in first_client_bytes(evidence / "after-handshake.pcap", 9080)}

        # STRICT: the client without a sidecar is refused, the meshed one still served
        _policy(mesh, "e2e-strict", "STRICT")

        def strict() -> bool:
            legacy_try = mesh.exec(legacy, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                                            "http://details.default.svc.cluster.local:9080/details/0"],
                                   namespace="legacy", container="sleep").stdout.strip()
            meshed = mesh.exec(sleep, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                                       "http://details:9080/details/0"], container="sleep").stdout.strip()
            assert legacy_try == "000" and meshed == "200", f"legacy/sleep {legacy_try}, default/sleep {meshed}"
            return True

        wait("STRICT to refuse plaintext", strict, timeout=90)
        _policy(mesh, "e2e-strict", None)

        # what it cost: the CA's issuance times (TokenReview + signing), from its log
        ca_pod = mesh.pod("app=minimeshd", "mesh-system")
        log = mesh.core.read_namespaced_pod_log(ca_pod, "mesh-system", container="ca")
        times = [float(m) for m in re.findall(r"issued a certificate .* \(([0-9.]+) ms\)", log)]
        assert times, log[-2000:]
        (evidence / "summary.json").write_text(json.dumps({
            "before": str(before), "after": str(after), "handshake": str(hs), "ca_issue_ms": {"count": len(times), "min": min(times),
                                                                        "median": sorted(times)[len(times) // 2],
                                                                        "max": max(times)}}, indent=2) + "\n")
        print(f"\nbefore: {before}\nafter: {after}\nhandshake: {hs}\nCA issuance ms: {sorted(times)}")
        assert before_report.tls_flows == [] or all(
            "minimesh" not in (t.alpn or []) for t in before_report.tls_flows)
