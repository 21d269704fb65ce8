"""Helpers for the lab notebooks: run minimesh commands, wait with progress bars, talk to pods, grade.

Everything goes through the `minimesh` CLI or the Kubernetes API of the current cluster
(MINIMESH_PROVIDER / MINIMESH_CLUSTER), so a notebook runs the same on local, kind and minikube.
`HEADLESS` is true when CI executes the notebooks (MINIMESH_HEADLESS=1): cells that only make sense in
JupyterLab (servers that run until interrupted, browsers) check it.
"""

from __future__ import annotations

import functools
import html
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from minimesh import paths
from minimesh.lab import grading

if TYPE_CHECKING:
    from minimesh.cluster.provider import Cluster, ExecResult
    from minimesh.lab.runner import GradeResult

T = TypeVar("T")
HEADLESS = os.environ.get("MINIMESH_HEADLESS") == "1"
MANIFESTS = paths.MANIFESTS


class CommandFailed(RuntimeError):
    pass


def _stream(argv: list[str], check: bool, timeout: float | None, quiet: bool) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(paths.SOURCE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("COLUMNS", "120")
    env["TERM"] = "dumb"  # colours render in a notebook, spinners and cursor moves do not
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=paths.SOURCE_ROOT)
    out: list[str] = []
    deadline = time.monotonic() + timeout if timeout else None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            out.append(line)
            if not quiet:
                print(line, end="", flush=True)
            if deadline and time.monotonic() > deadline:
                proc.kill()
                break
    except KeyboardInterrupt:
        # Interrupting the kernel (■) stops the command, e.g. a port-forward; no traceback for that.
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print("\n(stopped)")
        return "".join(out)
    rc = proc.wait()
    text = "".join(out)
    if check and rc != 0:
        tail = "".join(out[-20:]) if quiet else ""
        raise CommandFailed(f"`{' '.join(argv[2:] if argv[:2] == [sys.executable, '-m'] else argv)}`"
                            f" exited with {rc}\n{tail}")
    return text


def run(*args: str, check: bool = True, timeout: float | None = None, quiet: bool = False) -> str:
    """`minimesh ARGS...` as in a terminal: output streams into the cell; returns it."""
    return _stream([sys.executable, "-m", "minimesh", *args], check, timeout, quiet)


def sh(command: str, check: bool = True, timeout: float | None = None, quiet: bool = False) -> str:
    """A shell command on the host (from the checkout directory)."""
    return _stream(["bash", "-c", command], check, timeout, quiet)


def manifest(name: str) -> str:
    """Path of a manifest shipped with the kit, e.g. manifest("lab01/sidecar-pod.yaml")."""
    p = MANIFESTS / name
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; manifests: {sorted(str(x.relative_to(MANIFESTS)) for x in MANIFESTS.rglob('*.yaml'))}")
    return str(p)


def apply(*names: str) -> str:
    """`minimesh apply -f` for kit manifests (names relative to minimesh/manifests, or paths)."""
    files = [n if Path(n).is_absolute() else manifest(n) for n in names]
    return run("apply", *[a for f in files for a in ("-f", f)])


# ---- the cluster ---------------------------------------------------------------------------------


@functools.cache
def cluster() -> Cluster:
    from minimesh.cluster import provider

    return provider.current()


@functools.cache
def _api() -> Any:
    return cluster().api_client()


def core() -> Any:
    from kubernetes import client

    return client.CoreV1Api(_api())


def apps() -> Any:
    from kubernetes import client

    return client.AppsV1Api(_api())


def batch() -> Any:
    from kubernetes import client

    return client.BatchV1Api(_api())


def as_dict(obj: Any) -> Any:
    """An API object as the dict you would see in YAML (camelCase)."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def exec_in(pod: str, *argv: str, container: str | None = None, namespace: str = "default") -> ExecResult:
    """Run a command in a pod (`minimesh exec` from Python)."""
    return grading.exec_in(core(), pod, list(argv), namespace=namespace, container=container)


def http_from(pod: str, url: str, **kw: Any) -> grading.HttpResult:
    """curl `url` from inside `pod`."""
    return grading.http_from(core(), pod, url, **kw)


def pod_of(selector: str, namespace: str = "default") -> str:
    """Name of a ready pod with these labels, e.g. pod_of("app=sleep")."""
    return grading.pod_named_by(core(), selector, namespace)


# ---- waiting, with progress bars -----------------------------------------------------------------


def _bar(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]")


def wait_ready(
    selector: str | None = None,
    *,
    namespace: str = "default",
    count: int | None = None,
    timeout: float = 300,
) -> list[str]:
    """Wait until `count` pods (default: every matching pod, at least one) are Running and Ready."""
    desc = f"pods {selector or 'in ' + namespace} ready"
    bar = _bar(count or 1, desc)
    deadline = time.monotonic() + timeout
    try:
        while True:
            pods = core().list_namespaced_pod(namespace, label_selector=selector or "").items
            pods = [p for p in pods if not p.metadata.deletion_timestamp]
            ready = sorted(p.metadata.name for p in pods if grading.is_ready(p))
            want = count or max(1, len(pods))
            bar.total = want
            bar.n = min(len(ready), want)
            bar.refresh()
            if len(ready) >= want:
                return ready
            if time.monotonic() > deadline:
                waiting = {p.metadata.name: p.status.phase for p in pods if p.metadata.name not in ready}
                raise TimeoutError(f"after {timeout:g} s, not ready: {waiting or 'no pods yet'}"
                                   " (try `minimesh kubectl get pods` and `minimesh kubectl describe pod NAME`)")
            time.sleep(1)
    finally:
        bar.close()


def wait_until(fn: Callable[[], T], what: str, timeout: float = 120, interval: float = 1.0) -> T:
    """Poll `fn` (a check that raises until it holds) with a progress bar over the time allowed."""
    bar = _bar(int(timeout), what)
    start = time.monotonic()
    try:
        while True:
            try:
                result = fn()
                bar.n = bar.total
                bar.refresh()
                return result
            except grading.retryable():
                if time.monotonic() - start > timeout:
                    raise
            bar.n = min(int(time.monotonic() - start), bar.total)
            bar.refresh()
            time.sleep(interval)
    finally:
        bar.close()


# ---- grading -------------------------------------------------------------------------------------


def grade(stage: str) -> None:
    """Run the stage's graders (as `minimesh lab grade`) and show the result as a table.

    Returns nothing on purpose: the table is the cell's output (see `last_result` for the object).
    """
    global last_result
    from minimesh.lab import runner, stages, state

    st = stages.get(stage)
    bar = _bar(1, f"grading stage {st.id}")

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("event") == "collected":
            bar.total = max(1, ev["count"])
            bar.refresh()
        elif ev.get("event") == "result":
            bar.update(1)

    try:
        result = runner.run(st, on_event=on_event)
    finally:
        bar.close()
    try:
        state.record(paths.SOURCE_ROOT, result.to_dict())
    except OSError as e:  # a read-only checkout loses the history, not the grade
        print(f"(could not remember this grade: {e})")
    last_result = result
    show_result(result)


last_result: GradeResult | None = None


def result_text(result: GradeResult) -> str:
    lines = [f"stage {result.stage}: {'PASS' if result.passed else 'not passing yet'}"]
    for c in result.checks:
        mark = {"passed": "PASS", "failed": "FAIL"}.get(c.outcome, "SKIP")
        lines.append(f"  {mark}  {c.check}")
        if c.detail:
            lines.append(f"        {c.detail}")
    return "\n".join(lines)


def result_html(result: GradeResult) -> str:
    marks = {"passed": ("PASS", "#1a7f37"), "failed": ("FAIL", "#cf222e")}
    rows = []
    for c in result.checks:
        mark, colour = marks.get(c.outcome, ("SKIP", "#9a6700"))
        rows.append(f"<tr><td>{html.escape(c.check)}</td><td style='color:{colour};font-weight:bold'>{mark}</td>"
                    f"<td style='text-align:left'>{html.escape(c.detail)}</td></tr>")
    verdict = (f"<b style='color:#1a7f37'>stage {result.stage} passes</b>" if result.passed
               else f"<b style='color:#cf222e'>stage {result.stage} does not pass yet</b>")
    return (f"<div>{verdict}<table><thead><tr><th>check</th><th>result</th>"
            f"<th style='text-align:left'>want … got …, try …</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def show_result(result: GradeResult) -> None:
    """An ipywidgets table in JupyterLab; HTML and plain text wherever widgets cannot render."""
    text, page = result_text(result), result_html(result)
    try:
        import ipywidgets
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(text)
        return
    if get_ipython() is None:
        print(text)
        return
    widget = ipywidgets.HTML(value=page)
    bundle = widget._repr_mimebundle_() or {}
    bundle.update({"text/plain": text, "text/html": page})
    display(bundle, raw=True)

