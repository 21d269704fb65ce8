"""The trainee's exercise regions: which are still stubs, and `solve` / `reset` with backups.

Only the bodies of one stage's regions are ever rewritten; everything else in a file (other stages'
regions, the trainee's own helpers, comments) is kept byte for byte. `solve NN` first saves the
trainee's bodies to `.minimesh/backups/labNN-<timestamp>/`, so `reset NN` brings them back exactly.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from minimesh.lab import exercises
from minimesh.lab.exercises import ExerciseError, Kind, ParsedFile, Region

BACKUPS = Path(".minimesh") / "backups"
BEFORE_RESET = "-before-reset"


class WorkspaceError(ValueError):
    """Something in the trainee's files prevents solve/reset; the message says which file and what."""


def detect_kind(text: str) -> Kind:
    """Exercise markers (a trainee's tree) or solution markers (the solved tree)."""
    return "solution" if "# BEGIN SOLUTION" in text and "# BEGIN EXERCISE" not in text else "exercise"


def parse_tree_file(root: Path, rel: Path) -> ParsedFile:
    path = root / rel
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise WorkspaceError(f"{rel}: missing (it holds exercises; `minimesh lab reset NN --starter` rebuilds regions only)") from e
    return exercises.parse(text, str(rel), detect_kind(text))


@dataclass(frozen=True)
class RegionState:
    lab: str
    path: str
    line: int
    function: str
    stub: bool


def region_states(root: Path) -> list[RegionState]:
    """Every exercise region of the tree at `root` and whether it is still the starter's stub."""
    out: list[RegionState] = []
    for rel in exercises.solution_files(root):
        if rel.suffix != ".py" or not (root / rel).exists():
            continue
        for r in parse_tree_file(root, rel).regions:
            out.append(RegionState(r.lab, str(rel), r.begin, r.function, r.is_stub))
    return out


# ---- solve / reset -----------------------------------------------------------------------------


def _stage_files(root: Path, lab: str) -> dict[Path, list[Region]]:
    """Solution regions of `lab`, grouped by the file (relative to root) they belong to."""
    files: dict[Path, list[Region]] = {}
    for r in exercises.solution_regions(root, lab):
        files.setdefault(Path(r.path), []).append(r)
    if not files:
        raise WorkspaceError(f"lab {lab} has no exercise regions in {root / 'solutions'}")
    return files


def _replace(parsed: ParsedFile, lab: str, bodies: dict[tuple[str, int], Sequence[str]]) -> str:
    """`parsed` with the bodies of its lab-`lab` regions replaced (keys: Region.key)."""
    seen = set()
    parts: list[str | Region] = []
    for p in parsed.parts:
        if isinstance(p, Region) and p.lab == lab and p.key in bodies:
            seen.add(p.key)
            p = dataclasses.replace(p, body=tuple(bodies[p.key]))
        parts.append(p)
    missing = set(bodies) - seen
    if missing:
        fn, _ = sorted(missing)[0]
        raise WorkspaceError(
            f"{parsed.path}: the lab-{lab} region in {fn}() is missing; keep the '# BEGIN EXERCISE lab-{lab}'"
            f" / '# END EXERCISE' lines around your code (or restore the file from git)"
        )
    return ParsedFile(parsed.path, parts).join()


def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def backup(root: Path, lab: str, suffix: str = "") -> Path:
    """Save the current bodies of lab `lab`'s regions (and full copies of their files, for humans)."""
    dest = root / BACKUPS / f"lab{lab}-{_timestamp()}{suffix}"
    records = []
    for rel in _stage_files(root, lab):
        parsed = parse_tree_file(root, rel)
        for r in parsed.regions:
            if r.lab == lab:
                records.append({"path": str(rel), "function": r.function, "ordinal": r.ordinal, "body": list(r.body)})
        copy = dest / "files" / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, copy)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "regions.json").write_text(json.dumps({"lab": lab, "regions": records}, indent=1))
    return dest


def latest_backup(root: Path, lab: str) -> Path | None:
    candidates = sorted(
        p for p in (root / BACKUPS).glob(f"lab{lab}-*")
        if (p / "regions.json").exists() and not p.name.endswith(BEFORE_RESET)
    )
    return candidates[-1] if candidates else None


def _write_bodies(root: Path, lab: str, bodies: dict[Path, dict[tuple[str, int], Sequence[str]]]) -> list[Path]:
    # Build every new text first: a problem in one file must not leave the stage half rewritten.
    new: dict[Path, str] = {}
    for rel, per_region in bodies.items():
        parsed = parse_tree_file(root, rel)
        new[rel] = _replace(parsed, lab, per_region)
    changed = []
    for rel, text in new.items():
        if (root / rel).read_text() != text:
            (root / rel).write_text(text)
            changed.append(rel)
    return changed


def solve(root: Path, lab: str) -> tuple[Path | None, list[Path]]:
    """Put the solution into lab `lab`'s regions; returns (backup dir, files changed).

    Nothing is backed up when the regions already hold the solution, so solving twice never buries the
    trainee's own code under a backup of the solution.
    """
    files = _stage_files(root, lab)
    bodies = {rel: {r.key: r.body for r in regions} for rel, regions in files.items()}
    _check_structure(root, lab, bodies)
    if all(_current_bodies(root, rel, lab) == per for rel, per in bodies.items()):
        return None, []
    saved = backup(root, lab)
    return saved, _write_bodies(root, lab, bodies)


def _current_bodies(root: Path, rel: Path, lab: str) -> dict[tuple[str, int], tuple[str, ...]]:
    return {r.key: r.body for r in parse_tree_file(root, rel).regions if r.lab == lab}


def reset(root: Path, lab: str, starter: bool = False) -> tuple[Path | None, list[Path]]:
    """Restore lab `lab`'s regions from the latest `solve` backup (or the starter stubs).

    The current bodies are saved first to a `...-before-reset` backup, which `reset` itself never picks.
    Returns (the backup restored from, or None for --starter; files changed).
    """
    files = _stage_files(root, lab)
    source: Path | None = None
    if starter:
        bodies = {rel: {r.key: exercises.stub_body(r) for r in regions} for rel, regions in files.items()}
    else:
        source = latest_backup(root, lab)
        if source is None:
            raise WorkspaceError(
                f"no backup of lab {lab} yet (backups are made by `minimesh lab solve {lab}`);"
                f" use `minimesh lab reset {lab} --starter` for the starter code"
            )
        saved = json.loads((source / "regions.json").read_text())
        bodies = {}
        for rec in saved["regions"]:
            bodies.setdefault(Path(rec["path"]), {})[(rec["function"], rec["ordinal"])] = rec["body"]
    _check_structure(root, lab, bodies)
    backup(root, lab, BEFORE_RESET)
    return source, _write_bodies(root, lab, bodies)


def _check_structure(root: Path, lab: str, bodies: dict[Path, dict[tuple[str, int], Sequence[str]]]) -> None:
    for rel, per_region in bodies.items():
        try:
            parsed = parse_tree_file(root, rel)
        except ExerciseError as e:
            raise WorkspaceError(f"{e} — fix the markers in your file first") from e
        _replace(parsed, lab, per_region)  # raises WorkspaceError naming a missing region
