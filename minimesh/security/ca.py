"""The mesh CA: turn a workload's CSR into its X.509 certificate (an X.509-SVID). Pure: `now` is given.

What makes the certificate a mesh identity (what Istio's CA writes):
- the subject is empty and the only name is the URI SAN `spiffe://cluster.local/ns/NS/sa/SA`, marked
  critical (RFC 5280 requires that when the subject is empty);
- that URI is ALWAYS the identity the CA authenticated (from the caller's service-account token), never
  what the CSR asks for: a CSR is only a public key plus wishes, and anyone can write any wish;
- key usage digitalSignature + keyEncipherment, extended key usage serverAuth + clientAuth (the same
  certificate serves inbound and is presented outbound), not a CA;
- short-lived: 24 h by default, capped (90 days, and never beyond the CA's own expiry), a random serial.

The chain handed back is [leaf, root]: peers already trust the root, the leaf proves the identity.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401, RUF100 (hashes: the exercise)
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: F401, RUF100 (used by the exercise)

from minimesh.security.identity import Identity

DEFAULT_TTL = dt.timedelta(hours=24)  # Istio's DEFAULT_WORKLOAD_CERT_TTL
MAX_TTL = dt.timedelta(days=90)  # Istio's MAX_WORKLOAD_CERT_TTL
MIN_TTL = dt.timedelta(seconds=10)  # shorter is asked for by mistake, not for testing rotation
BACKDATE = dt.timedelta(minutes=1)  # tolerate peers whose clocks lag a little
MIN_RSA_BITS = 2048
EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class CsrError(ValueError):
    """A CSR the CA will not sign; the message says what is wrong with it."""


class CaError(ValueError):
    """The CA's own certificate or key cannot be used."""


@dataclass(frozen=True)
class SigningCa:
    """The CA's certificate and private key (from Secret mesh-system/minimesh-ca)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def load_signing_ca(cert_pem: bytes | str, key_pem: bytes | str) -> SigningCa:
    cert_b = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    key_b = key_pem.encode() if isinstance(key_pem, str) else key_pem
    try:
        cert = x509.load_pem_x509_certificate(cert_b)
    except ValueError as e:
        raise CaError(f"the CA certificate (ca.crt) is not a PEM certificate: {e}") from None
    try:
        key = serialization.load_pem_private_key(key_b, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise CaError(f"the CA key (ca.key) is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CaError(f"the CA key is a {type(key).__name__}; want an EC or RSA key")
    if cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CaError("the CA key (ca.key) does not belong to the CA certificate (ca.crt)")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaError("the CA certificate (ca.crt) is not a CA certificate (basicConstraints CA:TRUE is missing)")
    return SigningCa(cert, key)


def parse_csr(csr_pem: bytes | str) -> x509.CertificateSigningRequest:
    """Read and check a PEM CSR: parsable, self-signed by the key it carries, and a strong enough key."""
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if not data.strip():
        raise CsrError("the CSR is empty; send a PEM-encoded PKCS#10 request (-----BEGIN CERTIFICATE REQUEST-----)")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as e:
        raise CsrError(f"the CSR is not a PEM-encoded PKCS#10 request: {e}") from None
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CsrError(f"the CSR's public key cannot be read: {e}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrError(f"the CSR's RSA key has {key.key_size} bits; want at least {MIN_RSA_BITS}")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, EC_CURVES):
            raise CsrError(f"the CSR's EC key is on {key.curve.name}; want P-256, P-384 or P-521")
    else:
        raise CsrError(f"the CSR carries a {type(key).__name__.removeprefix('_')}; want an EC (P-256) or RSA key")
    try:
        ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CsrError(f"the CSR's signature cannot be checked: {e}") from None
    if not ok:
        raise CsrError("the CSR's signature does not verify: it was not signed with the key it carries")
    return csr


def validity(now: dt.datetime, requested: dt.timedelta | None, ca_cert: x509.Certificate) -> tuple[dt.datetime, dt.datetime]:
    """(not_before, not_after): the requested TTL (default 24 h) within [MIN_TTL, MAX_TTL], ending before the CA."""
    ttl = requested if requested and requested > dt.timedelta(0) else DEFAULT_TTL
    if ttl < MIN_TTL:
        raise CsrError(f"validity_duration {ttl.total_seconds():g}s is too short; want at least {MIN_TTL.seconds}s")
    ttl = min(ttl, MAX_TTL)
    not_after = min(now + ttl, ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise CaError(f"the CA certificate expired at {ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z; rotate the mesh CA")
    return now - BACKDATE, not_after


def sign_csr(csr: x509.CertificateSigningRequest, identity: Identity, ca: SigningCa,
             not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    """The workload certificate for `identity` with the CSR's public key, signed by `ca`.

    Whatever names the CSR asks for are ignored: the only name is `identity.uri`.
    """
    # BEGIN EXERCISE lab-06
    # TODO: build an x509.CertificateBuilder: an empty subject (x509.Name([])), the CA's subject as issuer,
    #   the CSR's public key, x509.random_serial_number(), the given validity; extensions: the URI SAN
    #   identity.uri only (critical=True), KeyUsage digital_signature + key_encipherment (critical), ExtendedKeyUsage
    #   SERVER_AUTH + CLIENT_AUTH, BasicConstraints(ca=False) (critical), AuthorityKeyIdentifier from the CA's
    #   public key; then sign with ca.key and SHA-256.
    raise NotImplementedError("lab 06: sign_csr: build an x509.CertificateBuilder: an empty subject (x509.Name([])), the CA's subject as issuer,")
    # END EXERCISE


def issue(csr_pem: bytes | str, identity: Identity, ca: SigningCa, now: dt.datetime,
          ttl: dt.timedelta | None = None) -> list[str]:
    """Check the CSR, sign it for `identity`, check the result; the chain as PEM strings: [leaf, root]."""
    csr = parse_csr(csr_pem)
    not_before, not_after = validity(now, ttl, ca.cert)
    cert = sign_csr(csr, identity, ca, not_before, not_after)
    check_issued(cert, csr, identity, ca)
    return [cert.public_bytes(serialization.Encoding.PEM).decode(), ca.cert_pem]


def check_issued(cert: x509.Certificate, csr: x509.CertificateSigningRequest, identity: Identity, ca: SigningCa) -> None:
    """Refuse to hand out a certificate that is not what the mesh expects (CaError says what is off)."""
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise CaError(f"the certificate is not signed by the mesh CA: {e or type(e).__name__}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            csr.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise CaError("the certificate does not carry the CSR's public key")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise CaError("the certificate has no subjectAltName") from None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    others = [n for n in san.value if not isinstance(n, x509.UniformResourceIdentifier)]
    if uris != [identity.uri] or others:
        raise CaError(f"the certificate names {[str(n.value) for n in san.value]}; want exactly [{identity.uri!r}]")
