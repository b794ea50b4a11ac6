"""`rolesanywhere-hsm update`: profiles written for botocore, concurrent writers, the refresh
loop (one login, one signature per refresh, through pkcs11-spy), failures and SIGTERM."""

from __future__ import annotations

import configparser
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.signers.test_pkcs11_spy import SPY, counts, parse_spy_log
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]

UNRELATED = (
    "# keys for the other accounts; do not touch\n"
    "[static]\n"
    "aws_access_key_id = AKIASTATIC\n"
    "aws_secret_access_key = static-secret\n"
    "\n"
    "; a comment between sections\n"
    "[other]   \n"
    "region=eu-west-1\n"
)


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


def credential_args(server: Emulator, certificate: str, *extra: str) -> list[str]:
    return [
        "update", "--certificate", certificate,
        "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
        "--role-arn", server.role_arn, "--endpoint", server.url, *extra,
    ]


def file_args(server: Emulator, files: Any, *extra: str) -> list[str]:
    args = credential_args(server, str(files.certificate), "--private-key", str(files.key), *extra)
    return args + (["--intermediates", str(files.chain)] if files.chain else [])


def environment(credentials_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(credentials_file), PYTHONPATH=str(ROOT), **extra)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """In-process (tests.clirunner): `--once` runs and errors."""
    return run_cli(*args, env=env, cwd=ROOT)


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """A real process: the loop (until SIGTERM) and concurrent writers."""
    return subprocess.Popen([sys.executable, "-m", "rolesanywhere_hsm", *args], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def read_profiles(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    assert parser.read(path) == [str(path)]
    return {name: dict(parser.items(name)) for name in parser.sections()}


def test_once_writes_a_profile_botocore_reads(server: Emulator, leaf_files: dict[str, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.session

    path = tmp_path / "credentials"
    path.write_text(UNRELATED)
    path.chmod(0o644)
    result = run(file_args(server, leaf_files["p256"], "--once", "--profile", "ra"), environment(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    issued = server.last_issued
    assert issued.secret_access_key not in result.stderr and issued.session_token not in result.stderr
    text = path.read_text()
    assert text.startswith(UNRELATED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    credentials = botocore.session.Session(profile="ra").get_credentials().get_frozen_credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        issued.access_key_id, issued.secret_access_key, issued.session_token)

    # Again: the same section is updated in place, nothing else moves.
    assert run(file_args(server, leaf_files["p256"], "--once", "--profile", "ra"), environment(path)).returncode == 0
    again = path.read_text()
    assert again.startswith(UNRELATED) and again.count("[ra]") == 1
    assert read_profiles(path)["ra"]["aws_access_key_id"] == server.last_issued.access_key_id


def test_default_profile_in_the_default_place(server: Emulator, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    env = environment(tmp_path / "unused")
    del env["AWS_SHARED_CREDENTIALS_FILE"]
    env["HOME"] = str(tmp_path / "home")
    result = run(file_args(server, leaf_files["p256"], "--once"), env)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "home" / ".aws" / "credentials"
    assert read_profiles(path)["default"]["aws_access_key_id"] == server.last_issued.access_key_id
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_fifty_concurrent_updaters_leave_a_valid_file(server: Emulator, leaf_files: dict[str, Any],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(UNRELATED)
    profiles = [f"p{i % 10}" for i in range(50)]  # 10 profiles, 5 writers each
    env = environment(path)
    procs = [start(file_args(server, leaf_files["p256"], "--once", "--profile", name), env) for name in profiles]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    written = read_profiles(path)
    issued = {i.access_key_id: i for i in server.issued}
    assert len(issued) == 50
    assert set(written) == {"static", "other", *profiles}
    for name in set(profiles):
        creds = written[name]
        match = issued[creds["aws_access_key_id"]]  # one of the sets really issued, whole
        assert (creds["aws_secret_access_key"], creds["aws_session_token"]) == (
            match.secret_access_key, match.session_token)
    assert path.read_text().startswith(UNRELATED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["credentials", "credentials.lock"]  # no temp files left


def test_bad_profile_name_and_duplicated_section_are_usage_errors(server: Emulator, leaf_files: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    result = run(file_args(server, leaf_files["p256"], "--once", "--profile", "a]b"), environment(path))
    assert result.returncode == 2 and "profile name" in result.stderr
    assert server.requests == [] and not path.exists()
    path.write_text("[default]\nx = 1\n[default]\ny = 2\n")
    result = run(file_args(server, leaf_files["p256"], "--once"), environment(path))
    assert result.returncode == 2 and "more than once" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_text() == "[default]\nx = 1\n[default]\ny = 2\n"


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return out, err


def test_loop_survives_refused_refreshes_and_keeps_the_old_values(
    server: Emulator, leaf_files: dict[str, Any], tmp_path: Path,
) -> None:
    server.config.credential_lifetime = 5
    path = tmp_path / "credentials"
    proc = start(file_args(server, leaf_files["p256"]), environment(path))
    try:
        wait_for(lambda: len(server.issued) == 1 and path.exists(), 30, "the first write")
        first = read_profiles(path)["default"]
        server.refuse_for(6)  # longer than one fetch with its three attempts
        wait_for(lambda: any(r.injected for r in server.requests), 10, "a refused refresh")
        assert read_profiles(path)["default"] == first  # kept while refreshes fail
        wait_for(lambda: len(server.issued) >= 2, 20, "a refresh after the outage")
        wait_for(lambda: read_profiles(path)["default"]["aws_access_key_id"] == server.issued[1].access_key_id
                 or len(server.issued) > 2, 10, "the new credentials in the file")
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "refresh failed" in err and "ServiceUnavailable" in err
    for issued in server.issued:
        assert issued.secret_access_key not in err and issued.session_token not in err


@pytest.mark.softhsm
def test_loop_with_a_token_one_login_and_one_signature_per_refresh(
    server: Emulator, softhsm_token: SoftHsmToken, intermediate_ca: CertificateAuthority, tmp_path: Path,
) -> None:
    """Done when of issue 8: over at least five refreshes of 5-second credentials, exactly one
    C_Login and one signature per CreateSession; SIGTERM ends it with 0 and a logout."""
    if not os.path.isfile(SPY):
        pytest.skip("OpenSC's pkcs11-spy.so is not installed")
    server.config.credential_lifetime = 5
    chain = write_pem(tmp_path / "intermediates.pem", intermediate_ca.certificate)
    path = tmp_path / "credentials"
    log = tmp_path / "spy.log"
    env = environment(path, **softhsm_token.env, RAH_PKCS11_MODULE=SPY, PKCS11SPY=softhsm_token.module,
                      PKCS11SPY_OUTPUT=str(log), RAH_PKCS11_PIN=SOFTHSM_PIN)
    args = credential_args(server, softhsm_token.uri_for("ec-p256", type="cert"), "--intermediates", str(chain))
    proc = start(args, env)
    try:
        wait_for(lambda: len(server.issued) >= 6 or proc.poll() is not None, 60, "six CreateSessions")
        assert proc.poll() is None
        wait_for(lambda: read_profiles(path)["default"]["aws_access_key_id"] == server.issued[-1].access_key_id,
                 10, "the last credentials in the file")
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert out == ""
    n = counts(parse_spy_log(log))
    assert n["C_Login"] == 1
    assert n["C_Sign(real)"] == len(server.issued) == len(server.requests)
    assert (n["C_Logout"], n["C_Finalize"]) == (1, 1)
    expirations = [i.expiration for i in server.issued]
    assert expirations == sorted(expirations)
    assert "stopped" in err


@pytest.mark.softhsm
def test_loop_with_a_wrong_pin_exits_5_after_one_try(
    server: Emulator, softhsm_token: SoftHsmToken, intermediate_ca: CertificateAuthority, tmp_path: Path,
) -> None:
    chain = write_pem(tmp_path / "intermediates.pem", intermediate_ca.certificate)
    path = tmp_path / "credentials"
    env = environment(path, **softhsm_token.env, RAH_PKCS11_MODULE=softhsm_token.module,
                      RAH_PKCS11_PIN="wrong-pin-1")
    result = run(credential_args(server, softhsm_token.uri_for("ec-p256", type="cert"),
                                 "--intermediates", str(chain)), env)
    assert result.returncode == 5, result.stderr
    assert "wrong-pin-1" not in result.stderr and "Traceback" not in result.stderr
    assert not path.exists() and server.requests == []
