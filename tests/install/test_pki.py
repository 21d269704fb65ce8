"""The mesh root CA and minimeshd's serving certificate: real X.509, checked with `cryptography` and by a
real TLS handshake."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from minimesh.install import pki

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMES = ["minimeshd.mesh-system.svc", "minimeshd.mesh-system.svc.cluster.local"]


def test_root_ca_is_ec_p256_ten_years_and_a_ca() -> None:
    pair = pki.new_root_ca(NOW)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.not_valid_after_utc - NOW == pki.CA_VALIDITY
    assert cert.subject == cert.issuer
    pki.load_ca(pair)


def test_serving_cert_names_and_usage() -> None:
    ca = pki.new_root_ca(NOW)
    pair = pki.new_serving_cert(ca, NAMES, NOW)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == NAMES
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc - NOW == pki.SERVING_VALIDITY
    assert pki.serving_cert_problem(pair, ca.cert_pem, NAMES, NOW) is None


def test_problems_that_force_a_new_serving_cert() -> None:
    ca, other = pki.new_root_ca(NOW), pki.new_root_ca(NOW)
    pair = pki.new_serving_cert(ca, NAMES, NOW)
    assert pki.serving_cert_problem(pair, other.cert_pem, NAMES, NOW) == "not signed by the current mesh CA"
    assert pki.serving_cert_problem(pair, ca.cert_pem, [*NAMES, "minimeshd"], NOW) == "lacks the names minimeshd"
    later = NOW + pki.SERVING_VALIDITY - dt.timedelta(days=10)
    assert (pki.serving_cert_problem(pair, ca.cert_pem, NAMES, later) or "").startswith("expires ")
    wrong_key = pki.KeyPair(pair.cert_pem, pki.new_serving_cert(ca, NAMES, NOW).key_pem)
    assert pki.serving_cert_problem(wrong_key, ca.cert_pem, NAMES, NOW) == "the key does not belong to the certificate"
    assert (pki.serving_cert_problem(pki.KeyPair(b"junk", b"junk"), ca.cert_pem, NAMES, NOW) or "").startswith(
        "not valid PEM")


def test_bad_ca_material_is_named() -> None:
    ca, other = pki.new_root_ca(NOW), pki.new_root_ca(NOW)
    with pytest.raises(pki.PkiError, match="does not belong"):
        pki.load_ca(pki.KeyPair(ca.cert_pem, other.key_pem))
    with pytest.raises(pki.PkiError, match="not valid PEM"):
        pki.load_ca(pki.KeyPair(b"nope", ca.key_pem))


def test_a_tls_client_trusting_the_ca_accepts_the_serving_cert(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = pki.new_root_ca(now)
    pair = pki.new_serving_cert(ca, NAMES, now)
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client_ctx.wrap_socket(raw, server_hostname=NAMES[0]) as tls:
        assert tls.recv(2) == b"ok"
    t.join(5)
    listener.close()
