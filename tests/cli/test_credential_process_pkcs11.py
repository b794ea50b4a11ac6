"""credential-process with keys on a real SoftHSM2 token, against the emulator, in-process (the\npkcs11-spy counts in a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, write_pem
from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.clirunner import run_cli, run_process
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.signers.test_pkcs11_spy import SENSITIVE, SPY, counts, parse_spy_log, signing_key_handles

pytestmark = pytest.mark.softhsm
ROOT = Path(__file__).parents[2]


@pytest.fixture
def server(root_ca: CertificateAuthority) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([root_ca.certificate])) as emulator:
        yield emulator


@pytest.fixture
def chain_file(intermediate_ca: CertificateAuthority, tmp_path: Path) -> Path:
    """The template token's leaves are issued by the intermediate: the chain comes from a file."""
    return write_pem(tmp_path / "intermediates.pem", intermediate_ca.certificate)


def cp_args(server: Emulator, certificate: str, chain: Path, *extra: str) -> list[str]:
    return ["credential-process", "--certificate", certificate, "--intermediates", str(chain),
            "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
            "--role-arn", server.role_arn, "--endpoint", server.url, *extra]


def run_cp(server: Emulator, certificate: str, env: dict[str, str], chain: Path,
           *extra: str) -> subprocess.CompletedProcess[str]:
    """In-process (tests.clirunner): no controlling terminal, the environment given."""
    return run_cli(*cp_args(server, certificate, chain, *extra), env=env)


def run_cp_process(server: Emulator, certificate: str, env: dict[str, str], chain: Path,
                   *extra: str) -> subprocess.CompletedProcess[str]:
    """A real process, for the pkcs11-spy counts: they count one process's calls from its
    C_Initialize, and the spy opens its log once per process."""
    return run_process(*cp_args(server, certificate, chain, *extra), env=env)


@pytest.mark.parametrize("label", ["ec-p256", "rsa-2048", "ec-p384", "ec-p521"])
def test_token_key_gets_credentials(
    label: str, server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], chain_file: Path
) -> None:
    result = run_cp(server, softhsm_token.uri_for(label, type="cert"), softhsm_env, chain_file)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["AccessKeyId"] == server.last_issued.access_key_id
    certificate = softhsm_token.keys[label].certificate
    assert server.last_issued.leaf_serial == certificate.serial_number
    assert server.last_request.header("X-Amz-X509-Chain")  # the intermediate travelled


def test_certificate_in_a_file_with_the_key_on_the_token(
    server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], chain_file: Path, tmp_path: Path
) -> None:
    cert = write_pem(tmp_path / "no-cert.crt", softhsm_token.keys["no-cert"].certificate)
    result = run_cp(server, str(cert), softhsm_env, chain_file,
                     "--private-key", softhsm_token.uri_for("no-cert", type="private"))
    assert result.returncode == 0, result.stderr
    assert server.last_issued.leaf_serial == softhsm_token.keys["no-cert"].certificate.serial_number


@pytest.fixture
def spy(softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment that puts OpenSC's pkcs11-spy between the CLI and SoftHSM, and its log."""
    if not os.path.isfile(SPY):
        pytest.skip("OpenSC's pkcs11-spy.so is not installed")
    log = tmp_path / "spy.log"
    env = dict(softhsm_env, RAH_PKCS11_MODULE=SPY, PKCS11SPY=softhsm_token.module, PKCS11SPY_OUTPUT=str(log))
    return env, log


def test_one_credential_costs_one_login_and_one_signature_through_pkcs11_spy(
    server: Emulator, softhsm_token: SoftHsmToken, spy: tuple[dict[str, str], Path], chain_file: Path
) -> None:
    env, log = spy
    result = run_cp_process(server, softhsm_token.uri_for("rsa-2048", type="cert"), env, chain_file)
    assert result.returncode == 0, result.stderr
    calls = parse_spy_log(log)
    n = counts(calls)
    # Sessions: a public one reads the certificate before the PIN, a logged-in one signs.
    assert (n["C_Initialize"], n["C_OpenSession"], n["C_Login"], n["C_Sign(real)"]) == (1, 2, 1, 1)
    assert n["C_WrapKey"] == 0 and n["C_CopyObject"] == 0
    keys = signing_key_handles(calls)
    for call in calls:
        if call.name == "C_GetAttributeValue" and any(f"hObject = {k}" in call.text for k in keys):
            requested = call.text.split("[out]")[0]
            assert not any(attribute in requested for attribute in SENSITIVE), call.text
    assert len(server.issued) == 1


def test_wrong_pin_exits_5_after_one_try_without_echoing_it(
    server: Emulator, softhsm_token: SoftHsmToken, spy: tuple[dict[str, str], Path], chain_file: Path
) -> None:
    env, log = spy
    env = dict(env, RAH_PKCS11_PIN="wrong-pin-4321")
    result = run_cp_process(server, softhsm_token.uri_for("ec-p256", type="cert"), env, chain_file)
    assert result.returncode == 5 and result.stdout == ""
    assert "refused the PIN" in result.stderr and "wrong-pin-4321" not in result.stderr
    assert "Traceback" not in result.stderr
    assert counts(parse_spy_log(log))["C_Login"] == 1
    assert server.requests == []


def test_no_pin_and_no_terminal_fails_fast(
    server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], chain_file: Path
) -> None:
    env = {k: v for k, v in softhsm_env.items() if k != "RAH_PKCS11_PIN"}
    start = time.monotonic()
    result = run_cp(server, softhsm_token.uri_for("ec-p256", type="cert"), env, chain_file)
    assert time.monotonic() - start < 15
    assert result.returncode == 5 and result.stdout == ""
    assert "terminal" in result.stderr


def test_ambiguous_label_is_refused_naming_what_matched(
    server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], chain_file: Path
) -> None:
    result = run_cp(server, softhsm_token.uri_for("dup", type="cert"), softhsm_env, chain_file)
    assert result.returncode == 4 and result.stdout == ""
    assert "dup" in result.stderr and "08" in result.stderr and "09" in result.stderr


def test_pin_value_in_the_uri_never_reaches_stderr(
    server: Emulator, softhsm_token: SoftHsmToken, softhsm_env: dict[str, str], chain_file: Path
) -> None:
    env = {k: v for k, v in softhsm_env.items() if k != "RAH_PKCS11_PIN"}
    uri = softhsm_token.uri_for("ec-p256", type="cert", pin=True)
    result = run_cp(server, uri, env, chain_file, "--debug")
    assert result.returncode == 0, result.stderr
    assert SOFTHSM_PIN not in result.stderr


def test_read_certificate_data_lists_token_certificates(softhsm_token: SoftHsmToken, softhsm_env: dict[str, str]) -> None:
    result = run_cli("read-certificate-data", "--certificate", softhsm_token.uri_for("dup", type="cert"),
                     env=softhsm_env)
    assert result.returncode == 0, result.stderr
    listed: list[dict[str, Any]] = json.loads(result.stdout)
    assert sorted(item["id"] for item in listed) == ["08", "09"]
    assert all(item["uri"].startswith("pkcs11:") for item in listed)


def test_sign_string_signs_on_the_token(softhsm_token: SoftHsmToken, softhsm_env: dict[str, str]) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from cryptography.hazmat.primitives import serialization

    from rolesanywhere_hsm.cli.certificate import sign_string_message

    result = run_cli("sign-string", "--format", "text", "--certificate",
                     softhsm_token.uri_for("ec-p384", type="cert"), env=softhsm_env)
    assert result.returncode == 0, result.stderr
    public = softhsm_token.keys["ec-p384"].certificate.public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    public.verify(bytes.fromhex(result.stdout), sign_string_message(spki), ec.ECDSA(hashes.SHA256()))
