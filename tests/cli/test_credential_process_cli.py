"""`rolesanywhere-hsm credential-process` as users and SDKs run it, stdout read as JSON: through the
console script's `main` in-process (tests.clirunner), and as botocore runs it (a process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from tests.clirunner import run_cli


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


def command(server: Emulator, files: Any, *extra: str) -> list[str]:
    args = [
        "credential-process",
        "--certificate", str(files.certificate), "--private-key", str(files.key),
        "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
        "--role-arn", server.role_arn, "--endpoint", server.url,
    ]
    if files.chain:
        args += ["--intermediates", str(files.chain)]
    return args + list(extra)


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAH_"))}
    environment.update(env)
    return run_cli(*args, env=environment)


def test_stdout_is_exactly_one_credential_process_object(server: Emulator, leaf_files: dict[str, Any]) -> None:
    result = run(command(server, leaf_files["p384"]))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    output = json.loads(result.stdout)  # one object, nothing else around it
    issued = server.last_issued
    assert output == {
        "Version": 1,
        "AccessKeyId": issued.access_key_id,
        "SecretAccessKey": issued.secret_access_key,
        "SessionToken": issued.session_token,
        "Expiration": output["Expiration"],
    }
    assert output["Expiration"].endswith("Z")


def test_botocore_reads_it_as_a_credential_process_profile(
    server: Emulator, leaf_files: dict[str, Any], tmp_path: Path
) -> None:
    import shlex

    import botocore.session

    config = tmp_path / "config"
    config.write_text(
        "[profile ra]\ncredential_process = "
        + shlex.join([sys.executable, "-m", "rolesanywhere_hsm", *command(server, leaf_files["rsa2048"])]) + "\n"
    )
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
    os.environ["AWS_CONFIG_FILE"] = str(config)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    try:
        credentials = botocore.session.Session(profile="ra").get_credentials().get_frozen_credentials()
    finally:
        for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            os.environ.pop(k, None)
        os.environ.update(saved)
    issued = server.last_issued
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        issued.access_key_id, issued.secret_access_key, issued.session_token,
    )


def _assert_clean_failure(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("rolesanywhere-hsm: ")
    assert text in result.stderr


def test_bad_arn_exits_2(server: Emulator, leaf_files: dict[str, Any]) -> None:
    args = command(server, leaf_files["p256"])
    args[args.index("--role-arn") + 1] = "arn:aws:iam::111122223333:user/bob"
    _assert_clean_failure(run(args), 2, "not an IAM role ARN")


def test_unreadable_certificate_exits_3(server: Emulator, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    args = command(server, leaf_files["p256"])
    args[args.index("--certificate") + 1] = str(tmp_path / "absent.crt")
    _assert_clean_failure(run(args), 3, "Cannot read the certificate file")


def test_untrusted_certificate_exits_6_with_the_service_message(
    server: Emulator, leaf_files: dict[str, Any], tmp_path: Path
) -> None:
    files = leaf_files["p256"]
    cert = write_pem(tmp_path / "u.crt", CertificateAuthority.create("Other CA").issue_leaf(files.private_key.public_key()))
    args = command(server, files)
    args[args.index("--certificate") + 1] = str(cert)
    result = run(args)
    _assert_clean_failure(result, 6, "AccessDeniedException: Untrusted signing certificate")
    assert "rolesanywhere-hsm doctor" in result.stderr  # the hint points at the checks


@pytest.mark.parametrize("days", [(-30, -1), (1, 30)], ids=["expired", "not-yet-valid"])
def test_a_certificate_outside_its_dates_is_refused_before_any_call(
    server: Emulator, leaf_files: dict[str, Any], root_ca: CertificateAuthority, tmp_path: Path,
    days: tuple[int, int],
) -> None:
    import datetime as dt

    files = leaf_files["p256"]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    cert = root_ca.issue_leaf(files.private_key.public_key(), "dated",
                              not_before=now + dt.timedelta(days=days[0]),
                              not_after=now + dt.timedelta(days=days[1]))
    args = command(server, files)
    args[args.index("--certificate") + 1] = str(write_pem(tmp_path / "dated.crt", cert))
    result = run(args)
    if days[1] < 0:
        _assert_clean_failure(result, 3, f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")
    else:
        _assert_clean_failure(result, 3, f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z")
    assert "Untrusted" not in result.stderr
    assert server.requests == []  # refused without a call to the service


def test_nothing_listening_exits_7(server: Emulator, leaf_files: dict[str, Any]) -> None:
    args = command(server, leaf_files["p256"])
    server.stop()
    _assert_clean_failure(run(args), 7, "Cannot connect")


def test_unknown_option_is_a_usage_error_exit_2(server: Emulator, leaf_files: dict[str, Any]) -> None:
    result = run(command(server, leaf_files["p256"], "--bogus"))
    assert result.returncode == 2 and result.stdout == ""
    assert "No such option: --bogus." in result.stderr


def test_debug_logs_steps_but_never_the_secrets(server: Emulator, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    files = leaf_files["p256"]
    from cryptography.hazmat.primitives import serialization

    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(files.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret-passphrase"),
    ))
    args = command(server, files, "--debug")
    args[args.index("--private-key") + 1] = str(encrypted)
    result = run(args, RAH_PKCS8_PASSWORD="s3cret-passphrase")
    assert result.returncode == 0, result.stderr
    issued = server.last_issued
    assert "canonical request" in result.stderr  # debug did log
    for secret in (issued.secret_access_key, issued.session_token, "s3cret-passphrase"):
        assert secret not in result.stderr


def test_debug_shows_the_traceback_of_a_failure(server: Emulator, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    args = command(server, leaf_files["p256"], "--debug")
    args[args.index("--certificate") + 1] = str(tmp_path / "absent.crt")
    result = run(args)
    assert result.returncode != 0 and result.stdout == ""
    assert "Traceback" in result.stderr and "CertificateError" in result.stderr


def test_missing_ca_bundle_is_a_usage_error(server: Emulator, leaf_files: dict[str, Any], tmp_path: Path) -> None:
    result = run(command(server, leaf_files["p256"], "--ca-bundle", str(tmp_path / "absent.pem")))
    _assert_clean_failure(result, 2, "Cannot read the CA bundle file")
