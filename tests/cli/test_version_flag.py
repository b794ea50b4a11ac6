"""`rolesanywhere-hsm --version` prints what `version` prints and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rolesanywhere_hsm import __version__

ROOT = Path(__file__).parents[2]


def test_version_flag_and_command_agree() -> None:
    for args in (["--version"], ["version"]):
        result = subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", *args], capture_output=True,
                                text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout == __version__ + "\n" and result.stderr == ""
