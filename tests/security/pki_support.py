"""Throwaway PKI for the security tests: a mesh root CA (as `minimesh install` makes it) and CSRs."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from minimesh.install import pki
from minimesh.security import ca

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def root(now: dt.datetime = NOW) -> tuple[ca.SigningCa, pki.KeyPair]:
    pair = pki.new_root_ca(now)
    return ca.load_signing_ca(pair.cert_pem, pair.key_pem), pair


def key_pem(key: object) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                             serialization.NoEncryption()).decode()


def csr(key: object | None = None, uri: str | None = None, cn: str | None = None) -> tuple[object, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)] if cn else []))
    if uri:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
    req = b.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return key, req.public_bytes(serialization.Encoding.PEM).decode()


def weak_rsa_csr() -> str:
    # cryptography refuses to generate < 1024 bits; 1024 is weak enough to be refused by the CA
    return csr(rsa.generate_private_key(public_exponent=65537, key_size=1024))[1]
