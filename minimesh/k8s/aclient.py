"""A small asyncio Kubernetes API client (aiohttp) and a list+watch informer.

The cluster's own components (kubelet, kube-proxy, DNS, controllers) use this to stay cheap and
async. Mesh components (the push server, the webhook, graders) use the official `kubernetes` client,
which works against every provider unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

PATCH_TYPES = {
    "json": "application/json-patch+json",
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


class ApiError(Exception):
    """A non-2xx answer; `status` is the Kubernetes Status object when the server sent one."""

    def __init__(self, code: int, status: dict[str, Any] | str):
        self.code = code
        self.status = status if isinstance(status, dict) else {"message": status}
        self.reason = self.status.get("reason", "")
        super().__init__(f"{code} {self.reason}: {self.status.get('message', '')}")


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """`("apps/v1", "deployments", "default", "web")` → `/apis/apps/v1/namespaces/default/deployments/web`."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name)}"
    if subresource:
        base += f"/{subresource}"
    return base


@dataclass
class Credentials:
    server: str
    token: str | None = None
    ca_data: bytes | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        ctx = ssl.create_default_context(
            cafile=self.ca_file, cadata=self.ca_data.decode() if self.ca_data else None
        )
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def credentials_from_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> Credentials:
    cfg = yaml.safe_load(Path(path).read_text())
    ctx_name = context or cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next((u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {})
    ca = cluster.get("certificate-authority-data")
    return Credentials(
        server=cluster["server"],
        token=user.get("token"),
        ca_data=base64.b64decode(ca) if ca else None,
        ca_file=cluster.get("certificate-authority"),
        cert_file=user.get("client-certificate"),
        key_file=user.get("client-key"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def credentials_in_cluster() -> Credentials:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    return Credentials(
        server=f"https://{host}:{port}",
        token=(SA_DIR / "token").read_text().strip(),
        ca_file=str(SA_DIR / "ca.crt"),
    )


class AsyncKube:
    def __init__(self, creds: Credentials, *, user_agent: str = "minimesh"):
        self.creds = creds
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str], **kw: Any) -> AsyncKube:
        return cls(credentials_from_kubeconfig(path), **kw)

    async def __aenter__(self) -> AsyncKube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self.creds.token:
            headers["Authorization"] = f"Bearer {self.creds.token}"
        return aiohttp.ClientSession(
            base_url=self.creds.server,
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=self.creds.ssl_context(), limit=limit),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._new_session(limit=32)
        return self._session

    @property
    def watch_session(self) -> aiohttp.ClientSession:
        """Watches hold their connection for minutes: they get their own pool without a limit, so any
        number of informers never starves ordinary requests."""
        if self._watch_session is None or self._watch_session.closed:
            self._watch_session = self._new_session(limit=0)
        return self._watch_session

    async def close(self) -> None:
        for s in (self._session, self._watch_session):
            if s is not None:
                await s.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float | None = 30,
    ) -> Any:
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers["Content-Type"] = content_type
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (params or {}).items() if v is not None}
        async with self.session.request(
            method, path, data=data, params=params, headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    raise ApiError(resp.status, json.loads(text))
                except json.JSONDecodeError:
                    raise ApiError(resp.status, text) from None
            if resp.content_type == "application/json" and text:
                return json.loads(text)
            return text

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.get(path)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    async def list(self, path: str, **params: Any) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        return await self.request("POST", path, body, params=params)

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PUT", path, body)

    async def patch(self, path: str, body: Any, patch_type: str = "merge", **params: Any) -> dict[str, Any]:
        if patch_type == "apply":
            body = json.dumps(body)
        return await self.request("PATCH", path, body, content_type=PATCH_TYPES[patch_type], params=params)

    async def delete(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        return await self.request("DELETE", path, body, params=params)

    async def watch(
        self, path: str, resource_version: str | None = None, *, timeout_seconds: int = 300, **params: Any
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yields (type, object) from a watch; ends when the server closes it. 410 raises ApiError."""
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
            **{k: str(v) for k, v in params.items() if v is not None},
        }
        if resource_version:
            query["resourceVersion"] = resource_version
        async with self.watch_session.get(
            path, params=query, timeout=aiohttp.ClientTimeout(total=timeout_seconds + 30, sock_read=None)
        ) as resp:
            if resp.status >= 400:
                text = await resp.text()
                try:
                    raise ApiError(resp.status, json.loads(text))
                except json.JSONDecodeError:
                    raise ApiError(resp.status, text) from None
            # Split lines ourselves: aiohttp's line iterator gives up on lines over 128 KiB, and one
            # watch event is one line (a CRD with a big schema or a large ConfigMap is longer).
            buf = bytearray()
            async for chunk in resp.content.iter_any():
                start = len(buf)
                buf += chunk
                while (nl := buf.find(b"\n", start)) >= 0:
                    line = bytes(buf[:nl])
                    del buf[: nl + 1]
                    start = 0
                    if line.strip():
                        yield _watch_event(line)
            if buf.strip():
                yield _watch_event(bytes(buf))


def _watch_event(line: bytes) -> tuple[str, dict[str, Any]]:
    event = json.loads(line)
    if event.get("type") == "ERROR":
        status = event.get("object", {})
        raise ApiError(int(status.get("code", 500)), status)
    return event["type"], event["object"]


Handler = Callable[[str, dict[str, Any], dict[str, Any] | None], Awaitable[None]]


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else meta["name"]


class Informer:
    """List+watch with a local cache. Calls `handler(type, obj, old)` for ADDED/MODIFIED/DELETED, in order.

    On a 410 Gone (history compacted) or a dropped connection it re-lists and synthesizes the events that
    it missed, the way client-go's reflector does, so handlers see a consistent stream.
    """

    def __init__(self, kube: AsyncKube, path: str, handler: Handler | None = None, **params: Any):
        self.kube = kube
        self.path = path
        self.params = params
        self.handlers: list[Handler] = [handler] if handler else []
        self.cache: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.resource_version: str | None = None

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    async def _emit(self, typ: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        for h in self.handlers:
            try:
                await h(typ, obj, old)
            except Exception:
                log.exception("informer handler failed for %s %s", typ, object_key(obj))

    async def _relist(self) -> None:
        data = await self.kube.list(self.path, **self.params)
        self.resource_version = data["metadata"].get("resourceVersion")
        fresh = {object_key(o): o for o in data.get("items", [])}
        for key, old in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                await self._emit("DELETED", old, old)
        for key, obj in fresh.items():
            old = self.cache.get(key)
            self.cache[key] = obj
            if old is None:
                await self._emit("ADDED", obj, None)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                await self._emit("MODIFIED", obj, old)
        self.synced.set()

    async def run(self) -> None:
        backoff = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for typ, obj in self.kube.watch(self.path, self.resource_version, **self.params):
                    backoff = 0.2
                    rv = obj.get("metadata", {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if typ == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    old = self.cache.get(key)
                    if typ == "DELETED":
                        self.cache.pop(key, None)
                    else:
                        self.cache[key] = obj
                    await self._emit(typ, obj, old)
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.code == 410:
                    need_list = True
                    continue
                log.warning("watch %s: %s; retrying in %.1fs", self.path, e, backoff)
                need_list = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                log.info("watch %s interrupted (%s); retrying in %.1fs", self.path, e, backoff)
                need_list = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)
            except Exception:
                # A malformed event or an unexpected answer must not end the informer for good.
                log.exception("watch %s failed; relisting in %.1fs", self.path, backoff)
                need_list = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)

    def items(self) -> list[dict[str, Any]]:
        return list(self.cache.values())

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.cache.get(f"{namespace}/{name}" if namespace else name)
