"""`rolesanywhere-hsm --version` prints what `version` prints and exits 0."""

from __future__ import annotations

from pathlib import Path

from rolesanywhere_hsm import __version__
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]


def test_version_flag_and_command_agree() -> None:
    for args in (["--version"], ["version"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == __version__ + "\n" and result.stderr == ""
