"""A workload's key, CSR and certificate, and when to renew it (the agent's side; pure apart from keygen).

The private key never leaves the pod: the agent makes an EC P-256 key, sends only a CSR (the public key,
signed with the private one), and gets back a certificate for the identity the CA authenticated.
Renewal happens at half of the certificate's life as the agent saw it (Istio's
SECRET_GRACE_PERIOD_RATIO 0.5), measured from when it arrived, so clock skew cannot make it late.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from minimesh.security.identity import Identity

ROTATION_RATIO = 0.5
ROTATION_JITTER = 0.05  # of the lifetime, so replicas do not all renew in the same second


class CertificateError(ValueError):
    """The CA's answer is not a usable certificate for us; the message says why."""


def new_key_and_csr(identity: Identity) -> tuple[str, str]:
    """(private key PEM, CSR PEM): EC P-256, the identity asked for as the URI SAN (the CA decides anyway)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]), critical=True)
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class WorkloadCertificate:
    key_pem: str
    chain: tuple[str, ...]  # leaf first, root last (as the CA sent it)
    identity: str  # the URI SAN of the leaf
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    received: dt.datetime  # when the agent got it

    @property
    def cert_chain_pem(self) -> str:
        """Leaf and intermediates (what the proxy presents); the root travels separately (ROOTCA)."""
        body = self.chain[:-1] if len(self.chain) > 1 else self.chain
        return "".join(p if p.endswith("\n") else p + "\n" for p in body)

    @property
    def root_pem(self) -> str:
        return self.chain[-1]

    def rotate_at(self, jitter: float = 0.0) -> dt.datetime:
        """When to renew: half of the life left when it arrived (± jitter, a fraction of the life)."""
        life = self.not_after - self.received
        return self.received + life * (ROTATION_RATIO + jitter)


def accept_chain(key_pem: str, chain: list[str], want: Identity, now: dt.datetime) -> WorkloadCertificate:
    """Check the CA's answer (our key, the identity we are, currently valid) before using it."""
    if not chain:
        raise CertificateError("the CA sent an empty chain")
    try:
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        for pem in chain[1:]:
            x509.load_pem_x509_certificate(pem.encode())
    except ValueError as e:
        raise CertificateError(f"the CA sent something that is not a PEM certificate: {e}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            key.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise CertificateError("the certificate is not for our key")
    try:
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if want.uri not in uris:
        raise CertificateError(f"the certificate names {uris}, not our identity {want.uri}")
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        raise CertificateError(f"the certificate is not valid now ({leaf.not_valid_before_utc} .. {leaf.not_valid_after_utc})")
    return WorkloadCertificate(key_pem, tuple(chain), want.uri, leaf.serial_number, leaf.not_valid_before_utc,
                               leaf.not_valid_after_utc, now)


def jitter(rng: random.Random | None = None) -> float:
    return (rng or random).uniform(-ROTATION_JITTER, ROTATION_JITTER)
