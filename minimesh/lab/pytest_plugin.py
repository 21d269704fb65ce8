"""A pytest plugin that writes one JSON line per grader check (for `minimesh lab grade` and notebooks).

Loaded with `-p minimesh.lab.pytest_plugin`; the file comes from $MINIMESH_GRADE_REPORT. Lines:
`{"event": "collected", "count": N}` then `{"event": "result", ...}` per check, flushed as they finish so
a progress bar can follow, then `{"event": "done", "exitstatus": N}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any

import pytest

from minimesh.lab.grading import GradeFailure

REPORT_ENV = "MINIMESH_GRADE_REPORT"


def check_name(item: pytest.Item) -> str:
    """The check's name: its docstring's first line, else its function name made readable."""
    fn = getattr(item, "function", None)
    doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
    base = getattr(item, "originalname", None) or item.name
    name = doc[0].strip() if doc else base.removeprefix("test_").replace("_", " ")
    callspec = getattr(item, "callspec", None)
    return f"{name} [{callspec.id}]" if callspec else name


def explain(exc: BaseException) -> dict[str, str]:
    """want / got / hint for a failure: exact for GradeFailure, best effort for anything else."""
    if isinstance(exc, GradeFailure):
        return {"want": exc.want, "got": exc.got, "hint": exc.hint}
    if isinstance(exc, NotImplementedError):
        msg = str(exc)
        return {
            "want": "your implementation",
            "got": f"NotImplementedError: {msg}",
            "hint": "finish the exercise named in the message (see `minimesh lab status`), or `minimesh lab solve NN`",
        }
    text = f"{type(exc).__name__}: {exc}".strip()
    return {"want": "no error", "got": text[:500], "hint": "read the traceback with `minimesh lab grade NN -v`"}


class _Recorder:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole session

    def write(self, obj: dict[str, Any]) -> None:
        self.f.write(json.dumps(obj) + "\n")
        self.f.flush()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.write({"event": "collected", "count": len(session.items)})

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        rep: pytest.TestReport = outcome.get_result()
        record = None
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            record = {"event": "result", "nodeid": item.nodeid, "check": check_name(item),
                      "outcome": rep.outcome, "phase": rep.when, "duration": round(rep.duration, 3)}
            if rep.failed and call.excinfo is not None:
                record.update(explain(call.excinfo.value))
            if rep.skipped and isinstance(rep.longrepr, tuple):
                record["got"] = f"skipped: {rep.longrepr[2]}"
        elif rep.when == "teardown" and rep.failed and call.excinfo is not None:
            record = {"event": "result", "nodeid": item.nodeid, "check": check_name(item) + " (cleanup)",
                      "outcome": "failed", "phase": "teardown", "duration": round(rep.duration, 3),
                      **explain(call.excinfo.value)}
        if record:
            self.write(record)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.write({"event": "done", "exitstatus": int(exitstatus)})
        self.f.close()


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        config.pluginmanager.register(_Recorder(path), "minimesh-grade-recorder")
