"""credential-process on the software TPM and on the virtual YubiKey (ykcs11 and OpenSC),
against the emulator, as a subprocess with no terminal: what users run, on tokens whose
PIN counters are real."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rolesanywhere_hsm.emulator import Emulator, EmulatorConfig
from tests.tokens.tpm import TpmToken
from tests.tokens.yubikey import VirtualYubiKey
from tests.clirunner import run_cli

ROOT = Path(__file__).parents[2]


def run_cp(server: Emulator, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        "credential-process", *args,
        "--trust-anchor-arn", server.trust_anchor_arn, "--profile-arn", server.profile_arn,
        "--role-arn", server.role_arn, "--endpoint", server.url,
    ]
    return run_cli(*command, env=env, cwd=ROOT)


def assert_credentials(result: subprocess.CompletedProcess[str], server: Emulator, serial: int) -> None:
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["AccessKeyId"] == server.last_issued.access_key_id
    assert server.last_issued.leaf_serial == serial


# -- TPM ---------------------------------------------------------------------------------------


@pytest.fixture
def tpm_server(tpm_token: TpmToken) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([tpm_token.ca.certificate])) as emulator:
        yield emulator


@pytest.mark.tpm
@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_tpm_key_gets_credentials(tpm: TpmToken, tpm_server: Emulator, key: str) -> None:
    result = run_cp(tpm_server, tpm.subprocess_env(pin=True), "--certificate", tpm.uri_for(key, type="cert"))
    assert_credentials(result, tpm_server, tpm.keys[key].certificate.serial_number)


@pytest.mark.tpm
def test_tpm_wrong_pin_costs_one_try_and_the_token_stays_usable(tpm: TpmToken, tpm_server: Emulator) -> None:
    before = tpm.lockout_counter()
    env = dict(tpm.subprocess_env(), RAH_PKCS11_PIN="999999")
    result = run_cp(tpm_server, env, "--certificate", tpm.uri_for("ec", type="cert"))
    assert result.returncode == 5 and result.stdout == ""
    assert "refused the PIN" in result.stderr and "999999" not in result.stderr
    assert tpm.lockout_counter() == before + 1  # the TPM itself counted exactly one failure
    assert tpm_server.requests == []
    # Two tries remain before the real lockout: the right PIN still works.
    result = run_cp(tpm_server, tpm.subprocess_env(pin=True), "--certificate", tpm.uri_for("ec", type="cert"))
    assert_credentials(result, tpm_server, tpm.ec.certificate.serial_number)


# -- virtual YubiKey ---------------------------------------------------------------------------


@pytest.fixture
def piv_server(virtual_yubikey: VirtualYubiKey) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig.for_certificates([virtual_yubikey.ca.certificate])) as emulator:
        yield emulator


@pytest.mark.yubikey
@pytest.mark.parametrize("slot", ["9a", "9d"])
def test_piv_slot_by_label(yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str, slot: str) -> None:
    path = piv_module
    result = run_cp(piv_server, yubikey.subprocess_env(path, pin=True),
                     "--certificate", yubikey.uri_for(slot, path, type="cert", by_label=True))
    assert_credentials(result, piv_server, yubikey.slots[slot].certificate.serial_number)
    status = yubikey.status()
    assert status["verify_attempts"] == 1  # one login for the whole run
    assert sum(status["signatures"].values()) == 1  # one signature per credential


@pytest.mark.yubikey
def test_piv_credential_sends_the_card_no_more_commands_than_the_floor_script(
    yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str,
) -> None:
    """One credential-process talks to the card as little as bench/floor.py, the least script
    doing the same work (load the module, log in once, find the key, sign once): locate's
    public session and unlock's logged-in one must not make ykcs11 read the card twice (it
    re-reads every object when a session opens while none is open: 186 commands, not 97)."""
    import sys
    import time

    module = piv_module
    env = dict(yubikey.subprocess_env(module, pin=True), PYTHONPATH=str(ROOT))
    arns = [piv_server.url, piv_server.trust_anchor_arn, piv_server.profile_arn, piv_server.role_arn]
    slot = yubikey.slots["9a"]
    label = (slot.ykcs11_labels if module == yubikey.ykcs11_module else slot.opensc_labels).certificate

    def commands(argv: list[str]) -> int:
        yubikey.clear_counters()
        began = time.monotonic()  # the card stamps its log with the same clock
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, start_new_session=True)
        assert done.returncode == 0, done.stderr
        assert yubikey.status()["verify_attempts"] == 1
        return sum(1 for line in yubikey.apdu_log() if float(line.split()[0]) >= began)

    floor = commands([sys.executable, str(ROOT / "bench" / "floor.py"), *arns, "pkcs11", module,
                      yubikey.token_label(module), label])
    ours = commands([sys.executable, "-m", "rolesanywhere_hsm", "credential-process",
                     "--certificate", yubikey.uri_for("9a", module, type="cert", by_label=True),
                     "--trust-anchor-arn", piv_server.trust_anchor_arn, "--profile-arn",
                     piv_server.profile_arn, "--role-arn", piv_server.role_arn, "--endpoint", piv_server.url])
    assert 0 < ours <= floor, (ours, floor)


@pytest.mark.yubikey
@pytest.mark.parametrize("slot", ["9a", "9d"])
def test_piv_slot_by_id_through_opensc(yubikey: VirtualYubiKey, piv_server: Emulator, slot: str) -> None:
    path = yubikey.opensc_module
    result = run_cp(piv_server, yubikey.subprocess_env(path, pin=True),
                     "--certificate", yubikey.uri_for(slot, path, type="cert"))
    assert_credentials(result, piv_server, yubikey.slots[slot].certificate.serial_number)


@pytest.mark.yubikey
def test_piv_by_id_through_ykcs11_names_the_attestation_twin(yubikey: VirtualYubiKey, piv_server: Emulator) -> None:
    """ykcs11 shows the slot's attestation certificate under the same CKA_ID: refused, with
    both candidates named, rather than signing for the wrong certificate."""
    path = yubikey.ykcs11_module
    result = run_cp(piv_server, yubikey.subprocess_env(path, pin=True),
                     "--certificate", yubikey.uri_for("9a", path, type="cert"))
    assert result.returncode == 4 and result.stdout == ""
    assert "Attestation" in result.stderr and "object=" in result.stderr
    # Certificates are public: the ambiguity is found before any login, so no PIN reached the card.
    assert yubikey.status()["verify_attempts"] == 0 and yubikey.pin_retries_left() == 3


@pytest.mark.yubikey
def test_piv_by_id_with_the_key_named_by_id_and_the_certificate_by_label(
    yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str
) -> None:
    path = piv_module
    result = run_cp(piv_server, yubikey.subprocess_env(path, pin=True),
                     "--certificate", yubikey.uri_for("9d", path, type="cert", by_label=True),
                     "--private-key", yubikey.uri_for("9d", path, type="private"))
    assert_credentials(result, piv_server, yubikey.slots["9d"].certificate.serial_number)


@pytest.mark.yubikey
def test_piv_slot_9c_with_reuse_pin(yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str) -> None:
    path = piv_module
    result = run_cp(piv_server, yubikey.subprocess_env(path, pin=True), "--reuse-pin",
                     "--certificate", yubikey.uri_for("9c", path, type="cert", by_label=True))
    assert_credentials(result, piv_server, yubikey.slots["9c"].certificate.serial_number)
    status = yubikey.status()
    assert status["verify_attempts"] == 2  # the login, then the context login of 9c
    assert status["signatures"] == {"9c": 1}


@pytest.mark.yubikey
def test_piv_wrong_pin_is_sent_once_and_tries_left_are_reported(
    yubikey: VirtualYubiKey, piv_server: Emulator, piv_module: str
) -> None:
    path = piv_module
    env = dict(yubikey.subprocess_env(path), RAH_PKCS11_PIN="654321")
    result = run_cp(piv_server, env, "--certificate", yubikey.uri_for("9a", path, type="cert", by_label=True))
    assert result.returncode == 5 and result.stdout == ""
    assert "654321" not in result.stderr and "tried once" in result.stderr
    assert yubikey.status()["verify_attempts"] == 1
    assert yubikey.pin_retries_left() == 2
    # A second run with the same wrong PIN spends one more try, and says the next is the last.
    result = run_cp(piv_server, env, "--certificate", yubikey.uri_for("9a", path, type="cert", by_label=True))
    assert result.returncode == 5 and yubikey.pin_retries_left() == 1
    assert "ONE try is left" in result.stderr
    assert piv_server.requests == []
