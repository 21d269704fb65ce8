"""Outbound calls from one bookinfo service to another: plain HTTP, bounded time, never raises.

A failed call comes back as a `Fetched` with a human cause ("details answered HTTP 403: RBAC: access
denied", "reviews did not answer within 3s"), so the page can render the rest and say what broke.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Fetched:
    body: Any = None
    status: int | None = None
    cause: str | None = None

    @property
    def ok(self) -> bool:
        return self.cause is None


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def get_json(
    session: aiohttp.ClientSession,
    name: str,
    url: str,
    headers: dict[str, str],
    *,
    timeout: float,
    tries: int = 1,
) -> Fetched:
    """GET `url` expecting 200 + JSON; up to `tries` attempts, each bounded by `timeout` seconds."""
    last = Fetched(cause=f"{name} was not called")
    for _ in range(max(1, tries)):
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
            ) as resp:
                text = await resp.text(errors="replace")
                if resp.status != 200:
                    last = Fetched(status=resp.status, cause=f"{name} answered HTTP {resp.status}: {_snippet(text)}")
                    continue
                try:
                    return Fetched(body=json.loads(text), status=resp.status)
                except json.JSONDecodeError:
                    last = Fetched(status=resp.status, cause=f"{name} answered 200 but not JSON: {_snippet(text)}")
        except TimeoutError:
            last = Fetched(cause=f"{name} did not answer within {timeout:g}s")
        except aiohttp.ClientError as e:
            last = Fetched(cause=f"cannot reach {name}: {_snippet(str(e) or type(e).__name__)}")
    return last
