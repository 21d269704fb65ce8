"""`python -m minimesh.bench.closedloop --host H --port P --connections N --duration S`: a closed-loop load.

N keep-alive connections; each sends its next request (POST, `--body` bytes) as soon as the previous answer
is complete, for S seconds after a short warm-up. What a closed loop delivers is what the system under test
can serve with N requests in flight, so `minimesh bench dataplane` ramps N up to find the maximum
sustained rate (the open-loop generator of `dataplane_loopback` measures latency at a fixed rate instead).
Prints one JSON line: connections, duration_s, completed, errors, non_2xx, rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass
class ClosedLoopResult:
    connections: int
    duration_s: float
    completed: int
    errors: int
    non_2xx: int
    rate: float


def request_bytes(host_header: str, path: str, body_size: int) -> bytes:
    body = b"b" * body_size
    head = (f"POST {path} HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: minimesh-bench\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def run(host: str, port: int, connections: int, duration: float, *, body_size: int = 1024, path: str = "/",
              host_header: str = "upstream", warmup: float = 0.5) -> ClosedLoopResult:
    import httptools

    loop = asyncio.get_running_loop()
    request = request_bytes(host_header, path, body_size)
    counts = {"completed": 0, "errors": 0, "non_2xx": 0}
    window = {"start": 0.0, "end": 0.0}
    stop = asyncio.Event()

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.t: asyncio.Transport | None = None
            self.status = 0
            self.closed = loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport  # type: ignore[assignment]
            self.t.write(request)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                counts["errors"] += 1
                assert self.t is not None
                self.t.close()

        def on_headers_complete(self) -> None:
            self.status = self.parser.get_status_code()

        def on_message_complete(self) -> None:
            now = time.perf_counter()
            if window["start"] <= now < window["end"]:
                counts["completed"] += 1
                if not 200 <= self.status < 300:
                    counts["non_2xx"] += 1
            if now < window["end"] and self.t is not None:
                self.t.write(request)
            elif self.t is not None:
                self.t.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if time.perf_counter() < window["end"]:
                counts["errors"] += 1
            if not self.closed.done():
                self.closed.set_result(None)

    now = time.perf_counter()
    window["start"], window["end"] = now + warmup, now + warmup + duration
    clients = []
    for _ in range(connections):
        _, c = await loop.create_connection(Client, host, port)
        clients.append(c)
    loop.call_at(loop.time() + warmup + duration, stop.set)
    await stop.wait()
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(*(c.closed for c in clients))
    except TimeoutError:
        for c in clients:
            if c.t is not None:
                c.t.abort()
    return ClosedLoopResult(connections, duration, counts["completed"], counts["errors"], counts["non_2xx"],
                            round(counts["completed"] / duration, 1))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimesh.bench.closedloop", description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--body", type=int, default=1024, help="request body bytes")
    ap.add_argument("--path", default="/")
    ap.add_argument("--host-header", default="upstream")
    args = ap.parse_args(argv)
    if args.connections < 1 or args.duration <= 0:
        ap.error("--connections must be >= 1 and --duration > 0")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    result = runner(run(args.host, args.port, args.connections, args.duration, body_size=args.body,
                        path=args.path, host_header=args.host_header, warmup=args.warmup))
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
