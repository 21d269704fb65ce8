"""The trainee's progress: the last grade of each stage, kept in `<tree>/.minimesh/lab-state.json`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

Status = Literal["not started", "failing", "passing"]

STATE_FILE = "lab-state.json"


def state_path(root: Path) -> Path:
    return root / ".minimesh" / STATE_FILE


def load(root: Path) -> dict[str, Any]:
    path = state_path(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"stages": {}}
    except (OSError, ValueError):
        # A damaged state file only loses the history of grades; never block the trainee on it.
        return {"stages": {}}
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        return {"stages": {}}
    return data


def record(root: Path, grade: dict[str, Any]) -> None:
    """Remember `grade` (a GradeResult.to_dict()) as the stage's latest result; atomic replace."""
    data = load(root)
    data["stages"][grade["stage"]] = grade
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".lab-state.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def status_of(data: dict[str, Any], stage_id: str) -> Status:
    grade = data.get("stages", {}).get(stage_id)
    if not grade:
        return "not started"
    return "passing" if grade.get("passed") else "failing"
