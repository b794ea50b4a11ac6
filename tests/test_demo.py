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
