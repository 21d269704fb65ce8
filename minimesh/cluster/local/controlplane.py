"""The control-plane process of a local cluster: API server, controller manager and scheduler.

Run by `minimesh cluster up` in the host network namespace:
    python -m minimesh.cluster.local.controlplane --name NAME
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from minimesh.cluster.local.layout import ClusterLayout
from minimesh.cluster.local.pki import load_pki
from minimesh.k8s.aclient import AsyncKube, Credentials

log = logging.getLogger("minimesh.controlplane")


async def serve(layout: ClusterLayout) -> None:
    from minimesh.cluster.local.apiserver.server import ApiServer
    from minimesh.cluster.local.controllers import run_controllers
    from minimesh.cluster.local.scheduler import run_scheduler

    pki = load_pki(layout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    api = ApiServer(layout=layout, pki=pki)
    await api.start()
    log.info("API server listening on %s and https://%s:%d", layout.api_server_url, layout.host_ip, layout.api_port)
    kube = AsyncKube(
        Credentials(server=layout.api_server_url, token=pki.admin_token, ca_file=str(pki.ca_cert)),
        user_agent="minimesh-controller-manager",
    )
    tasks = [
        asyncio.create_task(run_controllers(kube, layout, stop), name="controllers"),
        asyncio.create_task(run_scheduler(kube, layout, stop), name="scheduler"),
    ]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for t in done:
        if t is not stopper and t.exception():
            log.error("%s failed", t.get_name(), exc_info=t.exception())
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await kube.close()
    await api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="minimesh-controlplane")
    parser.add_argument("--name", required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(ClusterLayout.load(args.name)))


if __name__ == "__main__":
    main()
