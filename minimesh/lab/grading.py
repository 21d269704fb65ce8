"""Helpers for graders (tests/graders) and notebooks: checks that explain themselves, polling, and
running commands inside pods through the Kubernetes API (so they work on every provider).

A failed check raises `GradeFailure`, whose message reads "want …, got …; try …"; `minimesh lab grade`
shows those three parts in its table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

    from minimesh.cluster.provider import ExecResult

T = TypeVar("T")


class GradeFailure(AssertionError):
    """A check that did not hold: what was wanted, what was seen, and what to try."""

    def __init__(self, want: str, got: str, hint: str = "", *, final: bool = False) -> None:
        self.want, self.got, self.hint = want, got, hint
        self.final = final  # waiting will not change it (e.g. an object that was never created)
        super().__init__(f"want {want}, got {got}" + (f"; try {hint}" if hint else ""))


def fail(want: object, got: object, hint: str = "", *, final: bool = False) -> NoReturn:
    raise GradeFailure(_show(want), _show(got), hint, final=final)


def missing(what: str, hint: str) -> NoReturn:
    """`what` does not exist at all: fail at once instead of polling for it."""
    raise GradeFailure(what, "not found", hint, final=True)


def expect(got: T, want: T, hint: str = "", *, what: str = "") -> T:
    """Fail unless `got == want`; `what` names the value (e.g. "replicas of web")."""
    if got != want:
        prefix = f"{what} " if what else ""
        raise GradeFailure(prefix + _show(want), _show(got), hint)
    return got


def check(ok: object, *, want: str, got: object, hint: str = "") -> None:
    """Fail unless `ok` is truthy; for conditions that are not plain equality."""
    if not ok:
        raise GradeFailure(want, _show(got), hint)


def _show(value: object) -> str:
    if isinstance(value, str):
        s = value
    else:
        try:
            s = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            s = repr(value)
    return s if len(s) <= 300 else s[:297] + "..."


def retryable() -> tuple[type[BaseException], ...]:
    """Failures worth another try: failed checks, API and network errors."""
    kinds: list[type[BaseException]] = [AssertionError, OSError, TimeoutError]
    try:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kinds += [ApiException, HTTPError]
    except ImportError:  # pragma: no cover - kubernetes is a dependency
        pass
    return tuple(kinds)


def eventually(
    fn: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.5,
    retry_on: tuple[type[BaseException], ...] | None = None,
) -> T:
    """Call `fn` until it returns without raising (a failed check, an API or network error), at most
    `timeout` seconds; then re-raise its last failure, saying how long we waited. Final failures
    (`missing(...)`) and other exceptions (e.g. a NotImplementedError from an unfinished exercise)
    propagate at once."""
    retry_on = retry_on or retryable()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except retry_on as e:
            if getattr(e, "final", False):
                raise
            if time.monotonic() + interval > deadline:
                if isinstance(e, GradeFailure):
                    raise GradeFailure(e.want, f"{e.got} (still, after {timeout:g} s)", e.hint) from e
                raise
        time.sleep(interval)


# ---- commands inside pods ----------------------------------------------------------------------


def exec_in(
    core: CoreV1Api,
    pod: str,
    argv: list[str],
    *,
    namespace: str = "default",
    container: str | None = None,
    timeout: float = 30.0,
) -> ExecResult:
    """Run `argv` in a container of `pod` through the API's exec subresource (like `kubectl exec`)."""
    from minimesh.k8s.stream import exec_in_pod

    return exec_in_pod(core, namespace, pod, list(argv), container=container, timeout=timeout)


@dataclass(frozen=True)
class HttpResult:
    status: int  # 0 when no HTTP answer came back (see `error`)
    body: str
    error: str = ""

    def __str__(self) -> str:
        if not self.status:
            return f"no answer ({self.error.strip() or 'curl failed'})"
        body = self.body.strip().replace("\n", " ")
        return f"HTTP {self.status}: {body[:120]}{'…' if len(body) > 120 else ''}"


_MARK = "@@minimesh-status@@"


def curl_argv(url: str, *, method: str = "GET", headers: Iterable[str] = (), timeout: float = 10.0,
              path_as_is: bool = False) -> list[str]:
    """curl printing the body and then the status; `path_as_is` sends `/a/../b` as written (curl would
    resolve it itself, and the sidecar's path normalisation would never be seen)."""
    argv = ["curl", "-sS", *(["--path-as-is"] if path_as_is else []), "-m", f"{timeout:g}", "-X", method, "-o", "-",
            "-w", f"\n{_MARK}%{{http_code}}"]
    for h in headers:
        argv += ["-H", h]
    return [*argv, url]


def parse_curl(result: ExecResult) -> HttpResult:
    body, mark, code = result.stdout.rpartition(f"\n{_MARK}")
    if not mark:
        return HttpResult(0, result.stdout, result.stderr or f"curl exited with {result.returncode}")
    status = int(code.strip() or 0) if code.strip().isdigit() else 0
    return HttpResult(status, body, result.stderr if not status else "")


def http_from(
    core: CoreV1Api,
    pod: str,
    url: str,
    *,
    namespace: str = "default",
    container: str | None = None,
    method: str = "GET",
    headers: Iterable[str] = (),
    timeout: float = 10.0,
    path_as_is: bool = False,
) -> HttpResult:
    """An HTTP request made by curl inside `pod` (the pod's own network and, later, its sidecar)."""
    res = exec_in(core, pod, curl_argv(url, method=method, headers=headers, timeout=timeout, path_as_is=path_as_is),
                  namespace=namespace, container=container, timeout=timeout + 10)
    return parse_curl(res)


# ---- finding things ----------------------------------------------------------------------------


def ready_pods(core: CoreV1Api, selector: str, namespace: str = "default") -> list[Any]:
    """Running pods matching the label selector whose Ready condition is True (not terminating)."""
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [p for p in pods if is_ready(p)]


def is_ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp or not pod.status or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pod_named_by(core: CoreV1Api, selector: str, namespace: str = "default", timeout: float = 60.0) -> str:
    """Name of a ready pod matching `selector` (waits up to `timeout`)."""

    def one() -> str:
        pods = ready_pods(core, selector, namespace)
        check(pods, want=f"a ready pod with labels {selector} in namespace {namespace}",
              got="none", hint=f"kubectl get pods -n {namespace} -l {selector}")
        return sorted(p.metadata.name for p in pods)[0]

    return eventually(one, timeout=timeout)
