"""`minimesh capture POD [-n NS] [--seconds N] [--filter EXPR] [-o FILE] [--json]`: sniff a pod's traffic
with tcpdump (in its network namespace on the local cluster, from a capture pod on kind/minikube) and say
what a sniffer could read: flows, plaintext HTTP requests, TLS records with SNI and ALPN.

Stage 6 in one picture: before mTLS the report lists `GET /details/0` in clear text; after, only TLS
records (handshake, then application_data) with ALPN `minimesh`.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click


def run_capture(pod: str, namespace: str, seconds: float, bpf_filter: str, output: str | None) -> tuple[Path, Any]:
    """Capture for `seconds` (or until Ctrl-C), then analyse; (pcap path, CaptureReport)."""
    from kubernetes import client

    from minimesh.capture.analyse import analyse_pcap
    from minimesh.capture.pod import pod_capture
    from minimesh.cluster import provider

    cluster = provider.current()
    core = client.CoreV1Api(cluster.api_client())
    stop = threading.Event()
    old = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with pod_capture(cluster, core, namespace, pod, bpf_filter=bpf_filter, path=output) as cap:
            click.echo(f"capturing {namespace}/{pod} ({cap.where}, filter {bpf_filter!r}) for {seconds:g}s;"
                       " Ctrl-C stops early", err=True)
            deadline = time.monotonic() + seconds
            while not stop.is_set() and time.monotonic() < deadline:
                stop.wait(0.2)
    finally:
        signal.signal(signal.SIGINT, old)
    return cap.path, analyse_pcap(cap.path)


@click.command(name="capture")
@click.argument("pod")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--seconds", "-s", type=float, default=10.0, show_default=True, help="how long to capture")
@click.option("--filter", "bpf_filter", default="tcp", show_default=True, help="pcap filter, e.g. 'tcp port 9080'")
@click.option("-o", "--output", help="where to keep the pcap (default: a file under /tmp)")
@click.option("--json", "as_json", is_flag=True, help="print the analysis as JSON")
def capture(pod: str, namespace: str, seconds: float, bpf_filter: str, output: str | None, as_json: bool) -> None:
    """Capture a pod's traffic with tcpdump and show what a sniffer could read (stage 6)."""
    from minimesh.capture.tcpdump import CaptureError
    from minimesh.cluster.provider import ProviderError

    if seconds <= 0:
        raise click.BadParameter("want a positive number of seconds", param_hint="--seconds")
    try:
        path, report = run_capture(pod, namespace, seconds, bpf_filter, output)
    except (CaptureError, ProviderError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(report.summary())
        click.echo(f"pcap: {path}  (open it with wireshark or `tcpdump -r {path} -A`)")
