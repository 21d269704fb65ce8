"""`python -m minimesh.cluster.local.node --name NAME` (inside the node network namespace)."""

from __future__ import annotations

# Leave the mount namespace `ip netns exec` made while we are still single-threaded (see nsutil).
from minimesh.cluster.local.node import nsutil

_JOINED_HOST_MOUNTS = nsutil.join_host_mount_namespace()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402

from minimesh.cluster.local.layout import ClusterLayout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="minimesh-node", description="kubelet, kube-proxy and DNS of a local cluster")
    parser.add_argument("--name", required=True, help="cluster name")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not _JOINED_HOST_MOUNTS:
        logging.getLogger("minimesh.node").info("already in the host mount namespace")
    from minimesh.cluster.local.node.daemon import serve

    asyncio.run(serve(ClusterLayout.load(args.name)))


if __name__ == "__main__":
    main()
