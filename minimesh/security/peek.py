"""`python -m minimesh.security.peek HOST:PORT [--root root-cert.pem]`: which certificate does a sidecar present?

Opens TLS to a meshed pod's port offering the mesh ALPN (so PERMISSIVE/STRICT chains answer with mTLS)
without a client certificate of its own: in TLS 1.3 the server shows its certificate before it asks for
the client's, so the certificate can be read even though the server then refuses the connection.
Prints one JSON line: the SPIFFE id(s), serial, validity, issuer, and whether it verifies against the root.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from minimesh.security.sniff import MESH_ALPN


def describe(der: bytes) -> dict[str, Any]:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        sans = [str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    except x509.ExtensionNotFound:
        sans = []
    return {"subject_alt_names": sans, "serial": f"{cert.serial_number:x}", "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(), "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat()}


def peek(host: str, port: int, root_pem: str | None = None, sni: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols([MESH_ALPN])
    out: dict[str, Any] = {"target": f"{host}:{port}"}
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            ctx.wrap_socket(sock, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
        out["tls_version"] = tls.version()
    if not der:
        out["error"] = "the server presented no certificate"
        return out
    out.update(describe(der))
    out["der_b64"] = base64.b64encode(der).decode()
    if root_pem:
        out["verified"], out["verify_error"] = _verify(der, root_pem)
    return out


def _verify(der: bytes, root_pem: str) -> tuple[bool, str]:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    leaf = x509.load_der_x509_certificate(der)
    root = x509.load_pem_x509_certificate(root_pem.encode())
    try:
        leaf.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as e:
        return False, str(e) or type(e).__name__
    return True, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimesh.security.peek", description=__doc__.splitlines()[0])
    ap.add_argument("target", help="HOST:PORT of a meshed pod (a pod IP, or a Service name)")
    ap.add_argument("--root", help="the mesh root certificate to verify against (PEM file)")
    ap.add_argument("--sni", default=None)
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        ap.error(f"{args.target!r}: want HOST:PORT")
    try:
        root = Path(args.root).read_text() if args.root else None
        result = peek(host, int(port), root, args.sni)
    except (OSError, ssl.SSLError) as e:
        print(json.dumps({"target": args.target, "error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
