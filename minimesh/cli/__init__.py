"""The `minimesh` command. Subcommands live in their own modules and are imported only when used."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute"; keeps `minimesh --help` fast (no cluster/grpc imports).
SUBCOMMANDS: dict[str, str] = {
    "cluster": "minimesh.cli.cluster:cluster",
    "doctor": "minimesh.cli.doctor:doctor",
    "apply": "minimesh.cli.kube:apply",
    "delete": "minimesh.cli.kube:delete",
    "exec": "minimesh.cli.kube:exec_",
    "logs": "minimesh.cli.kube:logs",
    "port-forward": "minimesh.cli.kube:port_forward",
    "kubectl": "minimesh.cli.kube:kubectl",
    "demo": "minimesh.cli.demo:demo",
    "lab": "minimesh.cli.lab:lab",
    "bench": "minimesh.cli.bench:bench",
    "install": "minimesh.cli.mesh:install",
    "rollout": "minimesh.cli.mesh:rollout",
    "capture": "minimesh.cli.mesh:capture",
    "inject": "minimesh.cli.mesh:inject",
    "authz": "minimesh.cli.authz:authz",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            return click.Command(cmd_name, help=f"(not available: {e})", callback=_unavailable(cmd_name, e))


def _unavailable(name: str, err: Exception):
    def run() -> None:
        raise click.ClickException(f"'minimesh {name}' is not available in this build: {err}")

    return run


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="minimesh")
def main() -> None:
    """minimesh: build a small, real sidecar service mesh, one stage at a time."""
