"""`rolesanywhere-hsm emulator`: a real process that listens, reports its port, serves, and
stops on SIGTERM; and the one-line errors for bad options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm.cli import main
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import EmulatorConfig
from tests.clirunner import typer_command_kept
from tests.emulator.conftest import send
from tests.http.rawclient import listening_addresses
from tests.oracle import sign_create_session

REPO = Path(__file__).resolve().parents[2]


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        if process.poll() is not None:
            raise AssertionError(f"emulator exited early: {process.communicate()[1]}")
        time.sleep(0.05)
    raise AssertionError("emulator did not write its port file")


def test_cli_serves_until_sigterm(tmp_path: Path, root_ca: CertificateAuthority, p256_key: Any, leaf: Any) -> None:
    ca_file = write_pem(tmp_path / "ca.pem", root_ca.certificate)
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rolesanywhere_hsm", "emulator", "--ca", str(ca_file),
         "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        port = int(_wait_for(port_file, process))
        assert listening_addresses(port) == {"127.0.0.1"}  # loopback only by default
        # The default ARNs are a function of the CA, so the test can compute them.
        config = EmulatorConfig.for_certificates([root_ca.certificate])
        signed = sign_create_session(
            f"http://127.0.0.1:{port}", p256_key, leaf, region=config.region,
            trust_anchor_arn=config.trust_anchor_arn, profile_arn=config.profile_arn,
            role_arn=config.role_arn,
        )
        response = send(signed)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)

    assert response.status_code == 201, stderr
    assert process.returncode == 0, stderr
    assert f"listening on http://127.0.0.1:{port}" in stderr
    assert config.trust_anchor_arn in stderr and config.profile_arn in stderr
    assert "Traceback" not in stderr
    assert not port_file.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --ca FILE"),
        (["--ca", "/nonexistent/ca.pem"], "Cannot read the CA certificate file /nonexistent/ca.pem"),
        (["--config", "CONFIG", "--ca", "x.pem"], "--ca cannot be combined with --config"),
        (["--config", "CONFIG"], "not valid TOML"),
        (["--ca", "CA", "--session-duration-max", "60"], "--session-duration-max"),
        (["--ca", "CA", "--trust-anchor-arn", "nonsense"], "is not a trust-anchor ARN"),
        (["--ca", "CA", "--host", ""], "--host is empty"),
        (["--ca", "CA", "--max-records", "-1"], "--max-records cannot be negative"),
        (["--ca", "CA", "--tls-cert", "/nonexistent/server.pem"], "/nonexistent/server.pem"),
        (["--ca", "CA", "--tls-cert", "CA"], "cannot load the TLS certificate"),
    ],
)
def test_cli_bad_options_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, root_ca: CertificateAuthority,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "bad.toml").write_text("= nonsense")
    ca_file = write_pem(tmp_path / "ca.pem", root_ca.certificate)
    args = [str(tmp_path / "bad.toml") if a == "CONFIG" else str(ca_file) if a == "CA" else a for a in args]

    with pytest.raises(SystemExit) as exited, typer_command_kept():  # one typer build for the file
        main(["emulator", *args])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert 1 <= err.count("\n") <= 2 and "Traceback" not in err  # the message, maybe a hint


def test_cli_module_import_stays_cheap() -> None:
    # Loaded on its own, so that another command module's imports cannot fail this test.
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('cli_emulator', 'rolesanywhere_hsm/cli/emulator.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(any(m.startswith(('cryptography', 'http.server')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"
