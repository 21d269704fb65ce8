"""SPIFFE identities of workloads: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`. Pure.

Istio names a workload by its service account, not by its pod: every replica of a Deployment shares one
identity, and AuthorizationPolicy principals are this URI without the `spiffe://` scheme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TRUST_DOMAIN = "cluster.local"
SCHEME = "spiffe://"
# RFC 1123 labels (namespace) and subdomains (service account names), as Kubernetes validates them
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")


class IdentityError(ValueError):
    """Not a workload identity; the message says which part is wrong."""


@dataclass(frozen=True, order=True)
class Identity:
    namespace: str
    service_account: str
    trust_domain: str = TRUST_DOMAIN

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.namespace) or len(self.namespace) > 63:
            raise IdentityError(f"namespace {self.namespace!r} is not a valid Kubernetes namespace name")
        if not _DNS_SUBDOMAIN.match(self.service_account) or len(self.service_account) > 253:
            raise IdentityError(f"service account {self.service_account!r} is not a valid Kubernetes name")
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise IdentityError(f"trust domain {self.trust_domain!r}: want lower-case letters, digits, '.', '-', '_'")

    @property
    def uri(self) -> str:
        """`spiffe://cluster.local/ns/default/sa/bookinfo-details`: the certificate's URI SAN."""
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """`cluster.local/ns/default/sa/bookinfo-details`: what AuthorizationPolicy `principals` match."""
        return self.uri[len(SCHEME):]

    def __str__(self) -> str:
        return self.uri


def parse(uri: str) -> Identity:
    """`spiffe://td/ns/NS/sa/SA` → Identity; raises IdentityError saying what is wrong."""
    if not uri.startswith(SCHEME):
        raise IdentityError(f"{uri!r} is not a SPIFFE ID: it must start with {SCHEME}")
    td, _, path = uri[len(SCHEME):].partition("/")
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
        raise IdentityError(f"{uri!r}: want {SCHEME}<trust domain>/ns/<namespace>/sa/<service account>")
    return Identity(parts[1], parts[3], td)


def from_service_account_username(username: str, trust_domain: str = TRUST_DOMAIN) -> Identity:
    """A TokenReview's `system:serviceaccount:NS:SA` → Identity; IdentityError for any other user."""
    prefix = "system:serviceaccount:"
    if not username.startswith(prefix) or username.count(":") != 3:
        raise IdentityError(f"user {username!r} is not a service account (want system:serviceaccount:<ns>:<name>)")
    ns, sa = username[len(prefix):].split(":")
    return Identity(ns, sa, trust_domain)
