"""The exercise scheme: solution regions in `solutions/`, generated starters in `minimesh/`.

A solution region is a part of a function body between comment markers::

    def select_route(config, request):
        \"\"\"docstring\"\"\"
        # BEGIN SOLUTION lab-03
        # TODO: pick the virtual host by Host header,
        #   then return the first route whose matchers all match.
        ...the real code...
        # END SOLUTION

and the starter keeps the TODO lines and raises instead of doing the work::

        # BEGIN EXERCISE lab-03
        # TODO: pick the virtual host by Host header,
        #   then return the first route whose matchers all match.
        raise NotImplementedError("lab 03: select_route: pick the virtual host by Host header,")
        # END EXERCISE

Everything outside regions is copied byte for byte. Markers are found with `tokenize` (so a marker-like
line inside a string is not a marker) and functions with `ast`, so the enclosing function is exact.

Deliberately stdlib-only and free of other minimesh imports: `trees.py` loads this file by path to build
the starter tree before `minimesh` is importable from the tree under test.

CLI: `python -m minimesh.lab.exercises generate|check|list [--root DIR]`.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["solution", "exercise"]

_BEGIN_RE = re.compile(r"#\s*BEGIN\s+(SOLUTION|EXERCISE)\b\s*(.*)$")
_END_RE = re.compile(r"#\s*END\s+(SOLUTION|EXERCISE)\b\s*(.*)$")
_LAB_RE = re.compile(r"^lab-(\d\d)$")
_TODO_START = re.compile(r"#\s*TODO:\s?(.*)$")
_TODO_CONT = re.compile(r"#\s{2,}\S")
_STUB_RE = re.compile(r'^\s*raise\s+NotImplementedError\(\s*["\']lab (\d\d):')


class ExerciseError(ValueError):
    """A malformed region or exercise file; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Region:
    """One exercise region of a file (`begin`/`end` are the 1-based marker lines)."""

    path: str
    kind: Kind
    lab: str  # "03"
    function: str  # qualified name, e.g. "Router.select" or "select_route"
    begin: int
    end: int
    indent: str
    newline: str
    body: tuple[str, ...]  # lines strictly between the markers, with their line endings

    @property
    def todo(self) -> tuple[str, ...]:
        """The leading `# TODO:` comment block (lines with endings)."""
        out: list[str] = []
        for line in self.body:
            s = line.strip()
            if _TODO_START.match(s) or (out and _TODO_CONT.match(s)):
                out.append(line)
            else:
                break
        return tuple(out)

    @property
    def is_stub(self) -> bool:
        """True while the region still raises the starter's NotImplementedError."""
        return any(_STUB_RE.match(line) for line in self.body)

    @property
    def key(self) -> tuple[str, int]:
        """(function, n): identifies the region across the solution and the trainee's copy."""
        return (self.function, self.ordinal)

    ordinal: int = 0  # index among regions of the same function


@dataclass
class ParsedFile:
    """A file split into verbatim text and regions; `join()` rebuilds it byte for byte."""

    path: str
    parts: list[str | Region] = field(default_factory=list)

    @property
    def regions(self) -> list[Region]:
        return [p for p in self.parts if isinstance(p, Region)]

    def join(self) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(begin_marker(part.kind, part.lab, part.indent, part.newline))
                out.extend(part.body)
                out.append(end_marker(part.kind, part.indent, part.newline))
        return "".join(out)


def begin_marker(kind: Kind, lab: str, indent: str, newline: str) -> str:
    return f"{indent}# BEGIN {kind.upper()} lab-{lab}{newline}"


def end_marker(kind: Kind, indent: str, newline: str) -> str:
    return f"{indent}# END {kind.upper()}{newline}"


# ---- parsing -----------------------------------------------------------------------------------


def _comments(text: str, path: str) -> Iterator[tuple[int, int, str]]:
    """(line, column, comment text) of every comment token."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                yield tok.start[0], tok.start[1], tok.string
    except (tokenize.TokenError, IndentationError, SyntaxError) as e:
        raise ExerciseError(f"{path}: cannot tokenize: {e}") from e


@dataclass(frozen=True)
class _Func:
    qualname: str
    col: int  # column of `def`
    first: int  # first line after `def` (comments before the first statement belong to the body)
    last: int  # last line of the body, including trailing comments indented inside it


def _functions(text: str, path: str, lines: Sequence[str]) -> list[_Func]:
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as e:
        raise ExerciseError(f"{path}:{e.lineno}: not valid Python: {e.msg}") from e
    found: list[_Func] = []

    def last_line(node: ast.AST, col: int) -> int:
        # Comments after the last statement (e.g. `# END SOLUTION`) still belong to the body while
        # they are indented deeper than the `def`.
        end = node.end_lineno or node.lineno
        n = end
        while n < len(lines):
            s = lines[n]
            if s.strip() and (len(s) - len(s.lstrip()) <= col or not s.lstrip().startswith("#")):
                break
            n += 1
            if s.strip():
                end = n
        return end

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                q = f"{prefix}{child.name}"
                found.append(_Func(q, child.col_offset, child.lineno + 1, last_line(child, child.col_offset)))
                visit(child, q + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _enclosing(funcs: list[_Func], line: int, col: int) -> _Func | None:
    """The innermost function whose body holds a comment at (line, col)."""
    best: _Func | None = None
    for f in funcs:
        if f.first <= line <= f.last and col > f.col and (best is None or f.col > best.col):
            best = f
    return best


def parse(text: str, path: str, kind: Kind) -> ParsedFile:
    """Split `text` into verbatim parts and `kind` regions, validating every marker."""
    lines = text.splitlines(keepends=True)
    funcs = _functions(text, path, lines)
    other: Kind = "exercise" if kind == "solution" else "solution"
    parsed = ParsedFile(path)
    open_: tuple[int, int, str, str, _Func] | None = None  # line, col, lab, indent, func
    cursor = 0  # index into lines of the first line not yet emitted
    per_func: dict[str, int] = {}
    for lineno, col, comment in _comments(text, path):
        b, e = _BEGIN_RE.match(comment), _END_RE.match(comment)
        if not (b or e):
            continue
        where = f"{path}:{lineno}"
        m = b or e
        assert m
        if m.group(1).lower() != kind:
            raise ExerciseError(
                f"{where}: '# {'BEGIN' if b else 'END'} {other.upper()}' marker in a {kind} file"
                f" (use '# {'BEGIN' if b else 'END'} {kind.upper()}')"
            )
        line = lines[lineno - 1]
        if line[:col].strip():
            raise ExerciseError(f"{where}: a region marker must be on a line of its own")
        if b:
            if open_:
                raise ExerciseError(
                    f"{where}: nested region: the region opened at line {open_[0]} is not closed yet"
                    f" (add '# END {kind.upper()}' before this line)"
                )
            lab = _LAB_RE.match(b.group(2).strip())
            if not lab:
                raise ExerciseError(f"{where}: bad lab id {b.group(2).strip()!r}; write 'lab-NN', e.g. lab-03")
            func = _enclosing(funcs, lineno, col)
            if func is None:
                raise ExerciseError(
                    f"{where}: region outside a function body; regions may only replace (part of) a function body"
                )
            open_ = (lineno, col, lab.group(1), line[:col], func)
        else:
            if not open_:
                raise ExerciseError(f"{where}: '# END {kind.upper()}' without a matching BEGIN")
            start, start_col, lab_id, indent, func = open_
            tail = e.group(2).strip()
            if tail and tail != f"lab-{lab_id}":
                raise ExerciseError(
                    f"{where}: lab id mismatch: END says {tail!r} but the region opened at line {start}"
                    f" is lab-{lab_id}"
                )
            if col != start_col:
                raise ExerciseError(
                    f"{where}: END marker indented at column {col}, BEGIN (line {start}) at column {start_col}"
                )
            if _enclosing(funcs, lineno, col) != func:
                raise ExerciseError(
                    f"{where}: region opened at line {start} in {func.qualname}() ends outside that function"
                )
            parsed.parts.append("".join(lines[cursor : start - 1]))
            n = per_func.get(func.qualname, 0)
            per_func[func.qualname] = n + 1
            begin_line = lines[start - 1]
            newline = begin_line[len(begin_line.rstrip("\r\n")) :] or "\n"
            region = Region(
                path=path,
                kind=kind,
                lab=lab_id,
                function=func.qualname,
                begin=start,
                end=lineno,
                indent=indent,
                newline=newline,
                body=tuple(lines[start:lineno - 1]),
                ordinal=n,
            )
            if kind == "solution" and not region.todo:
                raise ExerciseError(
                    f"{path}:{start}: region in {func.qualname}() has no '# TODO:' line; start the region"
                    " with '# TODO: <what to build>' (continued with '#   ...' lines)"
                )
            parsed.parts.append(region)
            cursor = lineno
            open_ = None
    if open_:
        raise ExerciseError(f"{path}:{open_[0]}: region lab-{open_[2]} is never closed (missing '# END {kind.upper()}')")
    parsed.parts.append("".join(lines[cursor:]))
    # Keep the parts list tidy: drop empty verbatim strings.
    parsed.parts = [p for p in parsed.parts if not (isinstance(p, str) and p == "")]
    return parsed


# ---- generating starters -----------------------------------------------------------------------


def _py_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stub_body(region: Region) -> tuple[str, ...]:
    """The starter's lines for a solution region: its TODO block and the NotImplementedError."""
    todo = region.todo
    first = _TODO_START.match(todo[0].strip())
    assert first
    msg = f"lab {region.lab}: {region.function.rsplit('.', 1)[-1]}: {first.group(1).strip()}"
    return (*todo, f"{region.indent}raise NotImplementedError({_py_string(msg)}){region.newline}")


def to_exercise(region: Region, body: Sequence[str] | None = None) -> Region:
    """The region as it appears in the starter (exercise markers), with `body` or the stub body."""
    return Region(
        path=region.path,
        kind="exercise",
        lab=region.lab,
        function=region.function,
        begin=region.begin,
        end=region.end,
        indent=region.indent,
        newline=region.newline,
        body=tuple(stub_body(region) if body is None else body),
        ordinal=region.ordinal,
    )


def starter_text(solution_text: str, path: str) -> str:
    """The starter file generated from a solution file (raises ExerciseError on malformed input)."""
    parsed = parse(solution_text, path, "solution")
    if not parsed.regions:
        raise ExerciseError(f"{path}: no '# BEGIN SOLUTION lab-NN' region; only files with exercises belong in solutions/")
    parsed.parts = [to_exercise(p) if isinstance(p, Region) else p for p in parsed.parts]
    out = parsed.join()
    try:
        ast.parse(out, filename=path)
    except SyntaxError as e:
        raise ExerciseError(
            f"{path}:{e.lineno}: the generated starter is not valid Python ({e.msg}); is the BEGIN marker"
            " indented like the statements of the region?"
        ) from e
    return out


# ---- the two trees -----------------------------------------------------------------------------


def solution_files(root: Path) -> list[Path]:
    """Paths (relative to `root/solutions`) of every solution file, e.g. `minimesh/k8s/resources.py`."""
    sol = root / "solutions"
    return sorted(p.relative_to(sol) for p in (sol / "minimesh").rglob("*") if p.is_file() and _keep(p))


def _keep(p: Path) -> bool:
    return "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts and p.suffix != ".pyc"


def _solution_starter(root: Path, rel: Path) -> str:
    if rel.suffix != ".py":
        raise ExerciseError(f"solutions/{rel}: exercise files must be Python modules (regions live in functions)")
    return starter_text((root / "solutions" / rel).read_text(), f"solutions/{rel}")


def generate(root: Path) -> list[Path]:
    """Rewrite every `minimesh/<path>` that has a solutions twin; return the files that changed."""
    changed: list[Path] = []
    for rel in solution_files(root):
        text = _solution_starter(root, rel)
        dest = root / rel
        if not dest.exists() or dest.read_text() != text:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            changed.append(rel)
    return changed


def check(root: Path) -> list[str]:
    """Drift between `minimesh/` and `solutions/`, one message per problem (empty: in sync)."""
    problems: list[str] = []
    twins = set(solution_files(root))
    for rel in sorted(twins):
        try:
            want = _solution_starter(root, rel)
        except ExerciseError as e:
            problems.append(str(e))
            continue
        dest = root / rel
        if not dest.exists():
            problems.append(f"{rel}: missing; it is generated from solutions/{rel}")
            continue
        got = dest.read_text()
        if got != want:
            line = _first_difference(got, want)
            problems.append(
                f"{rel}:{line}: differs from the starter generated from solutions/{rel}"
                " (edit solutions/, then run `python -m minimesh.lab.exercises generate`)"
            )
    for p in sorted((root / "minimesh").rglob("*.py")):
        rel = p.relative_to(root)
        if rel in twins or not _keep(p):
            continue
        text = p.read_text()
        if "BEGIN EXERCISE" in text or "BEGIN SOLUTION" in text:
            try:
                parsed = parse(text, str(rel), "exercise")
            except ExerciseError as e:
                problems.append(str(e))
                continue
            if parsed.regions:
                problems.append(f"{rel}:{parsed.regions[0].begin}: has exercise regions but no solutions/{rel}")
    return problems


def _first_difference(a: str, b: str) -> int:
    for n, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False), 1):
        if x != y:
            return n
    return min(len(a.splitlines()), len(b.splitlines())) + 1


def solution_regions(root: Path, lab: str | None = None) -> list[Region]:
    """Every solution region under `root/solutions` (optionally of one lab), path = `minimesh/...`."""
    out: list[Region] = []
    for rel in solution_files(root):
        if rel.suffix != ".py":
            continue
        parsed = parse((root / "solutions" / rel).read_text(), str(rel), "solution")
        out.extend(r for r in parsed.regions if lab is None or r.lab == lab)
    return out


def overlay_starters(root: Path, tree: Path) -> None:
    """Write the generated starter of every solution file into `tree` (a copy of `root/minimesh`'s parent)."""
    for rel in solution_files(root):
        dest = tree / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_solution_starter(root, rel))


# ---- CLI ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minimesh.lab.exercises", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["generate", "check", "list"])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2], help="the checkout")
    args = ap.parse_args(argv)
    root: Path = args.root.resolve()
    try:
        if args.command == "generate":
            for rel in generate(root):
                print(f"generated {rel}")
            return 0
        if args.command == "list":
            for r in solution_regions(root):
                print(f"lab-{r.lab}  {r.path}:{r.begin}  {r.function}")
            return 0
        problems = check(root)
    except ExerciseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"starters in sync with solutions ({len(solution_files(root))} files)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
