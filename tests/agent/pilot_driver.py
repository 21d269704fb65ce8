"""The real push server (DiscoveryServer: grpcio ADS + the debug/metrics HTTP) fed from stdin instead of
Kubernetes watches, for tests that run proxies in network namespaces without a cluster.

    python pilot_driver.py --grpc-port 15010 --http-port 15014
    stdin, one JSON object per line:
      {"op": "apply", "kind": "Service", "event": "ADDED", "obj": {...}}    a watch event
      {"op": "push"}                                                       push now (skip the debounce)
    stdout: "ready <grpc port> <http port>", then "ok <n>" after every line handled
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from minimesh.pilot.debug import serve_http
from minimesh.pilot.server import DiscoveryServer, serve_grpc


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--listen", default="127.0.0.1")
    args = ap.parse_args()
    ds = DiscoveryServer(debounce_quiet=0.05, debounce_max=0.5)
    ds.start()
    ds.synced = True
    grpc_server, grpc_port = await serve_grpc(ds, args.listen, args.grpc_port)
    runner, http_port = await serve_http(ds, args.listen, args.http_port)
    print(f"ready {grpc_port} {http_port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    n = 0
    while line := await reader.readline():
        msg = json.loads(line)
        if msg["op"] == "apply":
            ds.apply(msg["kind"], msg.get("event", "ADDED"), msg["obj"])
        elif msg["op"] == "push":
            import time

            taken = ds.debouncer.take(time.monotonic() + 3600)
            if taken is not None:
                ds.push(taken[0])
        n += 1
        print(f"ok {n}", flush=True)
    await ds.stop()
    await grpc_server.stop(0)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
