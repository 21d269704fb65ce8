"""`python -m minimesh.proxy --bootstrap bootstrap.yaml [--log-level info]`: run one proxy.

Exit status: 0 after POST /quitquitquit or SIGTERM/SIGINT (drained), 1 on a bad bootstrap or a port that
cannot be bound (the message says which field or address).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from minimesh.proxy.admin import LEVELS
from minimesh.proxy.config import ConfigError, load_bootstrap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m minimesh.proxy", description="minimesh's Envoy-like sidecar proxy")
    p.add_argument("--bootstrap", "-c", required=True, help="bootstrap YAML/JSON (Envoy's shape)")
    p.add_argument("--log-level", "-l", default="info", choices=sorted(LEVELS), help="the proxy's own log level")
    p.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"), help="event loop implementation")
    p.add_argument("--drain-time-s", type=float, default=None, help="override minimesh.drain_time")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    from minimesh.proxy.server import Proxy

    boot = load_bootstrap(args.bootstrap)
    xds_plan = None
    if boot.dynamic_resources:  # stage 4: config from the push server over ADS (see xds.py)
        from minimesh.proxy.xds import XdsPlan, start_xds

        xds_plan = XdsPlan.from_bootstrap(boot)
    proxy = Proxy(boot)
    try:
        await proxy.start()
    except ConfigError:
        await proxy.stop()
        raise
    xds = start_xds(proxy, xds_plan) if xds_plan is not None else None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: proxy.quit_soon(0))
    log = logging.getLogger("minimesh.proxy")
    admin = f" admin on {boot.admin_address.address}:{proxy.admin.port};" if proxy.admin else ""
    ports = " ".join(f"{n}={proxy.listener_port(n)}" for n, rt in sorted(proxy.listeners.items()) if rt.cfg.bind_to_port)
    log.info("minimesh proxy %s %s:%s listeners: %s", boot.node.id or "-", proxy.state, admin, ports or "none")
    await proxy.stopped.wait()
    if xds is not None:
        await xds.stop()
    return proxy.exit_code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("minimesh").setLevel(LEVELS[args.log_level])
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            uvloop = None  # type: ignore[assignment]
        if uvloop is not None:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        if args.drain_time_s is not None:
            import dataclasses

            from minimesh.proxy.config import bootstrap as _b

            orig = _b.parse_bootstrap

            def patched(data: object) -> _b.Bootstrap:
                boot = orig(data)
                return dataclasses.replace(boot, options=dataclasses.replace(boot.options, drain_time=args.drain_time_s))

            _b.parse_bootstrap = patched  # type: ignore[assignment]
        return asyncio.run(run(args))
    except ConfigError as e:
        print(f"minimesh-proxy: bad bootstrap {args.bootstrap}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
