"""`minimesh doctor [--provider local|kind|minikube] [--json]`: preflight checks, one line each."""

from __future__ import annotations

import click

from minimesh.cluster.provider import PROVIDERS, ProviderError, default_provider


@click.command()
@click.option("--provider", "-p", type=click.Choice(PROVIDERS), default=None,
              help="which cluster you will use (default: $MINIMESH_PROVIDER, else local on Linux)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the setup notebook reads it)")
def doctor(provider: str | None, as_json: bool) -> None:
    """Check that this machine can run the labs; exits 1 when a required check fails."""
    from minimesh import doctor as checks_mod

    try:
        chosen = provider or default_provider()
    except ProviderError as e:
        raise click.ClickException(str(e)) from None
    if not as_json:
        click.echo(f"minimesh doctor (provider: {chosen})")
    checks = checks_mod.run_checks(chosen)
    click.echo(checks_mod.to_json(chosen, checks) if as_json else checks_mod.render_text(checks))
    raise SystemExit(checks_mod.exit_code(checks))
