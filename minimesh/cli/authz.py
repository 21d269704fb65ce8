"""`minimesh authz check POD`: the RBAC a sidecar enforces, and a request decided by the evaluator and by
the sidecar's own config (like `istioctl x authz check`)."""

from __future__ import annotations

import click


@click.group()
def authz() -> None:
    """AuthorizationPolicy tools (stage 7)."""


@authz.command()
@click.argument("pod")  # POD or deploy/NAME
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-X", "--method", default=None, help="decide a request: its method (e.g. GET)")
@click.option("--path", default="/", show_default=True, help="the request's path")
@click.option("--port", default=9080, show_default=True, help="the destination port (the app's)")
@click.option("--from", "principal", default=None,
              help="the caller's principal (cluster.local/ns/NS/sa/SA); none: a client without mTLS")
@click.option("-H", "--header", "headers", multiple=True, help="a request header 'name: value' (repeatable)")
@click.option("--host", default=None, help="the Host header (default: the pod's app label and the port)")
def check(pod: str, namespace: str, method: str | None, path: str, port: int, principal: str | None,
          headers: tuple[str, ...], host: str | None) -> None:
    """Show the AuthorizationPolicies POD's sidecar enforces; with -X, decide one request both ways."""
    from kubernetes.client.exceptions import ApiException
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from minimesh.authz import check as ck
    from minimesh.authz.engine import Request
    from minimesh.cli.kube import _core, _pod_name
    from minimesh.cli.mesh import _api_client, _api_error

    console = Console()
    pod = _pod_name(_core(), namespace, pod)  # POD, pod/NAME, deploy/NAME or svc/NAME, as `minimesh exec`
    try:
        report = ck.check(_api_client(), pod, namespace)
    except ApiException as e:
        raise _api_error(e) from None
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    table = Table("ACTION", "AuthorizationPolicy", "RULES")
    rows = ck.summary(report.chains)
    console.print(f"[bold]{namespace}/{pod}[/]: the RBAC filters in its sidecar (listener virtualInbound)")
    for action, name, rules in rows:
        table.add_row(action, escape(name), str(rules))
    console.print(table if rows else f"{namespace}/{pod}: its sidecar enforces no AuthorizationPolicy (everything is allowed)")
    for name, error in report.errors.items():
        console.print(f"[red]invalid[/] {escape(name)}: {escape(error)}\n  (the push server makes it fail closed)")
    if method is None:
        return
    pairs = []
    for h in headers:
        k, sep, v = h.partition(":")
        if not sep:
            raise click.BadParameter(f"{h!r}: want 'name: value'", param_hint="--header")
        pairs.append((k.strip().lower(), v.strip()))
    host = host or f"{report.labels.get('app', pod)}:{port}"
    req = Request(method, path, host=host, port=port, headers=pairs, source_principal=principal,
                  source_ip="10.244.0.1", destination_ip="10.244.0.2")
    mine, sidecar = report.decide(req)
    who = principal or "a client without a mesh certificate"
    console.print(f"\n[bold]{escape(method)} {escape(path)}[/] on port {port} from {escape(who)}:")
    if isinstance(mine, Exception):
        console.print(f"  evaluator (minimesh/authz/engine.py): [yellow]{type(mine).__name__}: {escape(str(mine))}[/]")
    else:
        console.print(f"  evaluator (minimesh/authz/engine.py): {_word(mine.allowed)}  {escape(mine.reason)}")
    console.print(f"  sidecar (RBAC from its /config_dump):  {_word(sidecar.allowed)}  {escape(sidecar.why)}")
    if not isinstance(mine, Exception) and mine.allowed != sidecar.allowed:
        console.print("  [red]they disagree[/]: a bug in the evaluator, or a push that has not reached the sidecar")


def _word(allowed: bool) -> str:
    return "[green]ALLOW[/]" if allowed else "[red]DENY[/] "

