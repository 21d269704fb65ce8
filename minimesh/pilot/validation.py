"""Config validation at admission, as istiod's validating webhook (`/validate`). Pure: body in, answer out.

The API server's CRD schema checks types; meaning is checked here, before a bad object is stored: an
AuthorizationPolicy the push server could not use (a lower-case method, `requestPrincipals`, a path
template, a CIDR that is not one, …) is refused, and `kubectl apply` prints why and where:

    admission webhook "validation.minimesh.io" denied the request: AuthorizationPolicy default/x:
    spec.rules[0].to[0].operation.methods[0]: 'get' is not an upper-case HTTP method ...; did you mean 'GET'?

What still slips through (the webhook down with failurePolicy Ignore, objects stored before it existed)
fails closed in the push server (`minimesh.authz.translate`). Other kinds are allowed unchecked.
"""

from __future__ import annotations

from minimesh.authz.model import KIND as AUTHORIZATION_POLICY
from minimesh.authz.model import PolicyError, parse_policy
from minimesh.inject.review import SKIP, SUCCESS, Reply, allow, decode, refuse

BAD_CONFIG = "bad_config"
CHECKED = {("security.minimesh.io", AUTHORIZATION_POLICY)}


def handle(body: bytes, content_type: str | None) -> Reply:
    """The answer to one POST /validate."""
    decoded = decode(body, content_type)
    if isinstance(decoded, Reply):
        return decoded
    uid, request = decoded
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    group, name = str(kind.get("group") or ""), str(kind.get("kind") or "")
    if (group, name) not in CHECKED or request.get("operation") not in ("CREATE", "UPDATE"):
        return allow(uid, SKIP, "not_checked", f"not checked: {request.get('operation')} {group}/{name}")
    obj = request.get("object")
    if not isinstance(obj, dict):
        return refuse(uid, BAD_CONFIG, f"{name}: the request carries no object")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    namespace = str(request.get("namespace") or meta.get("namespace") or "default")
    try:
        parse_policy(obj, default_namespace=namespace)
    except PolicyError as e:
        return refuse(uid, BAD_CONFIG, str(e))
    return allow(uid, SUCCESS, "", f"valid: {name} {namespace}/{meta.get('name')}")
