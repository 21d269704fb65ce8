"""The exercise scheme: parsing regions, generating starters, drift checks, malformed markers."""

from __future__ import annotations

import ast
import os
import textwrap
from pathlib import Path

import pytest

from minimesh.lab import exercises
from minimesh.lab.exercises import ExerciseError

REPO = Path(os.environ["MINIMESH_REPO"])

SOLUTION = textwrap.dedent('''\
    """A module."""

    import math

    TEXT = """
    # BEGIN SOLUTION lab-09
    not a marker: inside a string
    """


    def area(r: float) -> float:
        """Area of a circle."""
        # BEGIN SOLUTION lab-03
        # TODO: return the area of a circle of radius r,
        #   using math.pi.
        x = math.pi * r * r
        return x
        # END SOLUTION


    class Shapes:
        def scale(self, k: float) -> float:
            if k > 0:
                # BEGIN SOLUTION lab-03
                # TODO: scale "up" (k > 0).
                return k * 2
                # END SOLUTION
            return 0.0

        async def later(self) -> int:
            def inner() -> int:
                # BEGIN SOLUTION lab-04
                # TODO: answer.
                return 42
                # END SOLUTION

            return inner()
''')


def test_parse_finds_regions_with_qualified_functions() -> None:
    parsed = exercises.parse(SOLUTION, "m.py", "solution")
    got = [(r.lab, r.function, r.begin, r.end, r.indent) for r in parsed.regions]
    assert got == [
        ("03", "area", 13, 18, "    "),
        ("03", "Shapes.scale", 24, 27, "            "),
        ("04", "Shapes.later.inner", 32, 35, "            "),
    ]
    assert parsed.join() == SOLUTION
    assert parsed.regions[0].todo == ("    # TODO: return the area of a circle of radius r,\n", "    #   using math.pi.\n")


def test_starter_replaces_bodies_and_keeps_everything_else() -> None:
    starter = exercises.starter_text(SOLUTION, "m.py")
    ast.parse(starter)
    assert "math.pi * r * r" not in starter and "return 42" not in starter
    assert '    raise NotImplementedError("lab 03: area: return the area of a circle of radius r,")\n' in starter
    assert 'raise NotImplementedError("lab 03: scale: scale \\"up\\" (k > 0).")' in starter
    assert '"lab 04: inner: answer."' in starter
    assert "# BEGIN SOLUTION" not in starter.split('"""\n\n\n')[1]  # only the one inside the string is left
    assert starter.count("# BEGIN EXERCISE lab-03") == 2 and starter.count("# END EXERCISE") == 3
    # outside the regions the text is byte-identical
    sol_parts = exercises.parse(SOLUTION, "m.py", "solution").parts
    st_parts = exercises.parse(starter, "m.py", "exercise").parts
    assert [p for p in sol_parts if isinstance(p, str)] == [p for p in st_parts if isinstance(p, str)]


def test_starter_stub_raises_with_the_todo(tmp_path: Path) -> None:
    ns: dict = {}
    exec(compile(exercises.starter_text(SOLUTION, "m.py"), "m.py", "exec"), ns)
    with pytest.raises(NotImplementedError, match=r"^lab 03: area: return the area"):
        ns["area"](1.0)
    assert ns["Shapes"]().scale(-1) == 0.0  # code outside the region still runs


def test_crlf_files_stay_crlf() -> None:
    sol = SOLUTION.replace("\n", "\r\n")
    starter = exercises.starter_text(sol, "m.py")
    assert "\n" not in starter.replace("\r\n", "")
    assert exercises.parse(sol, "m.py", "solution").join() == sol


BAD = {
    "unclosed": ("def f():\n    # BEGIN SOLUTION lab-01\n    # TODO: x\n    return 1\n", "m.py:2: region lab-01 is never closed"),
    "nested": ("def f():\n    # BEGIN SOLUTION lab-01\n    # TODO: x\n    # BEGIN SOLUTION lab-01\n    return 1\n"
               "    # END SOLUTION\n", "m.py:4: nested region: the region opened at line 2"),
    "lab id mismatch": ("def f():\n    # BEGIN SOLUTION lab-01\n    # TODO: x\n    return 1\n    # END SOLUTION lab-02\n",
                        "m.py:5: lab id mismatch: END says 'lab-02'"),
    "bad lab id": ("def f():\n    # BEGIN SOLUTION lab-1\n    # TODO: x\n    return 1\n    # END SOLUTION\n",
                   "m.py:2: bad lab id 'lab-1'"),
    "outside a function": ("# BEGIN SOLUTION lab-01\n# TODO: x\nX = 1\n# END SOLUTION\n", "m.py:1: region outside a function body"),
    "in a class body": ("class C:\n    # BEGIN SOLUTION lab-01\n    # TODO: x\n    X = 1\n    # END SOLUTION\n",
                        "m.py:2: region outside a function body"),
    "spans two functions": ("def f():\n    # BEGIN SOLUTION lab-01\n    # TODO: x\n    return 1\n\n\ndef g():\n"
                            "    return 2\n    # END SOLUTION\n", "m.py:9: region opened at line 2 in f() ends outside"),
    "end without begin": ("def f():\n    return 1\n    # END SOLUTION\n", "m.py:3: '# END SOLUTION' without a matching BEGIN"),
    "no todo": ("def f():\n    # BEGIN SOLUTION lab-01\n    return 1\n    # END SOLUTION\n", "m.py:2: region in f() has no '# TODO:'"),
    "exercise marker in a solution": ("def f():\n    # BEGIN EXERCISE lab-01\n    # TODO: x\n    return 1\n    # END EXERCISE\n",
                                      "m.py:2: '# BEGIN EXERCISE' marker in a solution file"),
    "marker after code": ("def f():\n    x = 1  # BEGIN SOLUTION lab-01\n    return x\n", "m.py:2: a region marker must be on a line of its own"),
    "not python": ("def f(:\n", "m.py:1: not valid Python"),
    "bad indentation": ("def f():\n    if True:\n        # BEGIN SOLUTION lab-01\n    # TODO: x\n    # END SOLUTION\n        return 1\n",
                        "END marker indented at column 4"),
    "no regions": ("def f():\n    return 1\n", "m.py: no '# BEGIN SOLUTION lab-NN' region"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_regions_are_clear_errors(name: str) -> None:
    text, message = BAD[name]
    with pytest.raises(ExerciseError) as e:
        exercises.starter_text(text, "m.py")
    assert message in str(e.value)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_generate_then_check(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "solutions/minimesh/geo/shapes.py": SOLUTION,
        "minimesh/geo/other.py": "X = 1\n",
        "minimesh/geo/shapes.py": "stale\n",
    })
    assert exercises.check(root) == [
        "minimesh/geo/shapes.py:1: differs from the starter generated from solutions/minimesh/geo/shapes.py"
        " (edit solutions/, then run `python -m minimesh.lab.exercises generate`)"
    ]
    assert exercises.generate(root) == [Path("minimesh/geo/shapes.py")]
    assert exercises.check(root) == []
    assert exercises.generate(root) == []  # idempotent
    assert (root / "minimesh/geo/other.py").read_text() == "X = 1\n"


def test_check_reports_missing_starters_and_orphan_exercises(tmp_path: Path) -> None:
    starter = exercises.starter_text(SOLUTION, "x")
    root = _tree(tmp_path, {"solutions/minimesh/a.py": SOLUTION, "minimesh/b.py": starter})
    problems = exercises.check(root)
    assert problems[0].startswith("minimesh/a.py: missing")
    assert problems[1].startswith("minimesh/b.py:13: has exercise regions but no solutions/minimesh/b.py")


def test_check_rejects_non_python_solution_files(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"solutions/minimesh/x.yaml": "a: 1\n"})
    assert "exercise files must be Python modules" in exercises.check(root)[0]


def test_cli_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path, {"solutions/minimesh/a.py": SOLUTION})
    assert exercises.main(["check", "--root", str(root)]) == 1
    assert exercises.main(["generate", "--root", str(root)]) == 0
    assert exercises.main(["check", "--root", str(root)]) == 0
    (root / "solutions/minimesh/a.py").write_text("def f():\n    # BEGIN SOLUTION lab-01\n    # TODO: x\n    return 1\n")
    assert exercises.main(["generate", "--root", str(root)]) == 2
    assert "a.py:2: region lab-01 is never closed" in capsys.readouterr().err


def test_the_repository_starters_are_in_sync() -> None:
    """`minimesh/` must be exactly what `generate` makes from `solutions/`."""
    assert exercises.check(REPO) == []


def test_starter_tree_raises_where_the_solved_tree_works(tmp_path: Path) -> None:
    from minimesh.lab import trees

    starter = trees.build_starter_tree(REPO, tmp_path / "starter")
    regions = exercises.solution_regions(REPO)
    assert regions, "the kit has exercises"
    for r in regions:
        text = (starter / r.path).read_text()
        assert f'raise NotImplementedError("lab {r.lab}: {r.function.rsplit(".", 1)[-1]}:' in text
    assert (starter / "solutions").resolve() == (REPO / "solutions").resolve()
