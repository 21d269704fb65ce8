"""Run a stage's graders with pytest in a subprocess and collect per-check results.

The subprocess imports the same `minimesh` as the caller (the trainee's tree), reads the graders from
`tests/graders/` with their own ini file (so the project's `tests/conftest.py`, which switches to the
solved tree, is never loaded), and reports through `minimesh.lab.pytest_plugin`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minimesh import paths
from minimesh.lab.pytest_plugin import REPORT_ENV
from minimesh.lab.stages import Stage

GRADING_ENV = "MINIMESH_GRADING"  # tests/graders/conftest.py collects graders only when this is set


@dataclass(frozen=True)
class CheckResult:
    check: str
    outcome: str  # passed | failed | skipped
    want: str = ""
    got: str = ""
    hint: str = ""
    nodeid: str = ""
    duration: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def detail(self) -> str:
        """'want …, got …, try …' for a failure; the skip reason for a skip; '' for a pass."""
        if self.outcome == "failed":
            s = f"want {self.want}, got {self.got}"
            return s + (f", try {self.hint}" if self.hint else "")
        return self.got if self.outcome == "skipped" else ""


@dataclass
class GradeResult:
    stage: str
    checks: list[CheckResult] = field(default_factory=list)
    exitstatus: int = -1
    output: str = ""  # pytest's own output, for -v and for errors
    finished_at: float = 0.0

    @property
    def passed(self) -> bool:
        return self.exitstatus == 0 and any(c.passed for c in self.checks)

    @property
    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "skipped": 0}
        for c in self.checks:
            out[c.outcome] = out.get(c.outcome, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "passed": self.passed, "exitstatus": self.exitstatus,
                "finished_at": self.finished_at, "counts": self.counts,
                "checks": [asdict(c) for c in self.checks]}


class GraderNotFound(FileNotFoundError):
    pass


def graders_dir(root: Path | None = None) -> Path:
    """$MINIMESH_GRADERS, else `tests/graders` of the imported tree, else of $MINIMESH_REPO."""
    candidates = [Path(os.environ["MINIMESH_GRADERS"])] if os.environ.get("MINIMESH_GRADERS") else []
    candidates.append((root or paths.SOURCE_ROOT) / "tests" / "graders")
    if os.environ.get("MINIMESH_REPO"):
        candidates.append(Path(os.environ["MINIMESH_REPO"]) / "tests" / "graders")
    for c in candidates:
        if (c / "grading.ini").exists():
            return c
    raise GraderNotFound(f"no graders found (looked in {', '.join(str(c) for c in candidates)})")


def grader_files(stage: Stage, root: Path | None = None) -> list[Path]:
    gdir = graders_dir(root)
    files = sorted(gdir.glob(stage.grader_glob))
    if not files:
        raise GraderNotFound(f"stage {stage.id} has no grader yet ({gdir}/{stage.grader_glob})")
    return files


def pytest_argv(stage: Stage, root: Path | None = None, verbose: bool = False) -> list[str]:
    gdir = graders_dir(root)
    return [sys.executable, "-m", "pytest", *map(str, grader_files(stage, root)),
            "-c", str(gdir / "grading.ini"), "--rootdir", str(gdir), "--confcutdir", str(gdir),
            "-p", "minimesh.lab.pytest_plugin", "-p", "pytest_timeout", "-p", "no:cacheprovider",
            "-v" if verbose else "-q", "--no-header", "-rN" if not verbose else "-rfE", "--color=no"]


def run(
    stage: Stage,
    *,
    root: Path | None = None,
    verbose: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> GradeResult:
    """Grade `stage`; `on_event` sees each JSON event (collected / result / done) as it happens."""
    argv = pytest_argv(stage, root, verbose)
    result = GradeResult(stage.id)
    with tempfile.TemporaryDirectory(prefix="minimesh-grade-") as tmp:
        report = Path(tmp) / "report.jsonl"
        report.touch()
        env = dict(os.environ)
        env.update(extra_env or {})
        env[REPORT_ENV] = str(report)
        env[GRADING_ENV] = "1"
        # Only the plugins graders use: auto-loading every installed plugin costs seconds per grade.
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        # The subprocess must import the very tree we were imported from.
        env["PYTHONPATH"] = os.pathsep.join([str(paths.SOURCE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        out_path = Path(tmp) / "output.txt"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
            seen = 0
            with open(report, encoding="utf-8") as rf:
                while True:
                    done = proc.poll() is not None
                    for line in rf.readlines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        seen += 1
                        if event.get("event") == "result":
                            result.checks.append(_check(event))
                        if on_event:
                            on_event(event)
                    if done:
                        break
                    time.sleep(0.1)
        result.exitstatus = proc.returncode
        result.output = out_path.read_text(errors="replace")
    if result.exitstatus not in (0, 1) or not result.checks:
        # Collection errors, a crashed plugin, no tests: still one readable failed check.
        tail = "\n".join(result.output.strip().splitlines()[-15:])
        broken = CheckResult("the grader runs", "failed", want="the grader module to load and run",
                             got=f"pytest exit status {result.exitstatus}: {tail}",
                             hint=f"minimesh lab grade {stage.id} -v")
        result.checks.append(broken)
        if on_event:
            on_event({"event": "result", **asdict(broken)})
        if result.exitstatus == 0:
            result.exitstatus = 1
    result.finished_at = time.time()
    return result


def _check(event: dict[str, Any]) -> CheckResult:
    return CheckResult(check=event.get("check", event.get("nodeid", "?")), outcome=event.get("outcome", "failed"),
                       want=event.get("want", ""), got=event.get("got", ""), hint=event.get("hint", ""),
                       nodeid=event.get("nodeid", ""), duration=float(event.get("duration", 0.0)))
