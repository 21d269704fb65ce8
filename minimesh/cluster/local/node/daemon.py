"""Wires the node together: informers, kubelet, kube-proxy, DNS, node status, events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys

from minimesh.cluster.local.images import ImageStore
from minimesh.cluster.local.layout import KUBERNETES_VERSION, ClusterLayout
from minimesh.cluster.local.node.dns_server import ClusterDns
from minimesh.cluster.local.node.events import EventRecorder
from minimesh.cluster.local.node.kubelet import Kubelet
from minimesh.cluster.local.node.kubeproxy import KubeProxy
from minimesh.cluster.local.node.nodestatus import ARCH, NodeStatusReporter
from minimesh.cluster.local.node.podlogic import BACKOFF_BASE
from minimesh.cluster.local.node.sandbox import setup_node_network
from minimesh.k8s.aclient import AsyncKube, Credentials, Informer

log = logging.getLogger("minimesh.node")


def backoff_base(layout: ClusterLayout) -> float:
    """CrashLoopBackOff base delay: 10 s like the kubelet; tests shorten it in the cluster record
    (`crash_loop_backoff_seconds` in cluster.json) or with MINIMESH_CRASHLOOP_BACKOFF."""
    env = os.environ.get("MINIMESH_CRASHLOOP_BACKOFF")
    if env:
        return float(env)
    value = getattr(layout, "crash_loop_backoff_seconds", None)
    if value is None:
        with contextlib.suppress(OSError, ValueError):
            value = json.loads(layout.record_path.read_text()).get("crash_loop_backoff_seconds")
    return float(value) if value else BACKOFF_BASE


def node_credentials(layout: ClusterLayout) -> Credentials:
    return Credentials(
        server=layout.api_server_url_from_node,
        token=(layout.pki_dir / "admin.token").read_text().strip(),
        ca_file=str(layout.pki_dir / "ca.crt"),
    )


async def serve(layout: ClusterLayout) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    kube = AsyncKube(node_credentials(layout), user_agent=f"kubelet/{KUBERNETES_VERSION} (linux/{ARCH}) minimesh")
    services = Informer(kube, "/api/v1/services")
    slices = Informer(kube, "/apis/discovery.k8s.io/v1/endpointslices")
    configmaps = Informer(kube, "/api/v1/configmaps")
    secrets = Informer(kube, "/api/v1/secrets")
    recorder = EventRecorder(kube, layout.node_name)
    reporter = NodeStatusReporter(kube, layout)
    await asyncio.to_thread(setup_node_network, layout)
    kubelet = Kubelet(
        layout, kube, services=services, configmaps=configmaps, secrets=secrets, recorder=recorder,
        images=ImageStore(layout.source_root, sys.prefix), allocatable=reporter.capacity,
        backoff_base=backoff_base(layout),
    )
    proxy = KubeProxy(services, slices)
    dns = ClusterDns(services, slices, layout.node_ip, pods=kubelet.pods)  # one node: its pods are all pods
    await dns.start()

    tasks = [asyncio.create_task(inf.run(), name=f"informer {inf.path}") for inf in (services, slices, configmaps, secrets)]
    tasks.append(asyncio.create_task(recorder.run(), name="events"))
    tasks.append(asyncio.create_task(proxy.run(), name="kube-proxy"))

    async def register_when_ready() -> None:
        # Ready means services work: the first kube-proxy sync is in (DNS already listens).
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proxy.synced.wait(), 10)
        await reporter.run()

    tasks.append(asyncio.create_task(register_when_ready(), name="node status"))
    tasks.append(asyncio.create_task(kubelet.run(), name="kubelet"))
    log.info("node %s of cluster %s starting (api %s)", layout.node_name, layout.name, layout.api_server_url_from_node)

    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for t in done:
        if t is not stopper and not t.cancelled() and t.exception():
            log.error("%s failed", t.get_name(), exc_info=t.exception())
    log.info("node stopping (containers keep running; a restarted node adopts them)")
    await kubelet.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await proxy.stop()
    await dns.stop()
    await kube.close()
