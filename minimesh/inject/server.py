"""The webhook's HTTPS server (aiohttp): POST /inject (and /inject/), POST /validate (mesh config validation),
GET /metrics, GET /ready.

The decisions live in review.py; this file only moves bytes, times requests, logs every outcome and
reloads the serving certificate when its files change (a Secret volume is updated in place when
`minimesh install` renews the certificate, and new TLS handshakes then get the new one).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from minimesh.inject import review
from minimesh.inject.metrics import Metrics
from minimesh.inject.template import InjectorConfig

log = logging.getLogger("minimesh.inject")
MAX_BODY = 8 * 1024 * 1024  # far above the API server's own object size limit


class TlsFiles:
    """A server SSLContext for cert/key files, reloaded in place when either file changes."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._mtimes()
        self.context.load_cert_chain(self.cert, self.key)

    def _mtimes(self) -> tuple[int, int]:
        return (os.stat(self.cert).st_mtime_ns, os.stat(self.key).st_mtime_ns)

    def reload_if_changed(self) -> bool:
        try:
            stamp = self._mtimes()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as e:  # half-written files: keep serving the old pair, try again later
            log.warning("certificate reload failed, keeping the current one: %s", e)
            return False
        self._stamp = stamp
        log.info("reloaded the serving certificate from %s", self.cert)
        return True


class Injector:
    """The web application: `namespace_labels` reads the namespace cache, `ready` says it is synced."""

    def __init__(self, config: InjectorConfig, namespace_labels: review.NamespaceLabels,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.config = config
        self.namespace_labels = namespace_labels
        self.ready = ready
        self.metrics = Metrics()

    async def inject(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        body = await request.read()
        # in a worker thread: the namespace lookup may ask the API server (see namespaces.py)
        reply = await asyncio.to_thread(review.handle, body, request.headers.get("Content-Type"),
                                        self.namespace_labels, self.config)
        self.metrics.record(reply, time.perf_counter() - start)
        if reply.outcome == review.FAILURE:
            log.error("%s %s: %s: %s", request.method, request.path, reply.reason, reply.message)
        else:
            log.info("%s", reply.message)
        return web.Response(status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type})

    async def validate(self, request: web.Request) -> web.Response:
        """Istio's config validation (minimesh.pilot.validation), served by the same HTTPS server."""
        from minimesh.pilot import validation

        reply = validation.handle(await request.read(), request.headers.get("Content-Type"))
        if reply.outcome == review.FAILURE:
            log.warning("%s %s: %s", request.method, request.path, reply.message)
        return web.Response(status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type})

    async def metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def ready_page(self, _: web.Request) -> web.Response:
        if self.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: the namespace list has not arrived yet\n")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/inject", self.inject)
        app.router.add_post("/inject/", self.inject)
        app.router.add_post("/validate", self.validate)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/ready", self.ready_page)
        return app


async def serve(injector: Injector, host: str, port: int, tls: TlsFiles | None,
                reload_every: float = 10.0) -> tuple[web.AppRunner, int, asyncio.Task[None] | None]:
    """Start listening; returns the runner, the bound port (port 0 picks one) and the reload task."""
    runner = web.AppRunner(injector.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls.context if tls else None)
    await site.start()
    server = site._server
    bound = server.sockets[0].getsockname()[1] if server and server.sockets else port  # type: ignore[union-attr]
    task = None
    if tls is not None:
        async def reload() -> None:
            while True:
                await asyncio.sleep(reload_every)
                tls.reload_if_changed()

        task = asyncio.create_task(reload())
    return runner, bound, task
