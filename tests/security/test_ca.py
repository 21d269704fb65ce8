"""The CA signs what it authenticated, never what the CSR asks; and refuses CSRs it should not sign."""

from __future__ import annotations

import datetime as dt
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from minimesh.install import pki
from minimesh.security import ca
from minimesh.security.identity import Identity

from .pki_support import NOW, csr, key_pem, root, weak_rsa_csr

DETAILS = Identity("default", "bookinfo-details")


@pytest.fixture(scope="module")
def mesh_ca() -> ca.SigningCa:
    return root()[0]


def _leaf(chain: list[str]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(chain[0].encode())


def test_certificate_is_the_callers_identity_whatever_the_csr_asks(mesh_ca: ca.SigningCa) -> None:
    _, req = csr(uri="spiffe://cluster.local/ns/mesh-system/sa/minimeshd", cn="admin")
    chain = ca.issue(req, DETAILS, mesh_ca, NOW)
    leaf = _leaf(chain)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(DETAILS.uri)]
    assert leaf.subject == x509.Name([])
    assert chain[1] == mesh_ca.cert_pem
    leaf.verify_directly_issued_by(mesh_ca.cert)


def test_usages_constraints_and_validity(mesh_ca: ca.SigningCa) -> None:
    leaf = _leaf(ca.issue(csr()[1], DETAILS, mesh_ca, NOW))
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment and not ku.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.not_valid_after_utc - NOW == ca.DEFAULT_TTL
    assert NOW - leaf.not_valid_before_utc == ca.BACKDATE


def test_serials_are_random(mesh_ca: ca.SigningCa) -> None:
    serials = {_leaf(ca.issue(csr()[1], DETAILS, mesh_ca, NOW)).serial_number for _ in range(5)}
    assert len(serials) == 5 and all(s.bit_length() > 64 for s in serials)


@pytest.mark.parametrize("asked, got", [
    (dt.timedelta(seconds=60), dt.timedelta(seconds=60)),
    (None, ca.DEFAULT_TTL),
    (dt.timedelta(0), ca.DEFAULT_TTL),
    (dt.timedelta(days=400), ca.MAX_TTL),
])
def test_ttl_default_and_cap(mesh_ca: ca.SigningCa, asked: dt.timedelta | None, got: dt.timedelta) -> None:
    leaf = _leaf(ca.issue(csr()[1], DETAILS, mesh_ca, NOW, asked))
    assert leaf.not_valid_after_utc - NOW == got


def test_ttl_never_beyond_the_ca(mesh_ca: ca.SigningCa) -> None:
    near_end = mesh_ca.cert.not_valid_after_utc - dt.timedelta(hours=1)
    leaf = _leaf(ca.issue(csr()[1], DETAILS, mesh_ca, near_end))
    assert leaf.not_valid_after_utc == mesh_ca.cert.not_valid_after_utc
    with pytest.raises(ca.CaError, match="expired"):
        ca.issue(csr()[1], DETAILS, mesh_ca, mesh_ca.cert.not_valid_after_utc + dt.timedelta(seconds=1))


def test_too_short_ttl_is_refused(mesh_ca: ca.SigningCa) -> None:
    with pytest.raises(ca.CsrError, match="too short"):
        ca.issue(csr()[1], DETAILS, mesh_ca, NOW, dt.timedelta(seconds=2))


def _tampered() -> str:
    """A CSR whose signature does not match its contents (one byte of the signed part flipped)."""
    _, pem = csr(uri="spiffe://cluster.local/ns/default/sa/x")
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    at = der.find(b"spiffe://cluster.local/ns/default/sa/x") + len("spiffe://cluster.local/ns/default/sa/")
    der[at] = ord("y")
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("bad, why", [
    ("", "empty"),
    ("hello", "not a PEM-encoded PKCS#10"),
    ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "not a PEM-encoded"),
])
def test_garbage_csrs(mesh_ca: ca.SigningCa, bad: str, why: str) -> None:
    with pytest.raises(ca.CsrError, match=why):
        ca.issue(bad, DETAILS, mesh_ca, NOW)


def test_forged_signature_and_weak_keys(mesh_ca: ca.SigningCa) -> None:
    with pytest.raises(ca.CsrError, match="signature does not verify"):
        ca.issue(_tampered(), DETAILS, mesh_ca, NOW)
    with pytest.raises(ca.CsrError, match="1024 bits; want at least 2048"):
        ca.issue(weak_rsa_csr(), DETAILS, mesh_ca, NOW)
    with pytest.raises(ca.CsrError, match="secp256k1"):
        ca.issue(csr(ec.generate_private_key(ec.SECP256K1()))[1], DETAILS, mesh_ca, NOW)


def test_a_ca_that_is_not_one_is_refused() -> None:
    serving = pki.new_serving_cert(root()[1], ["x.svc"], NOW)
    with pytest.raises(ca.CaError, match="not a CA certificate"):
        ca.load_signing_ca(serving.cert_pem, serving.key_pem)
    other = pki.new_root_ca(NOW)
    with pytest.raises(ca.CaError, match="does not belong"):
        ca.load_signing_ca(root()[1].cert_pem, other.key_pem)


def _files(tmp_path, name: str, chain: list[str], key: object) -> tuple[str, str]:
    c, k = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    c.write_text(chain[0])
    k.write_text(key_pem(key))
    return str(c), str(k)


def test_two_workloads_do_mutual_tls_with_these_certificates(tmp_path, mesh_ca: ca.SigningCa) -> None:
    """Real TLS 1.3 over a socket pair: both sides verify the peer against the root; URI SANs come through."""
    now = dt.datetime.now(dt.UTC)
    skey, sreq = csr()
    ckey, creq = csr()
    server_chain = ca.issue(sreq, DETAILS, mesh_ca, now)
    client_chain = ca.issue(creq, Identity("default", "bookinfo-productpage"), mesh_ca, now)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*_files(tmp_path, "s", server_chain, skey))
    sctx.load_verify_locations(cadata=mesh_ca.cert_pem)
    sctx.verify_mode = ssl.CERT_REQUIRED
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.load_cert_chain(*_files(tmp_path, "c", client_chain, ckey))
    cctx.load_verify_locations(cadata=mesh_ca.cert_pem)
    import socket

    a, b = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        with sctx.wrap_socket(a, server_side=True) as s:
            seen["client"] = s.getpeercert()
            s.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    with cctx.wrap_socket(b, server_hostname="outbound_.9080_._.details.default.svc.cluster.local") as c:
        seen["server"] = c.getpeercert()
        assert c.recv(2) == b"ok"
    t.join(5)
    assert ("URI", DETAILS.uri) in seen["server"]["subjectAltName"]  # type: ignore[index]
    assert ("URI", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage") in seen["client"]["subjectAltName"]  # type: ignore[index]


def test_a_certificate_from_another_ca_is_not_trusted(tmp_path, mesh_ca: ca.SigningCa) -> None:
    now = dt.datetime.now(dt.UTC)
    rogue = root(now)[0]
    key, req = csr()
    forged = ca.issue(req, DETAILS, rogue, now)  # the right name, the wrong issuer (what a MITM could make)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*_files(tmp_path, "f", forged, key))
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.load_verify_locations(cadata=mesh_ca.cert_pem)
    import socket

    a, b = socket.socketpair()

    def serve() -> None:
        try:
            with sctx.wrap_socket(a, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve)
    t.start()
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        cctx.wrap_socket(b, server_hostname="x")
    b.close()
    t.join(5)


def test_sign_csr_is_signed_with_sha256(mesh_ca: ca.SigningCa) -> None:
    leaf = _leaf(ca.issue(csr()[1], DETAILS, mesh_ca, NOW))
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
