"""Service-account tokens: RS256 JWTs shaped like the real ones (TokenRequest), and their review
(TokenReview / API authentication). Pure apart from reading the key files once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = [ISSUER]
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600

Obj = dict[str, Any]


class TokenError(Exception):
    pass


@dataclass
class Claims:
    namespace: str
    serviceaccount: str
    sa_uid: str
    audiences: list[str]
    pod_name: str = ""
    pod_uid: str = ""
    node_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.serviceaccount}"

    @property
    def groups(self) -> list[str]:
        return ["system:serviceaccounts", f"system:serviceaccounts:{self.namespace}", "system:authenticated"]

    @property
    def user_extra(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if self.pod_name:
            out["authentication.kubernetes.io/pod-name"] = [self.pod_name]
            out["authentication.kubernetes.io/pod-uid"] = [self.pod_uid]
        if self.node_name:
            out["authentication.kubernetes.io/node-name"] = [self.node_name]
        return out


class TokenIssuer:
    def __init__(self, private_key_pem: bytes | None, public_key_pem: bytes | None):
        self.private_key = serialization.load_pem_private_key(private_key_pem, None) if private_key_pem else None
        if public_key_pem:
            self.public_key = serialization.load_pem_public_key(public_key_pem)
        elif self.private_key is not None:
            self.public_key = self.private_key.public_key()
        else:
            self.public_key = None
        self.kid = ""
        if self.public_key is not None:
            import base64
            import hashlib

            der = self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")

    def issue(self, sa: Obj, audiences: list[str], expiration: int, pod: Obj | None = None,
              now: float | None = None) -> tuple[str, int]:
        if self.private_key is None:
            raise TokenError("no service-account signing key configured")
        now = int(now if now is not None else time.time())
        exp = now + expiration
        meta = sa["metadata"]
        k8s: Obj = {"namespace": meta["namespace"], "serviceaccount": {"name": meta["name"], "uid": meta.get("uid", "")}}
        if pod is not None:
            pm = pod["metadata"]
            k8s["pod"] = {"name": pm["name"], "uid": pm.get("uid", "")}
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                k8s["node"] = {"name": node, "uid": ""}
        if expiration >= 3607 and pod is not None:
            k8s["warnafter"] = now + 3607
        claims = {
            "aud": audiences,
            "exp": exp,
            "iat": now,
            "iss": ISSUER,
            "jti": __import__("uuid").uuid4().hex,
            "kubernetes.io": k8s,
            "nbf": now,
            "sub": f"system:serviceaccount:{meta['namespace']}:{meta['name']}",
        }
        token = jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})  # type: ignore[arg-type]
        return token, exp

    def verify(self, token: str, audiences: list[str] | None = None) -> Claims:
        """Signature, issuer, time and audience checks (object binding is checked by the caller)."""
        if self.public_key is None:
            raise TokenError("no service-account key configured")
        try:
            data = jwt.decode(token, self.public_key, algorithms=["RS256"], issuer=ISSUER,  # type: ignore[arg-type]
                              options={"verify_aud": False, "require": ["exp", "iss", "sub"]}, leeway=60)
        except jwt.PyJWTError as e:
            raise TokenError(f"invalid bearer token, {e}") from None
        aud = data.get("aud") or []
        aud = [aud] if isinstance(aud, str) else list(aud)
        wanted = audiences or API_AUDIENCES
        if not set(aud) & set(wanted):
            raise TokenError("token audiences " + repr(aud) + " is invalid for the target audiences " + repr(wanted))
        k8s = data.get("kubernetes.io") or {}
        sa = k8s.get("serviceaccount") or {}
        pod = k8s.get("pod") or {}
        node = k8s.get("node") or {}
        return Claims(
            namespace=k8s.get("namespace", ""),
            serviceaccount=sa.get("name", ""),
            sa_uid=sa.get("uid", ""),
            audiences=[a for a in aud if a in wanted],
            pod_name=pod.get("name", ""),
            pod_uid=pod.get("uid", ""),
            node_name=node.get("name", ""),
        )
