"""python -m minimesh.apps.echo [--port 8080 ...] [--host 0.0.0.0] [--access-log]

Identity from the environment: POD_NAME (default: hostname), POD_NAMESPACE, SERVICE_NAME, SERVICE_VERSION.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from minimesh.apps.echo.reply import Identity
from minimesh.apps.echo.server import serve, stdout_log


def identity_from_env(env: dict[str, str] | os._Environ[str]) -> Identity:
    return Identity(
        pod=env.get("POD_NAME") or socket.gethostname(),
        namespace=env.get("POD_NAMESPACE", ""),
        service=env.get("SERVICE_NAME", ""),
        version=env.get("SERVICE_VERSION", ""),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimesh.apps.echo", description=__doc__)
    parser.add_argument("--port", type=int, action="append", help="listen port, repeatable (default 8080; 0 = free)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--access-log", action="store_true", help="one line per request on stdout")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args(argv)
    ports = args.port or [8080]
    for port in ports:
        if not 0 <= port <= 65535:
            parser.error(f"--port {port}: want 0-65535")
    if args.loop != "asyncio":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            if args.loop == "uvloop":
                parser.error("--loop uvloop: uvloop is not installed")
    try:
        asyncio.run(serve(identity_from_env(os.environ), args.host, ports, log=stdout_log if args.access_log else None))
    except OSError as e:
        print(f"echo: cannot listen on {args.host}:{ports}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
