"""What a signer costs on the wire, counted by OpenSC's pkcs11-spy between us and SoftHSM.

Each test runs a small script in a subprocess with RAH_PKCS11_MODULE=pkcs11-spy.so,
PKCS11SPY=<libsofthsm2.so> and PKCS11SPY_OUTPUT=<log>, then reads the log: one C_Initialize,
one session, one C_Login, one real C_Sign per signature (python-pkcs11 first calls C_Sign with
a NULL buffer to learn the length, as PKCS#11 section 5.2 allows; no signature is made by that
call), and never a key export or a sensitive attribute read.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from tests.fixtures.softhsm import SOFTHSM_PIN
from tests.signers.spylog import SPY, Call, counts, parse_spy_log

pytestmark = pytest.mark.softhsm

ROOT = Path(__file__).parents[2]

SCRIPT = """
import sys
from rolesanywhere_hsm.errors import RolesAnywhereError
from rolesanywhere_hsm.signers.base import SignerConfig
from rolesanywhere_hsm.signers.pkcs11 import open_pkcs11_signer
uri, count, reuse = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "reuse"
try:
    with open_pkcs11_signer(SignerConfig(certificate=uri, reuse_pin=reuse)) as signer:
        for i in range(count):
            signer.sign(b"message %d" % i)
    print("OK")
except RolesAnywhereError as exc:
    print(type(exc).__name__)
"""

# Attributes that are secret on a private key (PKCS#11 sections 2.1.3, 2.3.4, 4.9).
SENSITIVE = ("CKA_VALUE", "CKA_PRIVATE_EXPONENT", "CKA_PRIME_1", "CKA_PRIME_2", "CKA_EXPONENT_1",
             "CKA_EXPONENT_2", "CKA_COEFFICIENT")


def run_with_spy(tmp_path: Path, token: SoftHsmToken, uri: str, count: int = 1, *,
                 pin: str = SOFTHSM_PIN, reuse: bool = False) -> tuple[str, list[Call]]:
    log = tmp_path / "spy.log"
    env = dict(os.environ, **token.env, RAH_PKCS11_MODULE=SPY, PKCS11SPY=token.module,
               PKCS11SPY_OUTPUT=str(log), RAH_PKCS11_PIN=pin)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, uri, str(count), "reuse" if reuse else "no"], env=env,
        cwd=ROOT, capture_output=True, text=True, timeout=60, start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), parse_spy_log(log)


def signing_key_handles(calls: list[Call]) -> set[str]:
    return {m.group(1) for c in calls if c.name == "C_SignInit"
            for m in [re.search(r"hKey = (0x[0-9a-f]+)", c.text)] if m}


@pytest.fixture(autouse=True)
def _needs_spy() -> None:
    if not os.path.isfile(SPY):
        pytest.skip("OpenSC's pkcs11-spy.so is not installed")


@pytest.mark.parametrize("label", ["ec-p256", "rsa-2048"])
def test_open_and_sign_once_costs_one_login_and_one_signature(
    softhsm_token: SoftHsmToken, tmp_path: Path, label: str,
) -> None:
    outcome, calls = run_with_spy(tmp_path, softhsm_token, softhsm_token.uri_for(label, type="cert"))
    assert outcome == "OK"
    n = counts(calls)
    assert n["C_Initialize"] == 1
    # One public session reads the certificate before any PIN is asked, one logged-in session
    # signs; only the second logs in (and out).
    assert n["C_OpenSession"] == 2
    assert n["C_Login"] == 1
    assert n["C_SignInit"] == 1
    assert n["C_Sign(real)"] == 1
    assert n["C_Logout"] == 1 and n["C_CloseSession"] == 2 and n["C_Finalize"] == 1
    for forbidden in ("C_WrapKey", "C_CopyObject", "C_SetAttributeValue", "C_DigestKey",
                      "C_Verify", "C_VerifyInit"):
        assert n[forbidden] == 0, forbidden
    keys = signing_key_handles(calls)
    assert len(keys) == 1
    for call in calls:
        if call.name != "C_GetAttributeValue":
            continue
        handle = re.search(r"hObject = (0x[0-9a-f]+)", call.text)
        if handle and handle.group(1) in keys:
            requested = call.text.split("[out]")[0]
            for attribute in SENSITIVE:
                assert not re.search(rf"\b{attribute}\b", requested), (attribute, call.text)


def test_many_signatures_one_login(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    outcome, calls = run_with_spy(tmp_path, softhsm_token,
                                  softhsm_token.uri_for("ec-p256", type="cert"), count=25)
    assert outcome == "OK"
    n = counts(calls)
    assert (n["C_Initialize"], n["C_OpenSession"], n["C_Login"]) == (1, 2, 1)  # public + logged in
    assert n["C_Sign(real)"] == 25


def test_wrong_pin_is_tried_once(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    outcome, calls = run_with_spy(tmp_path, softhsm_token,
                                  softhsm_token.uri_for("ec-p256", type="cert"), pin="wrong-pin-1")
    assert outcome == "PinIncorrectError"
    n = counts(calls)
    assert n["C_Login"] == 1
    assert n["C_SignInit"] == 0 and n["C_Sign"] == 0
    assert n["C_Finalize"] == 1  # cleaned up, including the session the failed login leaked


def test_always_authenticate_costs_one_context_login_per_signature(
    softhsm_token: SoftHsmToken, tmp_path: Path,
) -> None:
    outcome, calls = run_with_spy(tmp_path, softhsm_token,
                                  softhsm_token.uri_for("always-auth", type="cert"), count=3,
                                  reuse=True)
    assert outcome == "OK"
    n = counts(calls)
    assert n["C_Login"] == 1 + 3
    assert n["C_Sign(real)"] == 3
    context_logins = [c for c in calls if c.name == "C_Login" and "CKU_CONTEXT_SPECIFIC" in c.text]
    assert len(context_logins) == 3
