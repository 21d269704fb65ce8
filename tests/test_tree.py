import os

import minimesh


def test_imports_come_from_the_solved_tree() -> None:
    assert minimesh.__file__.startswith(os.environ["MINIMESH_SOLVED_ROOT"])
