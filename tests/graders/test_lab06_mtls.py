"""Stage 6 grader: mutual TLS.

First the trainee's two functions on their own: `sign_csr` (minimesh/security/ca.py) must put the CALLER's
SPIFFE id in a certificate the mesh accepts, whatever the CSR asks for; `sniff` (minimesh/security/sniff.py)
must tell mesh TLS from other TLS and plaintext in real ClientHellos. Then the mesh in the cluster, through
the Kubernetes API only (exec, logs, the capture of `minimesh capture`):

- the CA publishes the root and signs the sidecars' certificates (read from a client without a sidecar);
- a capture on details' pod shows `GET /details/0` in clear text while details DISABLEs mTLS, and only TLS
  with the mesh's ALPN once it does not (auto mTLS, PERMISSIVE by default);
- a client without a mesh certificate (namespace legacy) is served in PERMISSIVE and refused in STRICT;
- a server whose identity is not the one the client expects is refused (SAN check), even with a valid
  certificate from the mesh CA;
- rotation-demo's certificate (20 s) is renewed while requests keep succeeding.

Every policy the grader applies is its own (names `grader-…`) and is removed afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minimesh.lab.grading import (
    GradeFailure,
    check,
    eventually,
    exec_in,
    fail,
    http_from,
    missing,
    pod_named_by,
)

NS = "default"
CA_EX = "minimesh/security/ca.py: sign_csr"
SNIFF_EX = "minimesh/security/sniff.py: sniff"
SETUP = "minimesh lab setup 06"
SECURITY = ("security.minimesh.io", "v1")
NETWORKING = ("networking.minimesh.io", "v1")
WIRE = "tcp port 9080 and not net 127.0.0.0/8"  # details' traffic on the wire, not the sidecar-to-app hop
DETAILS_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-details"
SAMPLES: dict[str, list[bytes]] = {"plaintext": [], "tls": []}  # first client bytes seen by the capture check


# ---- sign_csr, pure ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh_ca() -> Any:
    from minimesh.install import pki
    from minimesh.security import ca

    pair = pki.new_root_ca(dt.datetime.now(dt.UTC))
    return ca.load_signing_ca(pair.cert_pem, pair.key_pem)


def _csr(uri: str | None = None, cn: str | None = None) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)] if cn else []))
    if uri:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
    return key, b.sign(key, hashes.SHA256())


def _sign(mesh_ca: Any, csr: Any, who: Any, ttl: dt.timedelta = dt.timedelta(hours=1)) -> Any:
    from minimesh.security import ca

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        return ca.sign_csr(csr, who, mesh_ca, now - ca.BACKDATE, now + ttl), now
    except NotImplementedError as e:
        raise GradeFailure("sign_csr to return a certificate", f"NotImplementedError: {e}", CA_EX) from None


def _san(cert: Any) -> Any:
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None


def test_sign_csr_names_the_caller_not_the_csr(mesh_ca: Any) -> None:
    """sign_csr puts the authenticated identity in the URI SAN, whatever the CSR asks for"""
    from cryptography import x509

    from minimesh.security.identity import Identity

    who = Identity("default", "bookinfo-details")
    _, csr = _csr(uri="spiffe://cluster.local/ns/mesh-system/sa/minimeshd", cn="admin")
    cert, _ = _sign(mesh_ca, csr, who)
    san = _san(cert)
    names = [str(n.value) for n in san.value] if san else []
    check(names == [who.uri], want=f"exactly one name, the URI SAN {who.uri}", got=names,
          hint=f"{CA_EX}: ignore the CSR's names; x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)])")
    check(san.critical, want="the subjectAltName extension marked critical", got="not critical",
          hint=f"{CA_EX}: add_extension(..., critical=True) (the subject is empty)")
    check(cert.subject == x509.Name([]), want="an empty subject", got=cert.subject.rfc4514_string(),
          hint=f"{CA_EX}: subject_name(x509.Name([])), never the CSR's subject")
    check(cert.public_key() == csr.public_key(), want="the CSR's public key", got="another key", hint=CA_EX)
    try:
        cert.verify_directly_issued_by(mesh_ca.cert)
    except Exception as e:
        fail("a certificate issued (signed) by the mesh CA", f"{type(e).__name__}: {e}",
             f"{CA_EX}: issuer_name(ca.cert.subject) and sign(ca.key, hashes.SHA256())")


def test_sign_csr_usages_and_validity(mesh_ca: Any) -> None:
    """sign_csr: serverAuth+clientAuth, digitalSignature+keyEncipherment, not a CA, the given validity"""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from minimesh.security.identity import Identity

    cert, now = _sign(mesh_ca, _csr()[1], Identity("default", "sleep"), dt.timedelta(seconds=60))
    try:
        eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        eku = set()
    check(eku == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH},
          want="extended key usage serverAuth and clientAuth (the same certificate serves and calls)",
          got=sorted(o._name for o in eku), hint=CA_EX)
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        ok = ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    except x509.ExtensionNotFound:
        ok = False
    check(ok, want="key usage digitalSignature + keyEncipherment (and not keyCertSign)", got="missing or wrong",
          hint=CA_EX)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = None
    check(is_ca is False, want="basicConstraints CA:FALSE", got=is_ca, hint=CA_EX)
    got = (cert.not_valid_after_utc - now).total_seconds()
    check(got == 60, want="not_valid_after as given (60 s from now)", got=f"{got:g} s", hint=f"{CA_EX}: not_valid_after(not_after)")


def test_sign_csr_serials_are_random(mesh_ca: Any) -> None:
    """sign_csr gives every certificate a random serial"""
    from minimesh.security.identity import Identity

    serials = {_sign(mesh_ca, _csr()[1], Identity("default", "sleep"))[0].serial_number for _ in range(3)}
    check(len(serials) == 3 and min(serials).bit_length() > 64, want="three different random serials",
          got=sorted(f"{s:x}" for s in serials), hint=f"{CA_EX}: x509.random_serial_number()")


def test_sign_csr_certificates_do_mutual_tls(mesh_ca: Any) -> None:
    """two certificates from sign_csr complete a real mutual-TLS handshake, each side seeing the other's SPIFFE id"""
    from cryptography.hazmat.primitives import serialization

    from minimesh.security.identity import Identity

    server_id, client_id = Identity("default", "bookinfo-details"), Identity("default", "bookinfo-productpage")
    tmp = Path(tempfile.mkdtemp(prefix="grade06-"))

    def files(name: str, who: Identity) -> tuple[str, str]:
        key, csr = _csr()
        cert, _ = _sign(mesh_ca, csr, who)
        (tmp / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        return str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")

    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*files("server", server_id))
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.load_verify_locations(cadata=mesh_ca.cert_pem)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.load_cert_chain(*files("client", client_id))
    cctx.load_verify_locations(cadata=mesh_ca.cert_pem)
    a, b = socket.socketpair()
    seen: dict[str, Any] = {}

    def serve() -> None:
        try:
            with sctx.wrap_socket(a, server_side=True) as s:
                seen["client"] = s.getpeercert()
        except (ssl.SSLError, OSError) as e:
            seen["server_error"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with cctx.wrap_socket(b, server_hostname="outbound_.9080_._.details.default.svc.cluster.local") as c:
            seen["server"] = c.getpeercert()
    except (ssl.SSLError, OSError) as e:
        fail("a completed mutual-TLS handshake with two certificates from sign_csr", f"{type(e).__name__}: {e}",
             f"{CA_EX} (server side: {seen.get('server_error')})")
    t.join(5)
    got = {side: [v for k, v in (seen.get(side) or {}).get("subjectAltName", ()) if k == "URI"] for side in ("server", "client")}
    check(got == {"server": [server_id.uri], "client": [client_id.uri]},
          want="each side sees the other's SPIFFE id", got=got, hint=CA_EX)


# ---- sniff, pure -------------------------------------------------------------------------------------------


def _hello(alpn: list[str] | None) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="outbound_.9080_._.details.default.svc.cluster.local")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def _sniff(data: bytes) -> str:
    from minimesh.security import sniff

    try:
        return sniff.sniff(data).name
    except NotImplementedError as e:
        raise GradeFailure("sniff to classify the first bytes", f"NotImplementedError: {e}", SNIFF_EX) from None


SNIFF_CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    "a sidecar's ClientHello (ALPN minimesh)": (lambda: _hello(["minimesh"]), "MESH_TLS"),
    "a ClientHello offering h2 and minimesh": (lambda: _hello(["h2", "minimesh"]), "MESH_TLS"),
    "a browser's ClientHello (h2, http/1.1)": (lambda: _hello(["h2", "http/1.1"]), "OTHER_TLS"),
    "a ClientHello without ALPN": (lambda: _hello(None), "OTHER_TLS"),
    "an HTTP request": (lambda: b"GET /details/0 HTTP/1.1\r\nHost: details:9080\r\n\r\n", "PLAINTEXT"),
    "nothing yet": (lambda: b"", "NEED_MORE"),
    "the first byte of a handshake": (lambda: b"\x16", "NEED_MORE"),
    "half a ClientHello": (lambda: _hello(["minimesh"])[:60], "NEED_MORE"),
    "0x16 then not TLS": (lambda: b"\x16GET / HTTP/1.1\r\n", "PLAINTEXT"),
}


@pytest.mark.parametrize("case", list(SNIFF_CASES))
def test_sniff(case: str) -> None:
    """sniff tells mesh mTLS, other TLS, plaintext, and 'wait for more' apart"""
    make, want = SNIFF_CASES[case]
    got = _sniff(make())
    check(got == want, want=f"{want} for {case}", got=got,
          hint=f"{SNIFF_EX}: 0x16 0x03 starts TLS; then the ClientHello's ALPN decides (client_hello(first))")


# ---- the cluster -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def custom(api_client: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def legacy_sleep(core: Any) -> str:
    try:
        core.read_namespace("legacy")
    except Exception:
        missing("namespace legacy with a sleep that has no sidecar", SETUP)
    return pod_named_by(core, "app=sleep", namespace="legacy", timeout=120)


@pytest.fixture(scope="module")
def meshed_sleep(core: Any) -> str:
    name = pod_named_by(core, "app=sleep", namespace=NS, timeout=120)
    pod = core.read_namespaced_pod(name, NS)
    check(any(c.name == "minimesh-proxy" for c in [*pod.spec.containers, *(pod.spec.init_containers or [])]),
          want="default/sleep with a minimesh-proxy sidecar (stage 5)", got=[c.name for c in pod.spec.containers],
          hint="minimesh lab setup 05 (then minimesh rollout status --all)")
    return name


@pytest.fixture(scope="module")
def details_pod(core: Any) -> str:
    return pod_named_by(core, "app=details", namespace=NS, timeout=120)


def _policy(custom: Any, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    group, version = SECURITY if kind == "PeerAuthentication" else NETWORKING
    plural = kind.lower() + "s"
    body = {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}
    _delete(custom, kind, name)
    custom.create_namespaced_custom_object(group, version, NS, plural, body)
    return body


def _delete(custom: Any, kind: str, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    group, version = SECURITY if kind == "PeerAuthentication" else NETWORKING
    try:
        custom.delete_namespaced_custom_object(group, version, NS, kind.lower() + "s", name)
    except ApiException as e:
        if e.status != 404:
            raise


class applied:
    """A grader-owned mesh policy for the duration of a block."""

    def __init__(self, custom: Any, kind: str, name: str, spec: dict[str, Any]) -> None:
        self.args = (custom, kind, name)
        self.spec = spec

    def __enter__(self) -> None:
        _policy(*self.args, self.spec)

    def __exit__(self, *exc: object) -> None:
        _delete(*self.args)


def _details_mode(mode: str) -> dict[str, Any]:
    return {"selector": {"matchLabels": {"app": "details"}}, "mtls": {"mode": mode}}


def _curl_n(core: Any, pod: str, url: str, n: int, namespace: str = NS, container: str = "sleep") -> list[str]:
    loop = f"for i in $(seq {n}); do curl -s -m 5 -o /dev/null -w '%{{http_code}} ' {url}; done"
    return exec_in(core, pod, ["sh", "-c", loop], namespace=namespace, container=container, timeout=60).stdout.split()


def _capture(cluster: Any, core: Any, details: str, traffic: Callable[[], Any]) -> tuple[Any, Path]:
    from minimesh.capture.analyse import analyse_pcap
    from minimesh.capture.pod import pod_capture

    with pod_capture(cluster, core, NS, details, bpf_filter=WIRE) as cap:
        traffic()
    return analyse_pcap(cap.path), cap.path


def test_root_certificate_is_published(core: Any, legacy_sleep: str) -> None:
    """the CA publishes its root as ConfigMap minimesh-ca-root-cert (root-cert.pem) in every namespace"""
    import base64

    secret = core.read_namespaced_secret("minimesh-ca", "mesh-system")
    root = base64.b64decode(secret.data["ca.crt"]).decode()

    def published() -> None:
        for ns in (NS, "legacy"):
            try:
                cm = core.read_namespaced_config_map("minimesh-ca-root-cert", ns)
            except Exception as e:
                fail(f"ConfigMap {ns}/minimesh-ca-root-cert", f"{type(e).__name__}", "minimesh logs -n mesh-system deploy/minimeshd -c ca")
            check((cm.data or {}).get("root-cert.pem") == root, want=f"{ns}/minimesh-ca-root-cert = the root of Secret"
                  " mesh-system/minimesh-ca", got="another certificate", hint="minimesh logs -n mesh-system deploy/minimeshd -c ca")

    eventually(published, timeout=30)


def _peek(core: Any, legacy_sleep: str, target: str) -> dict[str, Any]:
    out = exec_in(core, legacy_sleep, ["python", "-m", "minimesh.security.peek", target], namespace="legacy",
                  container="sleep", timeout=30)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (out.stdout + out.stderr).strip()[-300:] or "no output"}


def test_sidecars_present_their_spiffe_identity(core: Any, legacy_sleep: str) -> None:
    """details' sidecar presents a certificate from the mesh CA naming spiffe://cluster.local/ns/default/sa/bookinfo-details"""
    import base64

    from cryptography import x509

    root = x509.load_pem_x509_certificate(base64.b64decode(core.read_namespaced_secret("minimesh-ca", "mesh-system").data["ca.crt"]))

    def presented() -> None:
        got = _peek(core, legacy_sleep, "details.default.svc.cluster.local:9080")
        check("der_b64" in got, want="details' sidecar to answer TLS with the mesh ALPN with a certificate",
              got=got.get("error") or got, hint="minimesh logs deploy/details-v1 -c minimesh-proxy | grep certs "
              "(no certificate: is the CA signing? minimesh logs -n mesh-system deploy/minimeshd -c ca)")
        check(got.get("subject_alt_names") == [DETAILS_ID], want=f"the URI SAN {DETAILS_ID}",
              got=got.get("subject_alt_names"), hint=CA_EX)
        cert = x509.load_der_x509_certificate(base64.b64decode(got["der_b64"]))
        try:
            cert.verify_directly_issued_by(root)
        except Exception:
            fail("a certificate signed by the mesh root (Secret mesh-system/minimesh-ca)", got.get("issuer"), CA_EX)

    eventually(presented, timeout=90, interval=2)


def test_capture_shows_plaintext_before_and_only_tls_after(cluster: Any, core: Any, custom: Any, meshed_sleep: str,
                                                          details_pod: str) -> None:
    """tcpdump on details' pod: GET /details/0 readable while details DISABLEs mTLS, only TLS with ALPN minimesh after"""
    from minimesh.security.evidence import first_client_bytes, summarize

    def traffic() -> None:
        _curl_n(core, meshed_sleep, "http://details:9080/details/0", 3)

    with applied(custom, "PeerAuthentication", "grader-details-disable", _details_mode("DISABLE")):
        def plaintext() -> None:
            report, path = _capture(cluster, core, details_pod, traffic)
            ev = summarize(report, 9080)
            # settled: no TLS left (while DISABLE propagates, a client may still try mTLS once, then plaintext)
            check(any("/details/0" in r for r in ev.plaintext_requests) and not ev.tls_connections,
                  want="GET /details/0 in clear text on the wire and no TLS (details DISABLEs mTLS)", got=str(ev),
                  hint="the capture runs in details' pod (minimesh capture); is sleep meshed?")
            SAMPLES["plaintext"] = [b for _, b in first_client_bytes(path, 9080)]

        eventually(plaintext, timeout=60, interval=1)
    mesh_tls_seen = False

    def encrypted() -> None:
        nonlocal mesh_tls_seen
        report, path = _capture(cluster, core, details_pod, traffic)
        ev = summarize(report, 9080)
        if ev.mesh_tls_connections:
            mesh_tls_seen = True
            SAMPLES["tls"] = [b for _, b in first_client_bytes(path, 9080) if b[:1] == b"\x16"] or SAMPLES["tls"]
        check(not ev.plaintext_requests and ev.tls_connections and mesh_tls_seen,
              want="no plaintext request, TLS with ALPN 'minimesh' (PERMISSIVE: sidecars talk mTLS)", got=str(ev),
              hint="do sidecars have certificates? minimesh logs deploy/sleep -c minimesh-proxy | grep certs")

    eventually(encrypted, timeout=90, interval=1)


def test_sniff_reads_the_captured_bytes() -> None:
    """sniff, fed the first bytes of the captured connections: plaintext before, mesh mTLS after"""
    check(SAMPLES["plaintext"] and SAMPLES["tls"], want="first bytes of plaintext and of TLS connections from the capture check",
          got={k: len(v) for k, v in SAMPLES.items()}, hint="the capture check above must pass first")
    got = {"plaintext": sorted({_sniff(b) for b in SAMPLES["plaintext"]}), "tls": sorted({_sniff(b) for b in SAMPLES["tls"]})}
    check(got == {"plaintext": ["PLAINTEXT"], "tls": ["MESH_TLS"]}, want="PLAINTEXT before, MESH_TLS after", got=got,
          hint=SNIFF_EX)


def test_permissive_serves_plaintext_strict_refuses_it(core: Any, custom: Any, legacy_sleep: str,
                                                      meshed_sleep: str) -> None:
    """a client without a sidecar (namespace legacy) is served in PERMISSIVE and refused in STRICT; sidecars keep working"""
    url = "http://details.default.svc.cluster.local:9080/details/0"
    with applied(custom, "PeerAuthentication", "grader-details-mode", _details_mode("PERMISSIVE")):
        def served() -> None:
            r = http_from(core, legacy_sleep, url, namespace="legacy", container="sleep")
            check(r.status == 200, want="200 for legacy/sleep (plaintext, PERMISSIVE)", got=str(r),
                  hint="PERMISSIVE keeps a plaintext filter chain on details' port")

        eventually(served, timeout=60, interval=1)
        _policy(custom, "PeerAuthentication", "grader-details-mode", _details_mode("STRICT"))

        def refused() -> None:
            r = http_from(core, legacy_sleep, url, namespace="legacy", container="sleep")
            check(r.status == 0, want="no answer for legacy/sleep (STRICT: plaintext is closed)", got=str(r),
                  hint="STRICT leaves only the mTLS chain on the port")
            m = http_from(core, meshed_sleep, url, container="sleep")
            check(m.status == 200, want="200 for default/sleep (its sidecar talks mTLS)", got=str(m),
                  hint="minimesh logs deploy/sleep -c minimesh-proxy")

        eventually(refused, timeout=60, interval=1)


def _proxy_stat(core: Any, pod: str, name: str) -> int:
    out = exec_in(core, pod, ["curl", "-s", "http://127.0.0.1:15000/stats"], container="minimesh-proxy").stdout
    for line in out.splitlines():
        key, _, value = line.partition(": ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def test_an_unexpected_identity_is_refused(core: Any, custom: Any, meshed_sleep: str) -> None:
    """a valid mesh certificate with another identity than the client expects is refused (SAN check)"""
    url = "http://details:9080/details/0"
    stat = "cluster.outbound|9080||details.default.svc.cluster.local.ssl.fail_verify_san"
    pinned = {"host": "details", "trafficPolicy": {"tls": {
        "mode": "ISTIO_MUTUAL", "subjectAltNames": ["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]}}}
    before = _proxy_stat(core, meshed_sleep, stat)
    with applied(custom, "DestinationRule", "grader-details-pinned", pinned):
        def refused() -> None:
            r = http_from(core, meshed_sleep, url, container="sleep")
            check(r.status == 503, want="503 from sleep's sidecar (details presents bookinfo-details, not bookinfo-reviews)",
                  got=str(r), hint="the client checks match_subject_alt_names after the handshake")
            got = _proxy_stat(core, meshed_sleep, stat)
            check(got > before, want=f"{stat} counting the refusal", got=got, hint="minimesh/proxy/upstream.py check_peer")

        eventually(refused, timeout=60, interval=1)

    def back() -> None:
        r = http_from(core, meshed_sleep, url, container="sleep")
        check(r.status == 200, want="200 again without the DestinationRule", got=str(r))

    eventually(back, timeout=60, interval=1)


def test_certificates_rotate_without_failed_requests(core: Any, apps: Any, legacy_sleep: str, meshed_sleep: str) -> None:
    """rotation-demo's 20 s certificate is renewed while requests from sleep keep succeeding"""
    try:
        apps.read_namespaced_deployment("rotation-demo", NS)
    except Exception:
        missing("deployment rotation-demo (certificates of 20 s)", SETUP)
    pod_named_by(core, "app=rotation-demo", namespace=NS, timeout=120)
    target = "rotation-demo.default.svc.cluster.local:9080"

    def serial() -> str:
        got = _peek(core, legacy_sleep, target)
        check("serial" in got, want="rotation-demo's certificate", got=got.get("error") or got,
              hint="minimesh logs deploy/rotation-demo -c minimesh-proxy | grep certs")
        return str(got["serial"])

    first = eventually(serial, timeout=90, interval=2)
    codes = _curl_n(core, meshed_sleep, "http://rotation-demo:9080/details/0", 40) + \
        _curl_n(core, meshed_sleep, "http://rotation-demo:9080/details/0", 40)
    failed = [c for c in codes if c != "200"]
    check(codes and not failed, want="every request answered 200 across renewals",
          got=f"{len(failed)} of {len(codes)} failed: {sorted(set(failed))}",
          hint="new connections must use the new certificate, open ones are left alone")

    def renewed() -> None:
        got = serial()
        check(got != first, want=f"a new certificate (serial other than {first})", got=got,
              hint="the agent renews at half life: security.minimesh.io/cert-ttl 20s -> about every 10 s")

    eventually(renewed, timeout=40, interval=2)
