"""`minimesh lab status | grade NN | solve NN | reset NN | open`: the trainee's side of the kit."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from minimesh import paths
from minimesh.lab import stages, state, workspace
from minimesh.lab.exercises import ExerciseError

if TYPE_CHECKING:
    from minimesh.lab.runner import GradeResult

# Piped output (CI logs, tests) gets a readable width instead of 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def _stage(value: str) -> stages.Stage:
    try:
        return stages.get(value)
    except stages.UnknownStage as e:
        raise click.BadParameter(str(e)) from e


def _root() -> Path:
    """The trainee's tree: the checkout the imported `minimesh` package lives in."""
    return paths.SOURCE_ROOT


@click.group()
def lab() -> None:
    """Work through the labs: see progress, grade a stage, catch up when stuck."""


@lab.command()
def status() -> None:
    """Per stage: not started / failing / passing, and which exercises are still stubs."""
    root = _root()
    data = state.load(root)
    try:
        regions = workspace.region_states(root)
    except ExerciseError as e:
        raise click.ClickException(f"cannot read your exercise regions: {e}") from e
    table = Table(title=f"minimesh labs — {root}", title_justify="left")
    for col in ("stage", "title", "status", "exercises still to do"):
        table.add_column(col)
    colours = {"passing": "green", "failing": "red", "not started": "dim"}
    for st in stages.STAGES:
        s = state.status_of(data, st.id)
        mine = [r for r in regions if r.lab == st.id]
        stubs = [f"{escape(r.function)}  [dim]{escape(r.path)}:{r.line}[/]" for r in mine if r.stub]
        todo = "\n".join(stubs) if stubs else ("all done" if mine else "—")
        table.add_row(st.id, st.title, f"[{colours[s]}]{s}[/]", todo)
    console.print(table)


@lab.command()
@click.argument("stage")
@click.option("-v", "--verbose", is_flag=True, help="Also print pytest's output (tracebacks).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
def grade(stage: str, verbose: bool, json_out: Path | None) -> None:
    """Run the graders of STAGE (e.g. 01) against your cluster and your code."""
    from minimesh.lab import runner

    st = _stage(stage)
    try:
        runner.grader_files(st)
    except runner.GraderNotFound as e:
        raise click.ClickException(str(e)) from e
    progress = {"total": 0, "done": 0}

    def on_event(ev: dict) -> None:
        if ev.get("event") == "collected":
            progress["total"] = ev["count"]
        elif ev.get("event") == "result":
            progress["done"] += 1
            if console.is_terminal:
                mark = "[green]✔[/]" if ev.get("outcome") == "passed" else "[red]✘[/]"
                console.print(f"  {mark} {escape(str(ev.get('check')))}  [dim]({progress['done']}/{progress['total']})[/]")

    with console.status(f"grading stage {st.id} ({st.title})…", spinner="dots"):
        result = runner.run(st, verbose=verbose, on_event=on_event)
    try:
        state.record(_root(), result.to_dict())
    except OSError as e:  # a read-only checkout loses the history, not the grade
        console.print(f"[yellow](could not remember this grade: {escape(str(e))})[/]")
    if json_out:
        json_out.write_text(json.dumps(result.to_dict(), indent=1))
    if verbose:
        console.print(result.output, markup=False)
    console.print(render_table(result))
    c = result.counts
    if result.passed:
        console.print(f"[green]stage {st.id} passes[/] ({c['passed']} check{'s' if c['passed'] != 1 else ''})")
    else:
        console.print(f"[red]stage {st.id} does not pass yet[/]: {c['failed']} of {len(result.checks)} checks fail")
    sys.exit(0 if result.passed else 1)


def render_table(result: GradeResult) -> Table:
    table = Table(title=f"stage {result.stage}", title_justify="left", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("want … got …, try …", overflow="fold")
    for c in result.checks:
        mark = {"passed": "[green]PASS[/]", "failed": "[red]FAIL[/]"}.get(c.outcome, "[yellow]SKIP[/]")
        table.add_row(escape(c.check), mark, escape(c.detail))
    return table


@lab.command()
@click.argument("stage")
def solve(stage: str) -> None:
    """Copy STAGE's solution into your exercise regions (your code is backed up first)."""
    st = _stage(stage)
    try:
        saved, changed = workspace.solve(_root(), st.id)
    except (workspace.WorkspaceError, ExerciseError) as e:
        raise click.ClickException(str(e)) from e
    if saved is None:
        console.print(f"lab {st.id}: your regions already hold the solution; nothing changed")
        return
    console.print(f"your lab {st.id} code is saved in {saved.relative_to(_root())}")
    for rel in changed:
        console.print(f"  solved {rel}")
    console.print(f"`minimesh lab reset {st.id}` brings your code back. Pods run the code they started with:"
                  " restart the affected pods to use it.")


@lab.command()
@click.argument("stage")
@click.option("--starter", is_flag=True, help="Restore the starter stubs instead of your backed-up code.")
def reset(stage: str, starter: bool) -> None:
    """Restore your own STAGE code from the latest `solve` backup (or the starter with --starter)."""
    st = _stage(stage)
    try:
        source, changed = workspace.reset(_root(), st.id, starter=starter)
    except (workspace.WorkspaceError, ExerciseError) as e:
        raise click.ClickException(str(e)) from e
    origin = "the starter" if source is None else str(source.relative_to(_root()))
    console.print(f"lab {st.id} regions restored from {origin}")
    for rel in changed:
        console.print(f"  reset {rel}")
    if not changed:
        console.print("  (nothing to change)")


@lab.command()
@click.argument("stage")
@click.option("--through", is_flag=True, help="Also replay every earlier stage first (catch up a new cluster).")
def setup(stage: str, through: bool) -> None:
    """Do to the cluster what STAGE's notebook does (apply its manifests, install its parts)."""
    st = _stage(stage)
    todo = [s for s in stages.STAGES if s.id <= st.id] if through else [st]
    for s in todo:
        for argv in s.setup:
            console.print(f"[bold]stage {s.id}[/]: minimesh {' '.join(argv)}")
            proc = subprocess.run([sys.executable, "-m", "minimesh", *argv], cwd=_root())
            if proc.returncode:
                raise click.ClickException(f"stage {s.id}: `minimesh {' '.join(argv)}` exited with {proc.returncode}")
        if not s.setup:
            console.print(f"stage {s.id}: nothing to set up")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_argv(labs: Path, port: int, token: str, notebook: str | None, browser: bool) -> list[str]:
    argv = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={labs}", f"--IdentityProvider.token={token}",
            "--allow-root"]
    if notebook:
        argv.append(f"--LabApp.default_url=/lab/tree/{notebook}")
    if not browser:
        argv.append("--no-browser")
    return argv


@lab.command("open")
@click.argument("stage", required=False)
@click.option("--port", type=int, default=0, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--browser/--no-browser", default=False, help="Also open a browser.")
def open_(stage: str | None, port: int, browser: bool) -> None:
    """Start JupyterLab on 127.0.0.1 in labs/, opening the first notebook (or STAGE's)."""
    labs = paths.LABS_DIR
    if not labs.is_dir():
        raise click.ClickException(f"{labs} does not exist")
    notebooks = sorted(p.name for p in labs.glob("[0-9][0-9]-*.ipynb"))
    notebook = _stage(stage).notebook if stage else (notebooks[0] if notebooks else None)
    if notebook and not (labs / notebook).exists():
        raise click.ClickException(f"{labs / notebook} does not exist (yet)")
    port = port or free_port()
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}/lab/tree/{notebook or ''}?token={token}"
    env = dict(os.environ)
    # Kernels inherit this: notebooks import the same minimesh tree as this command.
    env["PYTHONPATH"] = os.pathsep.join([str(paths.SOURCE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    console.print(f"JupyterLab on [bold]{url}[/]\n(token {token}; Ctrl-C stops it)", soft_wrap=True)
    proc = subprocess.Popen(jupyter_argv(labs, port, token, notebook, browser), env=env)
    try:
        sys.exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        sys.exit(130)
