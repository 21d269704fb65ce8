"""`python -m minimesh.security ca [--port 15012] --cert tls.crt --key tls.key [--kubeconfig FILE]`

The mesh CA of minimeshd: reads the root CA from Secret mesh-system/minimesh-ca (waiting for
`minimesh install` to make it), publishes the root certificate to every namespace (ConfigMap
minimesh-ca-root-cert) and serves CreateCertificate on 15012 over TLS with minimeshd's serving certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("minimesh.security")


def api_client(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    return config.new_client_from_config(config_file=kubeconfig)


def load_ca_secret(api: Any, namespace: str, name: str) -> tuple[bytes, bytes]:
    from kubernetes import client

    secret = client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    data = secret.data or {}
    if "ca.crt" not in data or "ca.key" not in data:
        raise ValueError(f"Secret {namespace}/{name} lacks ca.crt or ca.key")
    return base64.b64decode(data["ca.crt"]), base64.b64decode(data["ca.key"])


async def wait_for_ca(api: Any, namespace: str, name: str, stop: asyncio.Event) -> tuple[bytes, bytes] | None:
    from kubernetes.client.exceptions import ApiException

    while not stop.is_set():
        try:
            return await asyncio.to_thread(load_ca_secret, api, namespace, name)
        except (ApiException, ValueError, OSError) as e:
            why = f"{e.status} {e.reason}" if isinstance(e, ApiException) else str(e)
            log.warning("ca: cannot read the root CA from Secret %s/%s (%s); `minimesh install` makes it."
                        " Retrying in 5s", namespace, name, why)
        try:
            await asyncio.wait_for(stop.wait(), 5)
        except TimeoutError:
            pass
    return None


async def run_ca(args: argparse.Namespace) -> int:
    from minimesh.security import ca, ca_server, roots
    from minimesh.security.authn import TokenReviewer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        cert_pem, key_pem = Path(args.cert).read_bytes(), Path(args.key).read_bytes()
    except OSError as e:
        log.error("ca: cannot read the serving certificate/key: %s", e)
        return 1
    api = api_client(args.kubeconfig)
    found = await wait_for_ca(api, args.namespace, args.secret, stop)
    if found is None:
        return 0
    try:
        signing = ca.load_signing_ca(*found)
    except ca.CaError as e:
        log.error("ca: Secret %s/%s: %s", args.namespace, args.secret, e)
        return 1
    publisher = None
    if not args.no_publish:
        publisher = roots.RootCertPublisher(api, signing.cert_pem)
        publisher.start()
    reviewer = TokenReviewer(api, args.audience)
    service = ca_server.CertificateService(signing, lambda token: reviewer.identify(token, args.trust_domain))
    server, port = await ca_server.serve(service, args.listen, args.port, cert_pem, key_pem)
    log.info("ca: serving %s on %s:%d (root %s)", ca_server.SERVICE_NAME, args.listen, port,
             signing.cert.subject.rfc4514_string())
    await stop.wait()
    log.info("ca: shutting down")
    if publisher is not None:
        publisher.stop()
    await server.stop(grace=1.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimesh.security", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ca", help="run the mesh CA (part of minimeshd)")
    p.add_argument("--listen", default="0.0.0.0")
    p.add_argument("--port", type=int, default=15012)
    p.add_argument("--cert", required=True, help="serving certificate (PEM) for minimeshd.mesh-system.svc")
    p.add_argument("--key", required=True, help="its private key (PEM)")
    p.add_argument("--kubeconfig", help="default: in-cluster config in a pod, else ~/.kube/config")
    p.add_argument("--namespace", default="mesh-system", help="where Secret minimesh-ca lives")
    p.add_argument("--secret", default="minimesh-ca", help="the root CA's Secret (ca.crt, ca.key)")
    p.add_argument("--audience", default="minimesh-ca", help="token audience the CA accepts")
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument("--no-publish", action="store_true", help="do not publish ConfigMap minimesh-ca-root-cert")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(run_ca(args))


if __name__ == "__main__":
    sys.exit(main())
