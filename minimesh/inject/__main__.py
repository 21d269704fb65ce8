"""`python -m minimesh.inject --port 15017 --cert tls.crt --key tls.key`: the sidecar-injection webhook.

Serves AdmissionReview v1 on POST /inject over HTTPS, /metrics and /ready. Inside a pod (or with
--kubeconfig) it watches namespaces to double-check `minimesh-injection=enabled`, and checks that the
cluster is >= 1.29 before honouring --native-sidecars.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minimesh.inject import names
from minimesh.inject.server import Injector, TlsFiles, serve
from minimesh.inject.template import InjectorConfig

log = logging.getLogger("minimesh.inject")
NATIVE_SIDECARS_SINCE = (1, 29)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m minimesh.inject", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=15017, help="HTTPS port (default 15017; 0 picks a free one)")
    ap.add_argument("--listen", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    ap.add_argument("--cert", type=Path, required=True, help="serving certificate (PEM), e.g. tls.crt of a Secret")
    ap.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
    ap.add_argument("--kubeconfig", help="kubeconfig for the namespace check (default: in-cluster inside a pod)")
    ap.add_argument("--no-namespace-check", action="store_true",
                    help="trust the webhook's namespaceSelector alone (no API access needed)")
    ap.add_argument("--native-sidecars", action="store_true",
                    help="inject the proxy as a native sidecar (Istio's ENABLE_NATIVE_SIDECARS; needs Kubernetes >= 1.29)")
    ap.add_argument("--image", default=names.IMAGE, help=f"image of the injected containers (default {names.IMAGE})")
    ap.add_argument("--discovery-address", default=names.DISCOVERY_ADDRESS, help="the push server, host:port")
    ap.add_argument("--cluster-id", default="Kubernetes", help="MESH_CLUSTER_ID of injected proxies")
    ap.add_argument("--revision", default="default", help="revision recorded in the status annotation")
    ap.add_argument("--cert-reload-seconds", type=float, default=10.0,
                    help="how often to look for a renewed certificate (default 10)")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return ap


def api_client(kubeconfig: str | None) -> Any | None:
    """The official client: in-cluster inside a pod, else the kubeconfig given; None when neither."""
    from kubernetes import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    if kubeconfig is not None:
        return config.new_client_from_config(config_file=kubeconfig)
    return None


def cluster_supports_native_sidecars(api: Any) -> tuple[bool, str]:
    from kubernetes import client

    info = client.VersionApi(api).get_code(_request_timeout=10)
    major = int("".join(ch for ch in info.major if ch.isdigit()) or 0)
    minor = int("".join(ch for ch in info.minor if ch.isdigit()) or 0)
    return (major, minor) >= NATIVE_SIDECARS_SINCE, f"{info.git_version or f'{major}.{minor}'}"


async def run(args: argparse.Namespace) -> int:
    try:
        tls = TlsFiles(args.cert, args.key)
    except (OSError, ValueError) as e:
        log.error("cannot load the serving certificate %s / key %s: %s", args.cert, args.key, e)
        return 2
    api = None
    if not args.no_namespace_check or args.native_sidecars:
        try:
            api = api_client(args.kubeconfig)
        except Exception as e:  # a broken kubeconfig or service-account mount: say which, stop
            log.error("cannot reach the Kubernetes API (%s: %s); give --kubeconfig or --no-namespace-check",
                      type(e).__name__, e)
            return 2
    native = args.native_sidecars
    if native and api is not None:
        try:
            ok, version = cluster_supports_native_sidecars(api)
        except Exception as e:
            ok, version = True, f"unknown ({type(e).__name__}: {e})"
            log.warning("--native-sidecars: cannot read the cluster version: %s; assuming >= 1.29", e)
        if not ok:
            log.warning("--native-sidecars ignored: the cluster is %s; native sidecars need >= 1.29", version)
            native = False
    elif native:
        log.warning("--native-sidecars: no API access to check the cluster version; assuming >= 1.29")
    config = InjectorConfig(image=args.image, discovery_address=args.discovery_address, cluster_id=args.cluster_id,
                            revision=args.revision, native_sidecars=native)

    watcher = None
    if args.no_namespace_check or api is None:
        log.info("namespace check off: trusting the webhook's namespaceSelector")
        injector = Injector(config, lambda _ns: None)
    else:
        from minimesh.inject.namespaces import NamespaceWatch

        watcher = NamespaceWatch(api)
        watcher.start()
        injector = Injector(config, watcher.labels, watcher.synced.is_set)

    runner, port, reload_task = await serve(injector, args.listen, args.port, tls, args.cert_reload_seconds)
    log.info("sidecar injector on https://%s:%d/inject (native sidecars: %s)", args.listen, port,
             "on" if native else "off")
    print(f"listening on {args.listen}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    if reload_task:
        reload_task.cancel()
    if watcher:
        watcher.stop()
    await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
