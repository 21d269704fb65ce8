"""`minimesh install | rollout | inject | capture`: the mesh's own commands, on any provider."""

from __future__ import annotations

import sys

import click

from minimesh.cluster import provider as providers


def _api_client():  # type: ignore[no-untyped-def]
    try:
        return providers.current().api_client()
    except providers.ProviderError as e:
        raise click.ClickException(str(e)) from None


def _api_error(e: Exception) -> click.ClickException:
    from minimesh.install.installer import _api_error as message

    status = getattr(e, "status", None)
    return click.ClickException(f"{status} {getattr(e, 'reason', '')}: {message(e)}" if status else str(e))


@click.command()
@click.option("--uninstall", is_flag=True, help="remove the control plane (webhook configuration first)")
@click.option("--keep-crds", is_flag=True, help="with --uninstall: keep the mesh CRDs and their resources")
@click.option("--image", default="minimesh/minimesh:dev", show_default=True, help="image of minimeshd and of injected containers")
@click.option("--native-sidecars", is_flag=True, help="inject proxies as native sidecars (Kubernetes >= 1.29)")
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for minimeshd")
def install(uninstall: bool, keep_crds: bool, image: str, native_sidecars: bool, timeout: float) -> None:
    """Install (or upgrade in place) the control plane into mesh-system, and wait until it is ready."""
    from kubernetes.client.exceptions import ApiException
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from minimesh.install import installer, plan

    console = Console(stderr=True)
    api = _api_client()
    try:
        if uninstall:
            with console.status("[bold]removing the control plane") as st:
                lines = installer.uninstall(api, keep_crds=keep_crds, report=lambda m: st.update(f"[bold]{m}"))
            for line in lines:
                click.echo(line)
            console.print("[green]✔[/] minimesh control plane removed")
            return
        columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("installing", total=installer.STEPS)
            result = installer.install(
                api, plan.Options(image=image, native_sidecars=native_sidecars), timeout=timeout,
                report=lambda m: progress.update(task, description=m), step=lambda: progress.advance(task))
    except (installer.InstallError, ApiException) as e:
        raise _api_error(e) if isinstance(e, ApiException) else click.ClickException(str(e)) from None
    for line in result.lines:
        click.echo(line)
    console.print("[green]✔[/] minimesh control plane is ready in namespace mesh-system")
    console.print("  next: minimesh kubectl label namespace default minimesh-injection=enabled")
    console.print("        minimesh rollout restart --all   (re-creates the pods, now with their sidecars)")


@click.group()
def rollout() -> None:
    """Restart workloads so their pods are re-created (and re-injected), and wait for it."""


@rollout.command()
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--all", "all_", is_flag=True, help="every Deployment of the namespace")
@click.argument("targets", nargs=-1)
def restart(namespace: str, all_: bool, targets: tuple[str, ...]) -> None:
    """Restart TYPE/NAME ... (deploy/NAME, ds/NAME, sts/NAME) or --all, like kubectl rollout restart."""
    from kubernetes.client.exceptions import ApiException

    from minimesh.install import rollout as ro

    if not targets and not all_:
        raise click.UsageError("give TYPE/NAME (e.g. deploy/productpage-v1) or --all")
    try:
        parsed = [ro.parse_target(t) for t in targets]
        for line in ro.restart(_api_client(), namespace, parsed, all_deployments=all_):
            click.echo(line)
    except ro.RolloutError as e:
        raise click.ClickException(str(e)) from None
    except ApiException as e:
        raise _api_error(e) from None


@rollout.command()
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait")
@click.option("--all", "all_", is_flag=True, help="every Deployment of the namespace")
@click.argument("targets", nargs=-1)
def status(namespace: str, timeout: float, all_: bool, targets: tuple[str, ...]) -> None:
    """Wait until deploy/NAME ... (or --all) has rolled out, printing kubectl's progress lines."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from minimesh.install import rollout as ro

    api = _api_client()
    try:
        parsed = [ro.parse_target(t) for t in targets]
        if all_:
            parsed += [ro.Target("Deployment", d.metadata.name)
                       for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items]
        if not parsed:
            raise click.UsageError("give deploy/NAME or --all")
        for t in parsed:
            if t.kind != "Deployment":
                raise ro.RolloutError(f"{t}: rollout status supports Deployments only")
            ro.wait(api, namespace, t.name, timeout=timeout, report=click.echo)
    except ro.RolloutError as e:
        raise click.ClickException(str(e)) from None
    except ApiException as e:
        raise _api_error(e) from None


@click.command()
@click.option("-f", "--filename", required=True, help="YAML file, or - for stdin")
@click.option("--native-sidecars", is_flag=True, help="inject the proxy as a native sidecar")
def inject(filename: str, native_sidecars: bool) -> None:
    """Print the YAML with the sidecar injected, like `istioctl kube-inject` (no cluster needed)."""
    from minimesh.inject.offline import main

    argv = ["-f", filename, *(["--native-sidecars"] if native_sidecars else [])]
    code = main(argv)
    if code:
        sys.exit(code)


from minimesh.capture.cli import capture as capture  # noqa: E402  (stage 6; imports only click)
