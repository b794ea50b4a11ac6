"""A forward wall-clock jump in a real `update` and `serve` process (issue 16 item 2).

libfaketime (Debian's libfaketime, LD_PRELOAD, no root) moves the wall clock of the process
under test forward while its monotonic clock runs on untouched (FAKETIME_DONT_FAKE_MONOTONIC):
what an NTP step does, and what a suspend/resume looks like to a process. Before the fix the
refresh loop slept its monotonic wait (60..90 s here) and noticed nothing; now it wakes within
refresh.WAKE_INTERVAL and refreshes at once.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rolesanywhere_hsm.emulator import Emulator
from tests.cli.test_serve import Serve, server, start_serve  # noqa: F401  (fixtures)
from tests.cli.test_update import environment, file_args, read_profiles, start, stop, wait_for

ROOT = Path(__file__).parents[2]
FAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not FAKETIME, reason="needs libfaketime (apt-get install libfaketime)")]
JUMP = 100  # seconds: past the advisory and mandatory times of a 120-second set, short of its expiry


def faked(offset_file: Path) -> dict[str, str]:
    offset_file.write_text("+0\n")
    return {"LD_PRELOAD": FAKETIME[0], "FAKETIME_TIMESTAMP_FILE": str(offset_file),
            "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def test_update_refreshes_soon_after_a_forward_jump(server: Emulator, leaf_files: dict[str, Any],  # noqa: F811
                                                    tmp_path: Path) -> None:
    server.config.credential_lifetime = 120
    path, offset = tmp_path / "credentials", tmp_path / "offset"
    env = environment(path, **faked(offset))
    proc = start(file_args(server, leaf_files["p256"]), env)  # the loop, a real process
    try:
        wait_for(lambda: path.exists() or proc.poll() is not None, 60, "the first write")
        assert proc.poll() is None and len(server.issued) == 1
        time.sleep(1)
        offset.write_text(f"+{JUMP}\n")
        jumped = time.monotonic()
        wait_for(lambda: len(server.issued) >= 2, 15, "a refresh after the jump")
        assert time.monotonic() - jumped < 15  # the loop's own wait was 60..90 s
        wait_for(lambda: read_profiles(path)["default"]["aws_access_key_id"] == server.issued[1].access_key_id,
                 10, "the new set in the file")
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err


def test_serve_refreshes_soon_after_a_forward_jump(server: Emulator, start_serve: Callable[..., Serve],  # noqa: F811
                                                   softhsm_env: dict[str, str], tmp_path: Path) -> None:
    server.config.credential_lifetime = 120
    offset = tmp_path / "offset"
    running = start_serve(server, env={**softhsm_env, "PYTHONPATH": str(ROOT), **faked(offset)})
    assert len(server.issued) == 1
    offset.write_text(f"+{JUMP}\n")
    jumped = time.monotonic()
    wait_for(lambda: len(server.issued) >= 2, 15, "a refresh after the jump")
    assert time.monotonic() - jumped < 15
    wait_for(lambda: httpx.get(f"{running.url}/readyz").status_code == 200, 10, "ready")
    assert running.stop() == 0
