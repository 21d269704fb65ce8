"""`minimesh bench`: the data-plane benchmark on a cluster, and the control-plane benchmark."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def bench() -> None:
    """Measure minimesh: data plane on a cluster, control plane at scale."""


def _connections(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: want connection counts like 1,4,16,64") from None


@bench.command()
@click.option("--rate", type=float, default=1000.0, show_default=True, help="open-loop requests per second")
@click.option("--duration", type=float, default=20.0, show_default=True, help="measured seconds per topology")
@click.option("--warmup", type=float, default=2.0, show_default=True, help="seconds sent first, not measured")
@click.option("--connections", type=int, default=16, show_default=True, help="keep-alive connections of the load")
@click.option("--body", type=int, default=1024, show_default=True, help="request and response body bytes")
@click.option("--only", default="minimesh,minimesh-mtls,nginx,haproxy", show_default=True,
              help="sidecar pairs to measure (direct always runs: it is the baseline); minimesh-mtls = STRICT mTLS"
                   " + AuthorizationPolicy")
@click.option("--ramp", "ramp", default="1,4,16,64", show_default=True,
              help="closed-loop connection counts for the max-rate ramp")
@click.option("--ramp-duration", type=float, default=3.0, show_default=True, help="seconds per ramp step")
@click.option("--cluster", default=None, help="run on this cluster (default: create a local one, remove it after)")
@click.option("--provider", default=None, help="provider of --cluster (default: $MINIMESH_PROVIDER or local)")
@click.option("--haproxy-image", default="", help="HAProxy image (default: Debian's haproxy locally, haproxy:2.6)")
@click.option("--nginx-image", default="nginx", show_default=True)
@click.option("--nice", type=int, default=0, show_default=True,
              help="local cluster: run the bench pods' processes at this niceness (e.g. -10, as root)")
@click.option("--out", "out_dir", default="bench-results", show_default=True, type=click.Path(file_okay=False),
              help="where the JSON and the PNG go")
def dataplane(rate: float, duration: float, warmup: float, connections: int, body: int, only: str,
              ramp: str, ramp_duration: float, cluster: str | None, provider: str | None, haproxy_image: str,
              nginx_image: str, nice: int, out_dir: str) -> None:
    """The same load direct and through sidecar pairs (minimesh plain and with mTLS + AuthorizationPolicy, nginx,
    HAProxy): latency, max rate, CPU, RSS."""
    from minimesh.bench import dataplane as dp

    try:
        options = dp.Options(rate=rate, duration=duration, warmup=warmup, connections=connections, body=body,
                             only=tuple(t.strip() for t in only.split(",") if t.strip() and t.strip() != "direct"),
                             ramp=_connections(ramp), ramp_duration=ramp_duration,
                             haproxy_image=haproxy_image, nginx_image=nginx_image, nice=nice)
        result = dp.run(options, cluster=cluster, provider=provider, say=lambda m: click.echo(f"· {m}", err=True))
    except dp.BenchError as e:
        raise click.ClickException(str(e)) from None
    js, png = dp.save(result, Path(out_dir))
    click.echo(dp.table(result))
    click.echo(f"\nsaved {js} and {png}")
    failed = [t for t, r in result["topologies"].items() if "error" in r or not r.get("served_all")]
    if failed:
        raise click.ClickException(f"not every request was served in: {', '.join(failed)}")


@bench.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def controlplane(args: tuple[str, ...]) -> None:
    """The push server at mesh scale, no cluster needed (options: minimesh bench controlplane --help)."""
    from minimesh.bench import controlplane as cp

    raise SystemExit(cp.main(list(args)))
