"""The four bookinfo services as aiohttp applications, and the loop that serves one of them."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from minimesh.apps.bookinfo import data, render
from minimesh.apps.bookinfo.headers import propagated_headers
from minimesh.apps.bookinfo.settings import Settings
from minimesh.apps.bookinfo.upstream import Fetched, get_json

SETTINGS = web.AppKey("settings", Settings)
SESSION = web.AppKey("session", aiohttp.ClientSession)
USER_COOKIE = "user"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- one access-log line per request, on stdout ----------------------------------------------------
def access_line(s: Settings, request: web.Request, status: int, size: int, started: float) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "-"
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return (
        f'[{now}] {s.service} {s.version} "{request.method} {request.path_qs} '
        f'HTTP/{request.version.major}.{request.version.minor}" {status} {size} '
        f"{(time.perf_counter() - started) * 1000:.1f}ms peer={peer_text} "
        f'x-request-id={request.headers.get("x-request-id", "-")} '
        f'user-agent="{request.headers.get("user-agent", "-")}"'
    )


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    settings = request.app[SETTINGS]
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        print(access_line(settings, request, e.status, len(e.body or b""), started), flush=True)
        raise
    except Exception as e:  # an app bug must still answer and still log
        print(f"{settings.service}: error on {request.method} {request.path}: {e!r}", file=sys.stderr, flush=True)
        resp = web.json_response({"error": f"{settings.service} failed: {type(e).__name__}"}, status=500)
    body = getattr(resp, "body", None)
    size = len(body) if isinstance(body, bytes | bytearray) else (resp.content_length or 0)
    print(access_line(settings, request, resp.status, size, started), flush=True)
    return resp


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _product_id(request: web.Request) -> int:
    try:
        return data.parse_product_id(request.match_info["id"])
    except data.UnknownProduct as e:
        raise web.HTTPBadRequest(text=json.dumps({"error": str(e)}), content_type="application/json") from None


def _health(name: str) -> Handler:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": f"{name} is healthy", "version": request.app[SETTINGS].version})

    return health


async def _not_found(request: web.Request) -> web.Response:
    return _json_error(404, f"no route for {request.method} {request.path}")


# ---- details and ratings: answer from data ----------------------------------------------------------
def details_routes(app: web.Application) -> None:
    async def details(request: web.Request) -> web.Response:
        return web.json_response(data.details_for(_product_id(request)))

    app.router.add_get("/details/{id}", details)
    app.router.add_get("/health", _health("Details"))


def ratings_routes(app: web.Application) -> None:
    async def ratings(request: web.Request) -> web.Response:
        return web.json_response(data.ratings_for(_product_id(request)))

    app.router.add_get("/ratings/{id}", ratings)
    app.router.add_get("/health", _health("Ratings"))


# ---- reviews: v2/v3 call ratings -------------------------------------------------------------------
def reviews_routes(app: web.Application) -> None:
    async def reviews(request: web.Request) -> web.Response:
        s = request.app[SETTINGS]
        product_id = _product_id(request)
        with_ratings, _ = data.reviews_version_rules(s.version)
        ratings: dict[str, int] | None = None
        if with_ratings:
            got = await get_json(
                request.app[SESSION],
                "ratings",
                f"{s.ratings_url}/ratings/{product_id}",
                propagated_headers(request.headers),
                timeout=s.ratings_timeout,
            )
            if got.ok and isinstance(got.body, dict) and isinstance(got.body.get("ratings"), dict):
                ratings = got.body["ratings"]
            elif got.cause:
                print(f"reviews {s.version}: {got.cause}", file=sys.stderr, flush=True)
        return web.json_response(data.build_reviews(product_id, s.version, ratings, pod_name=s.pod_name))

    app.router.add_get("/reviews/{id}", reviews)
    app.router.add_get("/health", _health("Reviews"))


# ---- productpage: the page and its API ----------------------------------------------------------------
def _outbound_headers(request: web.Request) -> dict[str, str]:
    headers = propagated_headers(request.headers)
    user = request.cookies.get(USER_COOKIE)
    if user:
        headers["end-user"] = user  # Istio's productpage: the signed-in user drives header routing
    return headers


async def _details(request: web.Request, product_id: int) -> Fetched:
    s = request.app[SETTINGS]
    return await get_json(
        request.app[SESSION], "details", f"{s.details_url}/details/{product_id}", _outbound_headers(request),
        timeout=s.upstream_timeout,
    )


async def _reviews(request: web.Request, product_id: int) -> Fetched:
    s = request.app[SETTINGS]
    # Istio's productpage tries reviews twice (3 s each), which the fault-injection task relies on.
    return await get_json(
        request.app[SESSION], "reviews", f"{s.reviews_url}/reviews/{product_id}", _outbound_headers(request),
        timeout=s.upstream_timeout, tries=2,
    )


def _api_answer(got: Fetched) -> web.Response:
    if got.ok:
        return web.json_response(got.body)
    return web.json_response({"error": got.cause}, status=got.status if got.status and got.status >= 400 else 503)


def productpage_routes(app: web.Application) -> None:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=render.index_page(), content_type="text/html")

    async def productpage(request: web.Request) -> web.Response:
        details, reviews = await asyncio.gather(
            _details(request, data.PRODUCT_ID), _reviews(request, data.PRODUCT_ID)
        )
        page = render.product_page(
            data.PRODUCT,
            details=details.body if details.ok else None,
            details_error=details.cause,
            reviews=reviews.body if reviews.ok else None,
            reviews_error=reviews.cause,
            user=request.cookies.get(USER_COOKIE),
        )
        return web.Response(text=page, content_type="text/html")

    async def products(request: web.Request) -> web.Response:
        return web.json_response([data.PRODUCT])

    async def product(request: web.Request) -> web.Response:
        return _api_answer(await _details(request, _product_id(request)))

    async def product_reviews(request: web.Request) -> web.Response:
        return _api_answer(await _reviews(request, _product_id(request)))

    async def product_ratings(request: web.Request) -> web.Response:
        s = request.app[SETTINGS]
        product_id = _product_id(request)
        return _api_answer(
            await get_json(
                request.app[SESSION], "ratings", f"{s.ratings_url}/ratings/{product_id}",
                _outbound_headers(request), timeout=s.upstream_timeout,
            )
        )

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        user = str(form.get("username", "")).strip()
        if not user or len(user) > 64 or not user.isprintable():
            return _json_error(400, "login: want a form field 'username' of 1-64 printable characters")
        resp = web.HTTPFound("/productpage")
        resp.set_cookie(USER_COOKIE, user, httponly=True, samesite="Lax")
        return resp

    async def logout(request: web.Request) -> web.Response:
        resp = web.HTTPFound("/productpage")
        resp.del_cookie(USER_COOKIE)
        return resp

    app.router.add_get("/", index)
    app.router.add_get("/productpage", productpage)
    app.router.add_get("/api/v1/products", products)
    app.router.add_get("/api/v1/products/{id}", product)
    app.router.add_get("/api/v1/products/{id}/reviews", product_reviews)
    app.router.add_get("/api/v1/products/{id}/ratings", product_ratings)
    app.router.add_post("/login", login)
    app.router.add_get("/logout", logout)
    app.router.add_get("/health", _health("Product page"))


ROUTES: dict[str, Callable[[web.Application], None]] = {
    "productpage": productpage_routes,
    "details": details_routes,
    "reviews": reviews_routes,
    "ratings": ratings_routes,
}


async def _open_session(app: web.Application) -> Any:
    # One pooled client per process: keep-alive to the (sidecar-fronted) upstreams.
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    yield
    await app[SESSION].close()


def make_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[access_log])
    app[SETTINGS] = settings
    ROUTES[settings.service](app)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    app.cleanup_ctx.append(_open_session)
    return app


async def serve(settings: Settings, *, ready: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; prints the bound addresses (port 0 picks a free one)."""
    runner = web.AppRunner(make_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before announcing: a stop may follow at once
        loop.add_signal_handler(sig, stop.set)
    bound = [tuple(a[:2]) for a in runner.addresses]  # the real ports, also when asked for port 0
    print(
        f"{settings.service} {settings.version} listening on "
        + ", ".join(f"{h}:{p}" for h, p in bound),
        flush=True,
    )
    if ready:
        ready(bound)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
