"""`python -m minimesh.agent proxy sidecar --discovery-address minimeshd.mesh-system.svc:15010`

What the injected `minimesh-proxy` container runs (Istio: `pilot-agent proxy sidecar`). Reads the pod's
identity from the environment and /etc/minimesh/pod, writes the proxy bootstrap, runs the proxy and
serves 15020/15021. Exit status: the proxy's (0 after a drain or /quitquitquit); 1 when a setting is
missing or wrong (the message names it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from minimesh.agent.agent import Agent, AgentSettings, Extension
from minimesh.agent.bootstrap import BootstrapOptions, split_address
from minimesh.agent.identity import AgentConfigError, PodIdentity
from minimesh.agent.probers import ENV as PROBERS_ENV
from minimesh.agent.probers import parse_probers
from minimesh.agent.status import PROMETHEUS_ENV, parse_prometheus_annotations

LEVELS = ("debug", "info", "warning", "error")


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.rstrip("s"))
    except ValueError:
        raise AgentConfigError(f"environment variable {name}: {raw!r} is not a number of seconds") from None
    if value < 0:
        raise AgentConfigError(f"environment variable {name}: must be >= 0, got {raw!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m minimesh.agent", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["proxy"], help="what to run (the proxy, as pilot-agent)")
    p.add_argument("type", choices=["sidecar", "router"], help="sidecar: next to an app; router: a gateway")
    p.add_argument("--discovery-address", default="minimeshd.mesh-system.svc:15010",
                   help="the push server, host:port (default %(default)s)")
    p.add_argument("--config-path", default="/etc/minimesh/proxy", help="where to write the bootstrap")
    p.add_argument("--podinfo-path", default="/etc/minimesh/pod", help="downward-API files (labels, annotations)")
    p.add_argument("--domain", default="cluster.local", help="cluster DNS domain")
    p.add_argument("--status-port", type=int, default=15020, help="app probes, merged metrics, /quitquitquit")
    p.add_argument("--health-port", type=int, default=15021, help="/healthz/ready")
    p.add_argument("--admin-port", type=int, default=15000, help="the proxy's admin port (127.0.0.1)")
    p.add_argument("--prometheus-port", type=int, default=15090, help="the proxy's stats listener (0: none)")
    p.add_argument("--termination-drain-duration", type=float, default=None,
                   help="seconds to keep serving after SIGTERM (default: TERMINATION_DRAIN_DURATION_SECONDS or 5)")
    p.add_argument("--proxy-drain-time", type=float, default=5.0,
                   help="seconds the proxy lets requests in flight finish when it quits (default %(default)s)")
    p.add_argument("--proxy-log-level", default="info", choices=LEVELS)
    p.add_argument("--log-level", default="info", choices=LEVELS)
    return p.parse_args(argv)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AgentConfigError(f"cannot read {path}: {e.strerror or e}") from None


def build(args: argparse.Namespace) -> Agent:
    split_address(args.discovery_address)
    podinfo = Path(args.podinfo_path)
    labels, annotations = _read(podinfo / "labels"), _read(podinfo / "annotations")
    if labels is None:
        logging.getLogger("minimesh.agent").warning(
            "agent: %s not found: the proxy's node metadata has no labels (mount the minimesh-podinfo volume)",
            podinfo / "labels")
    identity = PodIdentity.from_env(os.environ, labels, annotations)
    drain = args.termination_drain_duration
    if drain is None:
        drain = _env_seconds("TERMINATION_DRAIN_DURATION_SECONDS", 5.0)
    options = BootstrapOptions(args.discovery_address, node_type=args.type, domain=args.domain,
                               admin_port=args.admin_port, prometheus_port=args.prometheus_port,
                               drain_time=args.proxy_drain_time)
    identity.node(args.type, args.domain)  # fail now on a bad identity, not in the middle of startup
    settings = AgentSettings(options, Path(args.config_path), status_port=args.status_port,
                             health_port=args.health_port, termination_drain=drain,
                             proxy_log_level=args.proxy_log_level)
    return Agent(settings, identity, parse_probers(os.environ.get(PROBERS_ENV)),
                 app_metrics=parse_prometheus_annotations(os.environ.get(PROMETHEUS_ENV)),
                 extensions=(workload_identity(args.config_path, identity),))


def workload_identity(config_path: str, identity: PodIdentity) -> Extension:
    """Stage 6's certificate manager + SDS server (minimesh.security.certs): the proxy's static cluster
    `sds-grpc` leads to it. Before the mesh CA exists it keeps asking with back-off and the proxy simply has
    no certificate (auto mTLS stays plaintext), as pilot-agent does."""
    from minimesh.security.certs import SettingsError, WorkloadIdentity

    try:
        return WorkloadIdentity.from_env(config_path, os.environ, identity.annotations)
    except SettingsError as e:
        raise AgentConfigError(f"workload certificates: {e}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("minimesh").setLevel(args.log_level.upper())
    try:
        agent = build(args)
        return asyncio.run(agent.run())
    except AgentConfigError as e:
        print(f"minimesh-agent: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
