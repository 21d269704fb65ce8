"""Who is calling the CA: the bearer token in the gRPC metadata, checked by the API server (TokenReview).

The sidecar's agent sends the pod's projected service-account token (audience `minimesh-ca`, mounted at
/var/run/secrets/tokens/minimesh-token). The CA does not trust anything the caller says about itself:
it asks the API server "who is this token?" and gets `system:serviceaccount:<ns>:<sa>` back, and that
service account is the identity it signs for. The decisions are pure; `TokenReviewer` does the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from minimesh.security.identity import TRUST_DOMAIN, Identity, IdentityError, from_service_account_username

AUDIENCE = "minimesh-ca"


class AuthError(Exception):
    """The caller is not who it needs to be; `code` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bearer_token(metadata: Iterable[tuple[str, Any]]) -> str:
    """The token of `authorization: Bearer <token>` (gRPC metadata keys are lower case)."""
    values = [str(v) for k, v in metadata if k.lower() == "authorization"]
    if not values:
        raise AuthError("UNAUTHENTICATED", "no 'authorization: Bearer <token>' metadata: send the pod's service-account"
                        f" token (a projected token with audience {AUDIENCE!r})")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("UNAUTHENTICATED", "the authorization metadata must be 'Bearer <token>'")
    return token.strip()


def identity_from_review(review: Mapping[str, Any], audience: str = AUDIENCE,
                         trust_domain: str = TRUST_DOMAIN) -> Identity:
    """A TokenReview response (its dict form) → the caller's identity, or AuthError with the reason."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        why = status.get("error") or "the API server did not accept it"
        raise AuthError("UNAUTHENTICATED", f"the token was rejected by the API server's TokenReview: {why}"
                        f" (is it a current token of the pod's service account, with audience {audience!r}?)")
    audiences = status.get("audiences")
    if audiences is not None and audience not in audiences:
        raise AuthError("UNAUTHENTICATED", f"the token is for audiences {audiences}, not {audience!r}: mount a projected"
                        f" serviceAccountToken with audience {audience!r}")
    username = (status.get("user") or {}).get("username") or ""
    try:
        return from_service_account_username(username, trust_domain)
    except IdentityError as e:
        raise AuthError("PERMISSION_DENIED", f"{e}; only workloads (service accounts) get mesh certificates") from None


@dataclass
class TokenReviewer:
    """Runs TokenReviews through the official client (blocking: call it from a thread)."""

    api_client: Any
    audience: str = AUDIENCE

    def review(self, token: str) -> dict[str, Any]:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience]))
        try:
            result = client.AuthenticationV1Api(self.api_client).create_token_review(body, _request_timeout=10)
        except ApiException as e:
            raise AuthError("UNAVAILABLE", f"TokenReview failed at the API server ({e.status} {e.reason}); does"
                            " minimeshd's service account may create tokenreviews?") from None
        except Exception as e:  # connection problems: the caller should retry later
            raise AuthError("UNAVAILABLE", f"TokenReview failed: cannot reach the API server: {e}") from None
        return self.api_client.sanitize_for_serialization(result)  # type: ignore[no-any-return]

    def identify(self, token: str, trust_domain: str = TRUST_DOMAIN) -> Identity:
        return identity_from_review(self.review(token), self.audience, trust_domain)
