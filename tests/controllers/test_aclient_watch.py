"""The shared async client's watch: events longer than aiohttp's line limit, split across chunks, and
watches that do not starve ordinary requests (a real HTTP server on loopback)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from minimesh.k8s.aclient import AsyncKube, Credentials, Informer


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def test_watch_events_longer_than_128k_and_split_across_chunks() -> None:
    big = {"metadata": {"name": "big", "resourceVersion": "2"}, "data": {"x": "y" * 300_000}}

    async def list_or_watch(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        resp = web.StreamResponse()
        await resp.prepare(request)
        line = json.dumps({"type": "ADDED", "object": big}).encode() + b"\n"
        for i in range(0, len(line), 7000):  # many small chunks
            await resp.write(line[i:i + 7000])
        small = {"metadata": {"name": "small", "resourceVersion": "3"}}
        await resp.write(json.dumps({"type": "ADDED", "object": small}).encode() + b"\n")
        await asyncio.sleep(30)
        return resp

    async def go() -> list[str]:
        app = web.Application()
        app.router.add_get("/api/v1/configmaps", list_or_watch)
        runner, url = await _serve(app)
        kube = AsyncKube(Credentials(server=url))
        seen: list[str] = []
        done = asyncio.Event()

        async def handler(typ: str, obj: dict[str, Any], old: Any) -> None:
            seen.append(f"{typ} {obj['metadata']['name']} {len(json.dumps(obj))}")
            if obj["metadata"]["name"] == "small":
                done.set()

        inf = Informer(kube, "/api/v1/configmaps", handler)
        task = asyncio.create_task(inf.run())
        try:
            await asyncio.wait_for(done.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await kube.close()
            await runner.cleanup()
        return seen

    seen = asyncio.run(go())
    assert seen[0].startswith("ADDED big ") and int(seen[0].split()[-1]) > 300_000
    assert seen[1].startswith("ADDED small")


def test_many_watches_do_not_block_requests() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        resp = web.StreamResponse()
        await resp.prepare(request)
        await asyncio.sleep(30)
        return resp

    async def go() -> dict[str, Any]:
        app = web.Application()
        app.router.add_get("/api/v1/{plural}", endless)
        async def version(request: web.Request) -> web.Response:
            return web.json_response({"gitVersion": "v1.32.0"})

        app.router.add_get("/version", version)
        runner, url = await _serve(app)
        kube = AsyncKube(Credentials(server=url))
        informers = [Informer(kube, f"/api/v1/r{i}") for i in range(40)]  # more than the request pool
        tasks = [asyncio.create_task(i.run()) for i in informers]
        try:
            await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in informers)), 10)
            await asyncio.sleep(0.2)  # every watch is open now
            return await asyncio.wait_for(kube.get("/version"), 5)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await kube.close()
            await runner.cleanup()

    assert asyncio.run(go()) == {"gitVersion": "v1.32.0"}
