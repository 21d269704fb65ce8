"""python -m minimesh.apps.bookinfo {productpage|details|reviews|ratings} [--port 9080] [--host 0.0.0.0]"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from minimesh.apps.bookinfo import PORT, SERVICES
from minimesh.apps.bookinfo.settings import SettingsError, settings_from


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimesh.apps.bookinfo", description=__doc__)
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--port", type=int, default=PORT, help="listen port (0 = any free port)")
    parser.add_argument("--host", default="0.0.0.0", help="listen address")
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args.service, host=args.host, port=args.port, env=os.environ)
    except SettingsError as e:
        print(f"bookinfo {args.service}: {e}", file=sys.stderr)
        return 2
    from minimesh.apps.bookinfo.server import serve  # aiohttp only once the settings are sound

    try:
        asyncio.run(serve(settings))
    except OSError as e:
        print(f"bookinfo {args.service}: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
