"""credential-process and sign-string with TPM key files (TSS2 PEM) on swtpm, against the
emulator, in-process through the console script's main without a terminal: what a user copying the official helper's
command line runs."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from rolesanywhere_hsm.cli.certificate import sign_string_message
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from tests.tokens.tpmkey import TpmKeyFile, TpmWithKeyFiles
from tests.clirunner import run_cli

pytestmark = pytest.mark.tpmkey

ROOT = Path(__file__).parents[2]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, cwd=ROOT)


def credential_process(server: Emulator, env: dict[str, str], key: TpmKeyFile, *args: str,
                       certificate: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run(
        env, "credential-process", "--certificate", str(certificate or key.certificate_path),
        "--private-key", str(key.path), *args,
        "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
        "--role-arn", server.role_arn, "--endpoint", server.url,
    )


@pytest.fixture
def server(tpm_key_files: TpmWithKeyFiles) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([tpm_key_files.ca.certificate])) as emulator:
        yield emulator


@pytest.mark.parametrize(("name", "args"), [
    ("rsa", ()),
    ("ec", ("--tpm-key-password", "ec-pass")),
    ("ossl-rsa", ("--no-tpm-key-password",)),
    ("ossl-ec", ("--tpm-key-password", "ossl-pass")),
])
def test_tpm_key_file_gets_credentials(tpmkeys: TpmWithKeyFiles, server: Emulator, name: str,
                                       args: tuple[str, ...]) -> None:
    key = tpmkeys.keys[name]
    result = credential_process(server, tpmkeys.subprocess_env(), key, *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["AccessKeyId"] == server.last_issued.access_key_id
    assert server.last_issued.leaf_serial == key.certificate.serial_number
    assert result.stderr == ""  # the TSS's own error log stays quiet
    assert tpmkeys.transient_handles() == []


def test_password_from_the_environment(tpmkeys: TpmWithKeyFiles, server: Emulator) -> None:
    key = tpmkeys.keys["ec-da"]
    result = credential_process(server, tpmkeys.subprocess_env(RAH_TPM_KEY_PASSWORD="da-pass"), key)
    assert result.returncode == 0, result.stderr
    assert server.last_issued.leaf_serial == key.certificate.serial_number


def test_wrong_password_is_tried_once(tpmkeys: TpmWithKeyFiles, server: Emulator) -> None:
    key = tpmkeys.keys["ec-da"]
    before = tpmkeys.lockout_counter()
    result = credential_process(server, tpmkeys.subprocess_env(), key, "--tpm-key-password", "not-the-password")
    assert result.returncode == 5 and result.stdout == ""
    assert "refused the password" in result.stderr and "tried once" in result.stderr
    assert "not-the-password" not in result.stderr
    assert "Traceback" not in result.stderr
    assert tpmkeys.lockout_counter() == before + 1  # the TPM counted exactly one failure
    assert server.requests == []
    result = credential_process(server, tpmkeys.subprocess_env(), key, "--tpm-key-password", "da-pass")
    assert result.returncode == 0, result.stderr


def test_password_needed_without_a_terminal_fails_at_once(tpmkeys: TpmWithKeyFiles, server: Emulator) -> None:
    before = tpmkeys.lockout_counter()
    started = time.monotonic()
    result = credential_process(server, tpmkeys.subprocess_env(), tpmkeys.keys["ec-da"])
    assert result.returncode == 5, result.stderr
    assert "no terminal" in result.stderr
    # the fix names the option and the variable, not "its password option (see --help)"
    assert "--tpm-key-password" in result.stderr and "RAH_TPM_KEY_PASSWORD" in result.stderr, result.stderr
    assert time.monotonic() - started < 30
    assert tpmkeys.lockout_counter() == before  # nothing was sent to the TPM
    assert server.requests == []


def test_mismatched_certificate_is_refused(tpmkeys: TpmWithKeyFiles, server: Emulator) -> None:
    result = credential_process(server, tpmkeys.subprocess_env(), tpmkeys.keys["rsa"],
                                certificate=tpmkeys.keys["ec"].certificate_path)
    assert result.returncode == 3, result.stderr
    assert "does not belong to the certificate" in result.stderr
    assert server.requests == []


def test_both_password_flags_are_a_usage_error(tpmkeys: TpmWithKeyFiles, server: Emulator) -> None:
    result = credential_process(server, tpmkeys.subprocess_env(), tpmkeys.keys["ec"],
                                "--tpm-key-password", "ec-pass", "--no-tpm-key-password")
    assert result.returncode == 2 and "contradict" in result.stderr
    assert "ec-pass" not in result.stderr


def test_unreachable_tpm_is_a_token_error(tpmkeys: TpmWithKeyFiles, server: Emulator, tmp_path: Path) -> None:
    env = tpmkeys.subprocess_env(RAH_TPM_TCTI=f"swtpm:path={tmp_path}/gone.sock")
    result = credential_process(server, env, tpmkeys.keys["rsa"])
    assert result.returncode == 4
    assert "Cannot open the TPM through TCTI" in result.stderr and "RAH_TPM_TCTI" in result.stderr


@pytest.mark.parametrize(("name", "password"), [("rsa", None), ("ossl-ec", "ossl-pass")])
def test_sign_string_with_a_tpm_key_file(tpmkeys: TpmWithKeyFiles, name: str, password: str | None) -> None:
    key = tpmkeys.keys[name]
    args = ["--tpm-key-password", password] if password else []
    result = run(tpmkeys.subprocess_env(), "sign-string", "--certificate", str(key.certificate_path),
                     "--private-key", str(key.path), *args)
    assert result.returncode == 0, result.stderr
    signature = bytes.fromhex(json.loads(result.stdout))  # the official helper's format
    public = key.certificate.public_key()
    message = sign_string_message(public.public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
