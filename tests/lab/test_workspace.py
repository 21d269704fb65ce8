"""solve / reset touch only one stage's regions and give the trainee's code back byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minimesh.lab import exercises, workspace
from minimesh.lab.workspace import WorkspaceError

SOLUTION = '''\
import math


def area(r: float) -> float:
    """Area of a circle."""
    # BEGIN SOLUTION lab-03
    # TODO: return the area of a circle of radius r.
    return math.pi * r * r
    # END SOLUTION


def perimeter(r: float) -> float:
    # BEGIN SOLUTION lab-04
    # TODO: return the perimeter.
    return 2 * math.pi * r
    # END SOLUTION


def both(r: float) -> tuple[float, float]:
    # BEGIN SOLUTION lab-03
    # TODO: both at once.
    return area(r), perimeter(r)
    # END SOLUTION
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "solutions/minimesh").mkdir(parents=True)
    (tmp_path / "solutions/minimesh/geo.py").write_text(SOLUTION)
    (tmp_path / "minimesh").mkdir()
    exercises.generate(tmp_path)
    return tmp_path


def _edit_like_a_trainee(root: Path) -> str:
    """Half-done lab-03 work, a finished lab-04, and a helper of their own outside any region."""
    p = root / "minimesh/geo.py"
    text = p.read_text()
    text = text.replace(
        '    raise NotImplementedError("lab 03: area: return the area of a circle of radius r.")\n',
        "    # my attempt\n    return 3.14 * r ** 2  \t\n",
    )
    text = text.replace(
        '    raise NotImplementedError("lab 04: perimeter: return the perimeter.")\n', "    return 2 * 3.14159 * r\n"
    )
    text += "\n\ndef my_helper() -> int:  # mine\n    return 7\n"
    p.write_text(text)
    return text


def test_region_states_follow_the_trainees_edits(root: Path) -> None:
    states = {(s.lab, s.function): s.stub for s in workspace.region_states(root)}
    assert states == {("03", "area"): True, ("04", "perimeter"): True, ("03", "both"): True}
    _edit_like_a_trainee(root)
    states = {(s.lab, s.function): s.stub for s in workspace.region_states(root)}
    assert states == {("03", "area"): False, ("04", "perimeter"): False, ("03", "both"): True}


def test_solve_then_reset_round_trip(root: Path) -> None:
    mine = _edit_like_a_trainee(root)
    saved, changed = workspace.solve(root, "03")
    assert saved is not None and changed == [Path("minimesh/geo.py")]
    solved = (root / "minimesh/geo.py").read_text()
    assert "return math.pi * r * r" in solved and "return area(r), perimeter(r)" in solved
    assert "return 2 * 3.14159 * r" in solved, "lab 04 is not touched"
    assert "def my_helper() -> int:  # mine" in solved, "code outside regions is kept"
    assert "# BEGIN EXERCISE lab-03" in solved and "# BEGIN SOLUTION" not in solved
    regions = json.loads((saved / "regions.json").read_text())["regions"]
    assert [r["function"] for r in regions] == ["area", "both"]
    assert (saved / "files/minimesh/geo.py").read_text() == mine

    # Solving again changes nothing and makes no backup that would hide the trainee's code.
    assert workspace.solve(root, "03") == (None, [])

    source, changed = workspace.reset(root, "03")
    assert source == saved and changed == [Path("minimesh/geo.py")]
    assert (root / "minimesh/geo.py").read_text() == mine


def test_reset_to_starter_keeps_other_code(root: Path) -> None:
    _edit_like_a_trainee(root)
    source, _ = workspace.reset(root, "03", starter=True)
    assert source is None
    text = (root / "minimesh/geo.py").read_text()
    assert 'raise NotImplementedError("lab 03: area:' in text and "3.14 * r ** 2" not in text
    assert "return 2 * 3.14159 * r" in text and "def my_helper" in text
    # the trainee's code went to a before-reset backup, which `reset` itself never picks
    backups = sorted((root / workspace.BACKUPS).iterdir())
    assert [b.name.endswith(workspace.BEFORE_RESET) for b in backups] == [True]
    assert workspace.latest_backup(root, "03") is None


def test_reset_without_backup_says_what_to_do(root: Path) -> None:
    with pytest.raises(WorkspaceError, match=r"no backup of lab 03 yet .* --starter"):
        workspace.reset(root, "03")


def test_removed_markers_are_reported_and_nothing_is_written(root: Path) -> None:
    p = root / "minimesh/geo.py"
    text = p.read_text()
    broken = text.replace("    # BEGIN EXERCISE lab-03\n    # TODO: both at once.\n", "    # TODO: both at once.\n", 1)
    broken = broken.replace('    raise NotImplementedError("lab 03: both: both at once.")\n    # END EXERCISE\n',
                            "    return (1.0, 2.0)\n")
    p.write_text(broken)
    with pytest.raises(WorkspaceError, match=r"minimesh/geo.py: the lab-03 region in both\(\) is missing"):
        workspace.solve(root, "03")
    assert p.read_text() == broken
    assert not (root / workspace.BACKUPS).exists()


def test_unclosed_marker_is_reported_with_its_line(root: Path) -> None:
    p = root / "minimesh/geo.py"
    p.write_text(p.read_text().replace("    # END EXERCISE\n", "", 1))
    with pytest.raises(WorkspaceError, match=r"minimesh/geo.py:\d+: nested region"):
        workspace.solve(root, "03")


def test_unknown_lab(root: Path) -> None:
    with pytest.raises(WorkspaceError, match="lab 07 has no exercise regions"):
        workspace.solve(root, "07")
