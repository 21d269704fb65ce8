"""Service-account tokens for projected volumes, through the TokenRequest API, like the kubelet's manager.

A token is requested per (pod, service account, audience, expirationSeconds) with `boundObjectRef` to the
pod, cached, and considered due for refresh once 80% of its lifetime has passed (or after 24 h), which
is the kubelet's rule; pod workers ask `next_refresh()` when to rewrite their volumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from minimesh.k8s.aclient import AsyncKube, resource_path

DEFAULT_EXPIRATION = 3600
MAX_TTL_BEFORE_REFRESH = 24 * 3600


@dataclass
class CachedToken:
    token: str
    issued: float  # wall clock
    expires: float

    def refresh_at(self) -> float:
        ttl = self.expires - self.issued
        return self.issued + min(ttl * 0.8, MAX_TTL_BEFORE_REFRESH)


def _parse_time(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class TokenManager:
    def __init__(self, kube: AsyncKube):
        self.kube = kube
        self.cache: dict[tuple[str, ...], CachedToken] = {}

    def _key(self, pod: dict[str, Any], source: dict[str, Any]) -> tuple[str, ...]:
        meta = pod["metadata"]
        return (meta["namespace"], pod["spec"].get("serviceAccountName") or "default", meta["uid"],
                source.get("audience") or "", str(source.get("expirationSeconds") or DEFAULT_EXPIRATION))

    async def token(self, pod: dict[str, Any], source: dict[str, Any]) -> str:
        key = self._key(pod, source)
        cached = self.cache.get(key)
        now = time.time()
        if cached and now < cached.refresh_at():
            return cached.token
        ns, sa, _, audience, exp = key
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else None,
                "expirationSeconds": int(exp),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
                                   "uid": pod["metadata"]["uid"]},
            },
        }
        if not audience:
            del body["spec"]["audiences"]  # the API server's default audiences
        resp = await self.kube.create(resource_path("v1", "serviceaccounts", ns, sa, "token"), body)
        status = resp.get("status") or {}
        if not status.get("token"):
            raise RuntimeError(f"TokenRequest for {ns}/{sa} returned no token")
        expires = _parse_time(status["expirationTimestamp"]) if status.get("expirationTimestamp") else now + int(exp)
        self.cache[key] = CachedToken(status["token"], now, expires)
        return status["token"]

    def next_refresh(self, pod_uid: str) -> float | None:
        """Wall-clock time when one of this pod's tokens is due, or None."""
        times = [t.refresh_at() for k, t in self.cache.items() if k[2] == pod_uid]
        return min(times) if times else None

    def forget(self, pod_uid: str) -> None:
        for k in [k for k in self.cache if k[2] == pod_uid]:
            del self.cache[k]
