"""`python -m minimesh.init`: the init container. Installs the traffic capture in this network namespace.

Prints the rules (so `kubectl logs <pod> -c minimesh-init` shows them), applies them in one
transaction with `iptables-<backend>-restore --noflush`, reads them back with `-save`, checks that every
rule is there and exits 0. A capture already installed is replaced in the same transaction, so running
twice is harmless. `--cleanup` removes the capture. Needs CAP_NET_ADMIN and CAP_NET_RAW.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from minimesh.init import backend as backends
from minimesh.init.annotations import config_from_annotations, parse_annotations_file
from minimesh.init.rules import (
    CaptureConfig,
    CaptureConfigError,
    build_apply,
    build_cleanup,
    build_rules,
    parse_nat,
    verify,
)

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
CAPS_MESSAGE = (
    "this container needs the NET_ADMIN and NET_RAW capabilities: add them to"
    ' securityContext.capabilities.add (["NET_ADMIN", "NET_RAW"]) of the minimesh-init container'
)


class InitError(Exception):
    """A failure with a message for the user; exit non-zero without a traceback."""


def log(msg: str) -> None:
    print(f"minimesh-init: {msg}", flush=True)


def _ports(text: str) -> tuple[int, ...] | str:
    text = text.strip()
    if text == "*":
        return "*"
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not '*' or a comma-separated list of ports") from None


def _cidrs(text: str) -> tuple[str, ...] | str:
    text = text.strip()
    return "*" if text == "*" else tuple(c.strip() for c in text.split(",") if c.strip())


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m minimesh.init", description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--proxy-port", type=int, help="outbound listener (default 15001)")
    ap.add_argument("-z", "--inbound-port", type=int, help="inbound listener (default 15006)")
    ap.add_argument("-u", "--proxy-uid", type=int, help="uid of the proxy (default 1337)")
    ap.add_argument("-g", "--proxy-gid", type=int, help="gid of the proxy (default 1337)")
    ap.add_argument("-m", "--redirect-mode", help="REDIRECT (TPROXY is not implemented)")
    ap.add_argument(
        "-b", "--include-inbound-ports", type=_ports, help="'*' or ports ('' = no inbound capture)"
    )
    ap.add_argument(
        "-d", "--exclude-inbound-ports", type=_ports, help="ports (15000,15020,15021,15090 always)"
    )
    ap.add_argument("-i", "--include-outbound-ranges", type=_cidrs, help="'*' or CIDRs")
    ap.add_argument("-x", "--exclude-outbound-ranges", type=_cidrs, help="CIDRs")
    ap.add_argument("-q", "--include-outbound-ports", type=_ports, help="ports")
    ap.add_argument("-o", "--exclude-outbound-ports", type=_ports, help="ports")
    ap.add_argument(
        "--from-annotations",
        type=Path,
        metavar="FILE",
        help="pod annotations (Downward API file or JSON object); flags given here override them",
    )
    ap.add_argument("--container-ports", type=_ports, default=(), help="the pod's containerPorts (checked)")
    ap.add_argument("--iptables-backend", default="auto", choices=backends.CHOICES)
    ap.add_argument("--dry-run", action="store_true", help="print the rules, change nothing")
    ap.add_argument("--cleanup", action="store_true", help="remove the capture instead of installing it")
    return ap


FLAG_FIELDS = {
    "proxy_port": "proxy_port",
    "inbound_port": "inbound_port",
    "proxy_uid": "proxy_uid",
    "proxy_gid": "proxy_gid",
    "redirect_mode": "redirect_mode",
    "include_inbound_ports": "inbound_ports_include",
    "exclude_inbound_ports": "inbound_ports_exclude",
    "include_outbound_ranges": "outbound_cidrs_include",
    "exclude_outbound_ranges": "outbound_cidrs_exclude",
    "include_outbound_ports": "outbound_ports_include",
    "exclude_outbound_ports": "outbound_ports_exclude",
}


def config_from_args(args: argparse.Namespace) -> CaptureConfig:
    annotations: dict[str, str] = {}
    if args.from_annotations:
        try:
            text = args.from_annotations.read_text()
        except OSError as e:
            raise InitError(
                f"--from-annotations: cannot read {args.from_annotations}: {e.strerror}"
            ) from None
        annotations = parse_annotations_file(text, str(args.from_annotations))
    ports = args.container_ports if isinstance(args.container_ports, tuple) else ()
    cfg = config_from_annotations(annotations, ports)
    overrides = {
        field: getattr(args, flag) for flag, field in FLAG_FIELDS.items() if getattr(args, flag) is not None
    }
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def missing_capabilities(status: str | None = None) -> list[str]:
    """Names of the capabilities this process lacks (from /proc/self/status CapEff)."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    eff = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), 0)
    return [
        name for bit, name in ((CAP_NET_ADMIN, "NET_ADMIN"), (CAP_NET_RAW, "NET_RAW")) if not eff >> bit & 1
    ]


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise InitError(
            f"{argv[0]} not found: the init container's image needs iptables ({argv[0]})"
        ) from None
    except subprocess.TimeoutExpired:
        raise InitError(f"{' '.join(argv)} did not finish within 30s") from None
    if done.returncode != 0:
        err = done.stderr.strip()
        if "Permission denied" in err or "Operation not permitted" in err:
            raise InitError(f"{CAPS_MESSAGE} ({argv[0]}: {err})")
        raise InitError(f"{' '.join(argv)} failed (exit {done.returncode}): {err}")
    return done.stdout


def _save(b: backends.Backend) -> str:
    return _run([b.save, "-t", "nat"])


def _restore(b: backends.Backend, text: str) -> None:
    _run([b.restore, "--noflush", "--wait"], stdin=text)


def install(cfg: CaptureConfig, b: backends.Backend) -> None:
    before = _save(b)
    text = build_apply(cfg, before)
    if parse_nat(before).mesh_chains():
        log("a capture is already installed: replacing it in the same transaction")
    _restore(b, text)
    after = _save(b)
    log(f"{b.save} -t nat now shows:")
    print(after, end="", flush=True)
    problems = verify(text, after)
    if problems:
        raise InitError("the rules did not all arrive: " + "; ".join(problems))
    log(f"traffic capture installed: outbound -> {cfg.proxy_port}, inbound -> {cfg.inbound_port}")


def uninstall(b: backends.Backend) -> None:
    text = build_cleanup(_save(b))
    if not text:
        log("no capture installed: nothing to remove")
        return
    print(text, end="", flush=True)
    _restore(b, text)
    left = parse_nat(_save(b)).mesh_chains()
    if left:
        raise InitError(f"chains still present after cleanup: {', '.join(left)}")
    log("traffic capture removed")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.dry_run:
            print(build_rules(cfg), end="", flush=True)
            return 0
        missing = missing_capabilities()
        if missing:
            raise InitError(f"{CAPS_MESSAGE} (missing: {', '.join(missing)})")
        b, why = backends.resolve(args.iptables_backend)
        log(why)
        if args.cleanup:
            uninstall(b)
            return 0
        log(f"applying these rules with {b.restore} --noflush:")
        print(build_rules(cfg), end="", flush=True)
        install(cfg, b)
        return 0
    except (InitError, CaptureConfigError) as e:
        print(f"minimesh-init: error: {e}", file=sys.stderr, flush=True)
        return 1
    except NotImplementedError as e:  # the trainee's starter: say which exercise is missing
        print(f"minimesh-init: error: not implemented yet: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
