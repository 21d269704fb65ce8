"""`python -m minimesh.cluster.local.node --name NAME` (inside the node network namespace)."""

from __future__ import annotations

import sys

from minimesh.cluster.local.layout import ClusterLayout, LayoutError
from minimesh.cluster.local.node import nsutil


def _host_mount_candidates() -> list[int]:
    """Processes in the host mount namespace: our parent, and the cluster's control plane."""
    import os

    pids = [os.getppid()]
    if "--name" in sys.argv[:-1]:
        try:
            layout = ClusterLayout.load(sys.argv[sys.argv.index("--name") + 1])
            pids.append(int(layout.pidfile("controlplane").read_text()))
        except (LayoutError, OSError, ValueError):
            pass
    return pids


# Leave the mount namespace `ip netns exec` made while we are still single-threaded (see nsutil).
_MOUNT_NS = nsutil.join_host_mount_namespace(_host_mount_candidates())

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="minimesh-node", description="kubelet, kube-proxy and DNS of a local cluster")
    parser.add_argument("--name", required=True, help="cluster name")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("minimesh.node").info("%s", _MOUNT_NS)
    from minimesh.cluster.local.node.daemon import serve

    asyncio.run(serve(ClusterLayout.load(args.name)))


if __name__ == "__main__":
    main()
