"""One PIN try per process lifetime, for the long-running front ends: `serve`, `update` (loop
mode) and the boto3 provider, on the software TPM (its dictionary-attack lockout counter) and
the virtual PIV card (its own count of VERIFY commands and tries left).

Two ways a wrong PIN reaches them:

- at start (every PIN path: pin-value, pin-source file/env/cmd, RAH_PKCS11_PIN, the prompt):
  the process exits 5 having presented it once, before any request to the service;
- mid-life: the PIN was right at start, then changed on the card; the card later refuses a
  signature (6982, as a card that dropped its security status does), the session layer
  reopens the token once and presents the remembered PIN, now wrong, once. On the TPM: the
  PIN file is rewritten with a wrong PIN and the TPM's loaded objects are flushed (as after a
  TPM reset), so the next signature fails and the reopen reads the wrong PIN. From then on it
  never presents it again: `update` exits 5, `serve` keeps answering from the credentials it
  holds until they expire and then answers 503, however many refresh cycles pass.

Credentials from the emulator live a few seconds (`credential_lifetime`), and every wait is
bounded.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from rolesanywhere_hsm.errors import PinIncorrectError
from tests.tokens.test_pin_lockout import (
    PATHS,
    WRONG,
    _cli_args,
    _paths,
    _with_query,
    run_cli,
    run_cli_typing,
)
from tests.tokens.tpm import TpmToken
from tests.tokens.yubikey import VirtualYubiKey

ROOT = Path(__file__).parents[2]
COMMANDS = ["serve", "update"]
NEW_PIN = "24681357"  # what the card's PIN is changed to mid-life
LIFETIME = 12  # seconds: a refresh comes 6..9 s after each fetch, time enough to set the trap


def _command_args(command: str, tmp_path: Path) -> list[str]:
    """Extra options: serve on a free port (announced through a file)."""
    return ["--port", "0", "--port-file", str(tmp_path / "port")] if command == "serve" else []


def _env(base: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """`update` writes into a credentials file of the test's own."""
    return {**base, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), **extra}


def _assert_exit_5(code: int, err: str) -> None:
    assert code == 5, err
    assert "refused the PIN" in err and WRONG not in err and "Traceback" not in err


# -- wrong PIN at start: TPM -------------------------------------------------------------------


@pytest.fixture
def tpm_server(tpm_token: TpmToken) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([tpm_token.ca.certificate])) as emulator:
        emulator.config.credential_lifetime = LIFETIME
        yield emulator


@pytest.mark.tpm
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("command", COMMANDS)
def test_tpm_wrong_pin_at_start_is_tried_once(tpm: TpmToken, tpm_server: Emulator, tmp_path: Path,
                                              command: str, path: str) -> None:
    env_extra, query = _paths(tmp_path, WRONG)[path]
    uri = tpm.uri_for("ec", type="cert")
    before = tpm.lockout_counter()
    result = run_cli(tpm_server, _env(tpm.subprocess_env(), tmp_path, **env_extra),
                     "--certificate", _with_query(uri, query) if query else uri,
                     *_command_args(command, tmp_path), command=command)
    _assert_exit_5(result.returncode, result.stderr)
    assert tpm.lockout_counter() == before + 1  # the TPM counted exactly one failure
    assert tpm_server.requests == []
    assert not (tmp_path / "credentials").exists() and not (tmp_path / "port").exists()


@pytest.mark.tpm
@pytest.mark.parametrize("command", COMMANDS)
def test_tpm_wrong_pin_at_the_prompt_is_tried_once(tpm: TpmToken, tpm_server: Emulator, tmp_path: Path,
                                                   command: str) -> None:
    before = tpm.lockout_counter()
    code, err, shown = run_cli_typing(tpm_server, _env(tpm.subprocess_env(), tmp_path), WRONG,
                                      "--certificate", tpm.uri_for("ec", type="cert"),
                                      *_command_args(command, tmp_path), command=command)
    _assert_exit_5(code, err)
    assert WRONG.encode() not in shown
    assert tpm.lockout_counter() == before + 1
    assert tpm_server.requests == []


# -- wrong PIN at start: virtual PIV card ------------------------------------------------------


@pytest.fixture
def piv_server(virtual_yubikey: VirtualYubiKey) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([virtual_yubikey.ca.certificate])) as emulator:
        emulator.config.credential_lifetime = LIFETIME
        yield emulator


@pytest.mark.yubikey
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("command", COMMANDS)
def test_piv_wrong_pin_at_start_is_tried_once(yubikey: VirtualYubiKey, piv_server: Emulator, tmp_path: Path,
                                              command: str, path: str) -> None:
    module = yubikey.ykcs11_module
    env_extra, query = _paths(tmp_path, WRONG)[path]
    uri = yubikey.uri_for("9a", module, type="cert", by_label=True)
    result = run_cli(piv_server, _env(yubikey.subprocess_env(module), tmp_path, **env_extra),
                     "--certificate", _with_query(uri, query) if query else uri,
                     *_command_args(command, tmp_path), command=command)
    _assert_exit_5(result.returncode, result.stderr)
    assert yubikey.status()["verify_attempts"] == 1  # counted by the card itself
    assert yubikey.pin_retries_left() == 2
    assert piv_server.requests == []


@pytest.mark.yubikey
@pytest.mark.parametrize("command", COMMANDS)
def test_piv_wrong_pin_at_the_prompt_is_tried_once(yubikey: VirtualYubiKey, piv_server: Emulator,
                                                   piv_module: str, tmp_path: Path, command: str) -> None:
    code, err, shown = run_cli_typing(piv_server, _env(yubikey.subprocess_env(piv_module), tmp_path), WRONG,
                                      "--certificate", yubikey.uri_for("9a", piv_module, type="cert",
                                                                       by_label=True),
                                      *_command_args(command, tmp_path), command=command)
    _assert_exit_5(code, err)
    assert WRONG.encode() not in shown
    assert yubikey.status()["verify_attempts"] == 1
    assert yubikey.pin_retries_left() == 2
    assert piv_server.requests == []


# -- the PIN becomes wrong mid-life: the one reopen presents it once ----------------------------


def _refusals_that_fail_one_sign(yubikey: VirtualYubiKey, module: str) -> int:
    """OpenSC repeats a refused GENERAL AUTHENTICATE once (tests/signers/test_pkcs11_module_quirks.py)."""
    return 2 if module == yubikey.opensc_module else 1


def _start(server: Emulator, env: dict[str, str], command: str, tmp_path: Path,
           *args: str) -> tuple[subprocess.Popen[str], Path]:
    stderr_file = tmp_path / f"{command}.err"
    with stderr_file.open("w") as err:
        process = subprocess.Popen(_cli_args(server, *args, *_command_args(command, tmp_path), command=command),
                                   stdout=subprocess.DEVNULL, stderr=err, text=True, env=env, cwd=ROOT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    ready = (lambda: "export AWS_CONTAINER" in stderr_file.read_text()) if command == "serve" else (
        lambda: (tmp_path / "credentials").exists())
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            raise AssertionError(f"{command} did not start ({process.returncode}): {stderr_file.read_text()}")
        time.sleep(0.05)
    return process, stderr_file


def _stop(process: subprocess.Popen[str], timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _change_pin_and_drop_the_session(yubikey: VirtualYubiKey, module: str) -> None:
    """The PIN the process remembers becomes wrong, and its next signature is refused, as by
    a card that lost its security status: the session layer will open the token again."""
    yubikey.set_pin(NEW_PIN)
    yubikey.fail_next_signatures(_refusals_that_fail_one_sign(yubikey, module))


@pytest.mark.yubikey
def test_update_exits_5_after_one_reopen_with_a_pin_that_became_wrong(
    yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str, tmp_path: Path,
) -> None:
    env = _env(yubikey.subprocess_env(piv_module, pin=True), tmp_path)
    process, stderr_file = _start(piv_server, env, "update", tmp_path, "--certificate",
                                  yubikey.uri_for("9a", piv_module, type="cert", by_label=True))
    try:
        assert yubikey.status()["verify_attempts"] == 1
        _change_pin_and_drop_the_session(yubikey, piv_module)
        code = process.wait(LIFETIME * 4)  # the refresh comes within the lifetime, then it exits
    finally:
        _stop(process)
    err = stderr_file.read_text()
    assert code == 5, err
    assert "opening it again once" in err  # the refused signature made the session reopen
    assert "refused the PIN" in err and yubikey.pin not in err and "Traceback" not in err
    status = yubikey.status()
    assert status["verify_attempts"] == 2  # the good login at start, the remembered PIN once
    assert status["pin_retries_left"] == 2
    assert status["refused"] == {"9a": _refusals_that_fail_one_sign(yubikey, piv_module)}
    assert len(piv_server.issued) == 1  # nothing sent after the refusal
    assert "AccessKeyId" not in err and piv_server.issued[0].access_key_id in (tmp_path / "credentials").read_text()


@pytest.mark.yubikey
def test_serve_answers_503_once_held_credentials_expire_after_a_pin_that_became_wrong(
    yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str, tmp_path: Path,
) -> None:
    env = _env(yubikey.subprocess_env(piv_module, pin=True), tmp_path)
    process, stderr_file = _start(piv_server, env, "serve", tmp_path, "--certificate",
                                  yubikey.uri_for("9a", piv_module, type="cert", by_label=True))
    seen: list[int] = []
    try:
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", stderr_file.read_text(), re.M))
        url = exports["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        first = piv_server.issued[0]
        _change_pin_and_drop_the_session(yubikey, piv_module)
        # Poll through the expiry of the held credentials and then one more lifetime, in which
        # a refresh loop that had not stopped would have presented the PIN again.
        until = first.expiration.timestamp() + LIFETIME
        with httpx.Client(headers={"Authorization": exports["AWS_CONTAINER_AUTHORIZATION_TOKEN"]},
                          timeout=10) as client:
            while time.time() < until:
                asked = dt.datetime.now(dt.timezone.utc)
                response = client.get(url)
                seen.append(response.status_code)
                if response.status_code == 200:
                    body = response.json()
                    assert body["AccessKeyId"] == first.access_key_id
                    assert dt.datetime.fromisoformat(body["Expiration"].replace("Z", "+00:00")) > asked
                else:
                    assert response.status_code == 503, response.text
                    assert "AccessKeyId" not in response.text
                assert process.poll() is None, stderr_file.read_text()
                time.sleep(0.2)
            health = client.get(httpx.URL(url).copy_with(path="/healthz"))
            assert health.status_code == 503  # a supervisor's readiness check sees it too
    finally:
        code = _stop(process)
    err = stderr_file.read_text()
    assert code == 0, err
    phases = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert phases == [200, 503], seen  # the held credentials, then 503 for good
    assert seen.count(503) >= 5
    assert "opening it again once" in err  # the refused signature made the session reopen
    assert "refused the PIN" in err and yubikey.pin not in err and "Traceback" not in err
    status = yubikey.status()
    assert status["verify_attempts"] == 2  # the good login at start, the remembered PIN once
    assert status["pin_retries_left"] == 2
    assert len(piv_server.issued) == 1


# -- the boto3 provider ------------------------------------------------------------------------


def _provider(server: Emulator, certificate: str, callback: object = None):  # type: ignore[no-untyped-def]
    from rolesanywhere_hsm.botocore_provider import RolesAnywhereCredentialProvider
    from rolesanywhere_hsm.session import CredentialSpec

    spec = CredentialSpec(certificate=certificate, trust_anchor_arn=server.trust_anchor_arn,
                          profile_arn=server.profile_arn, role_arn=server.role_arn, endpoint=server.url)
    return RolesAnywhereCredentialProvider(spec, secret_callback=callback)  # type: ignore[arg-type]


def _refresh_three_times(provider) -> None:  # type: ignore[no-untyped-def]
    """Three refreshes through botocore's own RefreshableCredentials: each raises the PIN error."""
    credentials = provider.load()
    for _ in range(3):
        with pytest.raises(PinIncorrectError):
            credentials.get_frozen_credentials()


@pytest.mark.tpm
@pytest.mark.parametrize("source", ["env", "callback"])
def test_boto3_provider_on_the_tpm_presents_a_wrong_pin_once(
    tpm: TpmToken, tpm_server: Emulator, monkeypatch: pytest.MonkeyPatch, source: str,
) -> None:
    asked: list[str] = []
    if source == "env":
        monkeypatch.setenv("RAH_PKCS11_PIN", WRONG)
    before = tpm.lockout_counter()
    provider = _provider(tpm_server, tpm.uri_for("ec", type="cert", module=True),
                         (lambda description: asked.append(description) or WRONG) if source == "callback" else None)
    try:
        _refresh_three_times(provider)
    finally:
        provider.close()
    assert tpm.lockout_counter() == before + 1
    assert len(asked) == (1 if source == "callback" else 0)
    assert tpm_server.requests == []


@pytest.mark.yubikey
@pytest.mark.parametrize("source", ["env", "callback"])
def test_boto3_provider_on_the_card_presents_a_wrong_pin_once(
    yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str, monkeypatch: pytest.MonkeyPatch, source: str,
) -> None:
    asked: list[str] = []
    if source == "env":
        monkeypatch.setenv("RAH_PKCS11_PIN", WRONG)
    provider = _provider(piv_server, yubikey.uri_for("9a", piv_module, type="cert", by_label=True, module_path=True),
                         (lambda description: asked.append(description) or WRONG) if source == "callback" else None)
    try:
        _refresh_three_times(provider)
    finally:
        provider.close()
    assert yubikey.status()["verify_attempts"] == 1
    assert yubikey.pin_retries_left() == 2
    assert len(asked) == (1 if source == "callback" else 0)
    assert piv_server.requests == []


@pytest.mark.tpm
@pytest.mark.parametrize("command", COMMANDS)
def test_tpm_reopen_with_a_pin_file_that_became_wrong_presents_it_once(
    tpm: TpmToken, tpm_server: Emulator, tmp_path: Path, command: str,
) -> None:
    """The TPM variant of the mid-life case: the PIN file is rewritten with a wrong PIN, then the
    TPM forgets the process's loaded key and session (`tpm2_flushcontext`, as after a TPM
    reset), so the next signature fails and the session layer reopens the token, reading the
    PIN file again: the wrong PIN costs one count on the TPM's lockout counter, and no more."""
    pin_file = tmp_path / "pin"
    pin_file.write_text(tpm.user_pin + "\n")
    pin_file.chmod(0o600)
    uri = _with_query(tpm.uri_for("ec", type="cert"), f"pin-source=file:{pin_file}")
    before = tpm.lockout_counter()
    process, stderr_file = _start(tpm_server, _env(tpm.subprocess_env(), tmp_path), command, tmp_path,
                                  "--certificate", uri)
    try:
        first = tpm_server.issued[0]
        pin_file.write_text(WRONG + "\n")
        tpm.flush_transient()
        if command == "update":
            code = process.wait(LIFETIME * 4)
        else:
            deadline = first.expiration.timestamp() + LIFETIME
            while time.time() < deadline:
                assert process.poll() is None, stderr_file.read_text()
                time.sleep(0.2)
            code = _stop(process)
    finally:
        _stop(process)
    err = stderr_file.read_text()
    assert code == (5 if command == "update" else 0), err
    assert "opening it again once" in err  # the signature failed and the session reopened
    assert "refused the PIN" in err and WRONG not in err and "Traceback" not in err
    assert tpm.lockout_counter() == before + 1
    assert len(tpm_server.issued) == 1
