"""The README's main command: `rolesanywhere-hsm demo` runs the whole path on a SoftHSM token."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.softhsm
def test_demo_gets_credentials_with_a_key_on_a_softhsm_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_", "SOFTHSM2_"))}
    result = subprocess.run(
        [sys.executable, "-m", "rolesanywhere_hsm", "demo", "--keep", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180, env=env, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    printed, _ = json.JSONDecoder().raw_decode(out[out.index("{\n"):])
    assert printed["Version"] == 1 and printed["AccessKeyId"].startswith("ASIA")
    assert "AWS4-X509-ECDSA-SHA256 signature" in out
    # The PIN went through a 0600 file, never through argv or the output.
    pin_file = tmp_path / "demo" / "pin.txt"
    assert oct(pin_file.stat().st_mode & 0o777) == "0o600"
    pin = pin_file.read_text().strip()
    assert pin not in out and pin not in result.stderr
    assert re.search(r"pkcs11:token=rolesanywhere-demo;object=workload;type=cert", out)


@pytest.mark.softhsm
def test_demo_keep_prints_lines_that_reuse_what_it_kept(tmp_path: Path) -> None:
    """The printed lines, run in a shell as they are, start an emulator on the kept CA and get
    credentials with the kept token and PIN file."""
    import shutil
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_", "SOFTHSM2_"))}
    kept = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", "demo", "--keep", str(kept)],
                            capture_output=True, text=True, timeout=180, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = out[out.index("To use them again"):].splitlines()[1:]
    assert lines[0].startswith("  export SOFTHSM2_CONF=") and "emulator --ca" in lines[1]
    assert lines[2].startswith("  rolesanywhere-hsm credential-process --certificate")
    # Run them: `rolesanywhere-hsm` is this checkout's, through a shim on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "rolesanywhere-hsm"
    shim.write_text(f'#!/bin/sh\nexec {shutil.which(sys.executable) or sys.executable} -m rolesanywhere_hsm "$@"\n')
    shim.chmod(0o755)
    export, start, call = (line.strip() for line in lines[:3])
    emulator = subprocess.Popen(["sh", "-c", f"{export}\nexec {start.removesuffix('&').strip()}"],
                                env={**env, "PATH": f"{bin_dir}:{env['PATH']}"}, cwd=Path(__file__).parents[1],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (kept / "emulator.port").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        got = subprocess.run(["sh", "-c", f"{export}\n{call}"], capture_output=True, text=True, timeout=120,
                             env={**env, "PATH": f"{bin_dir}:{env['PATH']}"}, cwd=Path(__file__).parents[1],
                             stdin=subprocess.DEVNULL, start_new_session=True)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["AccessKeyId"].startswith("ASIA")
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def test_demo_keep_naming_a_file_is_a_usage_error(tmp_path: Path) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    for where in (taken, taken / "demo"):  # the file itself, or a directory under it
        result = subprocess.run([sys.executable, "-m", "rolesanywhere_hsm", "demo", "--keep", str(where)],
                                capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, result.stderr
        assert result.stdout == "" and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"rolesanywhere-hsm: Cannot create the directory {where} for --keep")
    assert taken.read_text() == "mine\n"
