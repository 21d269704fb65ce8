"""`minimesh demo`: the finished mesh end to end on a local cluster."""

from __future__ import annotations

import click


@click.command()
@click.option("--name", default="demo", show_default=True, help="name of the local cluster to create")
def demo(name: str) -> None:
    """Run the finished mesh (the reference solutions) end to end on a local cluster, step by step."""
    from minimesh.demo import main

    main(["--name", name])
