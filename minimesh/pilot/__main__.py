"""`python -m minimesh.pilot [--kubeconfig FILE] [--grpc-port 15010] [--http-port 15014]`

Runs the push server: watches the Kubernetes API (in-cluster config inside a pod, else the kubeconfig),
serves ADS over gRPC and the debug/metrics endpoints over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from kubernetes import client, config

from minimesh.pilot.debug import serve_http
from minimesh.pilot.server import DiscoveryServer, serve_grpc
from minimesh.pilot.store import MeshStore
from minimesh.pilot.watch import KubeWatcher

log = logging.getLogger("minimesh.pilot")


def api_client(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    return config.new_client_from_config(config_file=kubeconfig)


async def run(args: argparse.Namespace) -> None:
    discovery = DiscoveryServer(MeshStore(domain=args.domain), debounce_quiet=args.debounce_after,
                                debounce_max=args.debounce_max, hold_until_synced=True)
    discovery.start()
    grpc_server, grpc_port = await serve_grpc(discovery, args.listen, args.grpc_port)
    runner, http_port = await serve_http(discovery, args.listen, args.http_port)
    log.info("pilot: ADS on %s:%d, debug/metrics on %s:%d", args.listen, grpc_port, args.listen, http_port)

    def synced() -> None:
        if not discovery.synced:
            log.info("pilot: initial list complete; ready")
            # Snapshot the whole listed mesh now, so the first proxies (held until now) get all of it.
            taken = discovery.debouncer.take(float("inf"))
            if taken is not None:
                discovery.push(taken[0])
        discovery.synced = True

    loop = asyncio.get_running_loop()
    watcher = KubeWatcher(api_client(args.kubeconfig), loop, on_replace=discovery.replace,
                          on_event=discovery.apply, on_synced=synced)
    watcher.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("pilot: shutting down")
    watcher.stop()
    await discovery.stop()
    await grpc_server.stop(grace=1.0)
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m minimesh.pilot", description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config in a pod, else ~/.kube/config)")
    ap.add_argument("--listen", default="0.0.0.0", help="address for both servers (default 0.0.0.0)")
    ap.add_argument("--grpc-port", type=int, default=15010, help="ADS (plaintext gRPC), default 15010")
    ap.add_argument("--http-port", type=int, default=15014, help="debug and metrics, default 15014")
    ap.add_argument("--domain", default="cluster.local", help="cluster DNS domain")
    ap.add_argument("--debounce-after", type=float, default=0.1, help="quiet period before a push, seconds")
    ap.add_argument("--debounce-max", type=float, default=1.0, help="longest delay of a push, seconds")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))
    # The watch threads may still sit in a blocking read of a closed stream; interpreter finalization
    # racing them (and grpc's own threads) can turn a clean shutdown into a crash. Everything is stopped
    # and flushed by now, so leave without finalization.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
