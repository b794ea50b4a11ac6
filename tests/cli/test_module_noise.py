"""A module's own stderr stays out of what an AWS SDK shows (issue 16 item 27).

On a machine where tpm2-pkcs11 is registered with p11-kit and there is no TPM, loading
p11-kit-proxy (the module used when none is named) makes tpm2-pkcs11 print a dozen and more
ERROR lines; credential-process must print only its own error, and show the module's lines
under --debug. The registration here is the user's own (a private HOME's
~/.config/pkcs11/modules), never the machine's: p11-kit reads user configuration only for a
non-root user, so the run happens in a user namespace as uid 1000 (mapped to the test's own
uid, so files read as before)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TPM2_PKCS11 = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
UUID = "11111111-2222-3333-4444-555555555555"
ARGS = ["credential-process", "--certificate", "pkcs11:token=absent-token",
        "--trust-anchor-arn", f"arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/{UUID}",
        "--profile-arn", f"arn:aws:rolesanywhere:eu-west-1:111122223333:profile/{UUID}",
        "--role-arn", "arn:aws:iam::111122223333:role/r", "--endpoint", "http://127.0.0.1:9"]


def _as_a_user(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT),
           "TPM2_PKCS11_TCTI": f"device:{home}/no-tpm"}  # no TPM behind it
    return subprocess.run(["unshare", "--user", "--map-user=1000", "--map-group=1000",
                           sys.executable, "-m", "rolesanywhere_hsm", *args],
                          capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def home_with_tpm2_registered(tmp_path: Path) -> Path:
    if not Path(TPM2_PKCS11).exists() or shutil.which("unshare") is None:
        pytest.skip("needs tpm2-pkcs11 and unshare")
    probe = subprocess.run(["unshare", "--user", "--map-user=1000", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode(errors='replace').strip()}")
    modules = tmp_path / ".config" / "pkcs11" / "modules"
    modules.mkdir(parents=True)
    (modules / "tpm2-no-tpm.module").write_text(f"module: {TPM2_PKCS11}\n")
    return tmp_path


def test_credential_process_shows_only_its_own_error(home_with_tpm2_registered: Path) -> None:
    # The module does speak (so the check below can fail): --debug shows its lines.
    debug = _as_a_user(home_with_tpm2_registered, *ARGS, "--debug")
    assert debug.returncode == 4, debug.stderr
    module_lines = [ln for ln in debug.stderr.splitlines() if not ln.startswith("rolesanywhere-hsm: ")
                    and ("ERROR" in ln or "WARNING" in ln)]
    assert len(module_lines) >= 2, debug.stderr

    result = _as_a_user(home_with_tpm2_registered, *ARGS)
    assert result.returncode == 4 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("rolesanywhere-hsm: ") and "token" in lines[0], result.stderr
    # one error line and, at most, its hint: nothing of the module's
    assert len(lines) <= 2, result.stderr
    assert not any("ERROR" in ln or "WARNING" in ln for ln in lines), result.stderr
