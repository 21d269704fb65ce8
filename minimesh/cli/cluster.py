"""`minimesh cluster up|down|status|list|kubeconfig`."""

from __future__ import annotations

import json

import click

from minimesh.cluster import provider as providers


def _opts(f):  # type: ignore[no-untyped-def]
    f = click.option("--name", "-n", default=None, help="cluster name (default: $MINIMESH_CLUSTER or 'minimesh')")(f)
    f = click.option(
        "--provider", "-p", type=click.Choice(providers.PROVIDERS), default=None,
        help="local (network namespaces, default on Linux), kind or minikube",
    )(f)
    return f


@click.group()
def cluster() -> None:
    """Create, inspect and remove the cluster the labs run on."""


@cluster.command()
@_opts
def up(name: str | None, provider: str | None) -> None:
    """Create the cluster (or restart its stopped components) and point kubectl at it."""
    from rich.console import Console

    console = Console(stderr=True)
    c = _get(provider, name)
    try:
        with console.status(f"[bold]creating {c.provider} cluster {c.name!r}") as st:
            result = c.up(progress=lambda msg: st.update(f"[bold]{c.provider} cluster {c.name!r}: {msg}"))  # type: ignore[call-arg]
    except providers.ProviderError as e:
        raise click.ClickException(str(e)) from None
    secs = getattr(result, "seconds", None)
    console.print(f"[green]✔[/] cluster [bold]{c.name}[/] ({c.provider}) is ready" + (f" in {secs:.1f}s" if secs else ""))
    console.print(f"  kubeconfig: {c.kubeconfig}   (kubectl context minimesh-{c.name} is now current)")
    console.print(f"  NodePorts:  http://{c.node_address()}:<nodePort>")
    console.print("  next:       minimesh apply -f minimesh/manifests/bookinfo.yaml")


@cluster.command()
@_opts
@click.option("--all", "all_", is_flag=True, help="remove every local cluster (and leftovers of crashed ones)")
def down(name: str | None, provider: str | None, all_: bool) -> None:
    """Remove the cluster and everything it created (namespaces, processes, rules, files)."""
    if all_:
        from minimesh.cluster.local import lifecycle

        names = lifecycle.all_names()
        for n in names:
            lifecycle.down(n)
            click.echo(f"removed local cluster {n}")
        if not names:
            click.echo("no local clusters")
        return
    c = _get(provider, name)
    try:
        removed = c.down()
    except providers.ProviderError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"removed {c.provider} cluster {c.name}" + (f" ({len(removed)} items)" if removed else " (nothing was left)"))


@cluster.command()
@_opts
@click.option("--json", "as_json", is_flag=True)
def status(name: str | None, provider: str | None, as_json: bool) -> None:
    """Show whether the cluster is up and what runs on it."""
    try:
        st = _get(provider, name).status()
    except providers.ProviderError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
        return
    for k, v in st.items():
        click.echo(f"{k:12} {v}")


@cluster.command("list")
def list_() -> None:
    """List local clusters."""
    from minimesh.cluster.local import lifecycle

    for n in lifecycle.all_names():
        click.echo(n)


@cluster.command("kubeconfig")
@_opts
def kubeconfig_(name: str | None, provider: str | None) -> None:
    """Print the path of the cluster's kubeconfig (export KUBECONFIG=$(minimesh cluster kubeconfig))."""
    click.echo(str(_get(provider, name).kubeconfig))


def _get(provider: str | None, name: str | None) -> providers.Cluster:
    try:
        return providers.get(provider, name)
    except providers.ProviderError as e:
        raise click.ClickException(str(e)) from None
