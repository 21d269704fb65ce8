"""`minimesh capture`: arguments are checked before anything touches the cluster."""

from __future__ import annotations

from click.testing import CliRunner

from minimesh.capture.cli import capture


def test_help_and_bad_arguments() -> None:
    runner = CliRunner()
    out = runner.invoke(capture, ["--help"])
    assert out.exit_code == 0 and "--seconds" in out.output and "--filter" in out.output
    bad = runner.invoke(capture, ["details-v1-x", "--seconds", "0"])
    assert bad.exit_code == 2 and "want a positive number of seconds" in bad.output
    missing = runner.invoke(capture, [])
    assert missing.exit_code == 2 and "POD" in missing.output
