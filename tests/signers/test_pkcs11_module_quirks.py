"""The PKCS#11 signer where real modules and tokens misbehave (issue 4, item 3), through the real
ykcs11, OpenSC and tpm2-pkcs11 modules, no mocks.

A YubiKey can refuse a signature in the middle of a session. What the module then does is
its own business, measured here with the virtual card's fault injection:

- OpenSC sends a refused GENERAL AUTHENTICATE once more, whatever the status word; after a
  second refusal with 6982 (security status not satisfied) it forgets the login, so that
  private keys vanish and `Session.close()` raises UserNotLoggedIn (and, its C_Logout having
  failed, python-pkcs11 never calls C_CloseSession: that session handle stays in the module
  until C_Finalize). With 6A80 it reports DataInvalid and stays logged in.
- ykcs11 does not retry; 6982 comes back as UserNotLoggedIn, anything else as DeviceError, and
  its session stays usable.

Either way the signer must raise TokenSigningError (no python-pkcs11 exception escapes), throw
the session away, and on the next sign() log in again exactly once, without ever presenting a
PIN in reaction to the refusal itself. The card counts VERIFY commands and signatures itself,
so those claims are checked from the card's side.

tpm2-pkcs11 without a resource manager shares the TPM's 3 transient object slots between all
processes; see the TPM tests' docstrings for what that means for a signer that stays open.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from rolesanywhere_hsm.errors import TokenSigningError
from rolesanywhere_hsm.signers.base import SignerConfig
from rolesanywhere_hsm.signers.pkcs11 import module_in_use, open_pkcs11_signer
from tests.signatures import verify_signature
from tests.tokens.processes import run, stop_process
from tests.tokens.tpm import TpmToken
from tests.tokens.yubikey import VirtualYubiKey

MESSAGE = b"AWS4-X509-RSA-SHA256\n20260101T000000Z\n20260101/us-east-1/rolesanywhere/aws4_request\nabc"


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def assert_valid(certificate_der: bytes, message: bytes, signature: bytes) -> None:
    """Verify with `cryptography` against the certificate: the token's own view of its key
    could be wrong, the certificate is what Roles Anywhere checks against."""
    verify_signature(certificate_der, message, signature)


# -- virtual YubiKey: the card refuses a signature --------------------------------------------


def refusals_that_fail_one_sign(yubikey: VirtualYubiKey, module: str) -> int:
    """How many refused GENERAL AUTHENTICATEs make one C_Sign fail: OpenSC retries once."""
    return 2 if module == yubikey.opensc_module else 1


@pytest.mark.yubikey
@pytest.mark.parametrize("sw", ["6982", "6a80"])
@pytest.mark.parametrize("slot", ["9a", "9d"])
def test_signer_survives_a_refused_signature_with_one_new_login(
    yubikey: VirtualYubiKey, piv_module: str, slot: str, sw: str,
) -> None:
    uri = yubikey.uri_for(slot, piv_module, type="cert", by_label=True, module_path=True, pin=True)
    signer = open_pkcs11_signer(SignerConfig(certificate=uri))
    try:
        certificate = signer.certificate
        assert certificate == der(yubikey.slots[slot].certificate)
        assert_valid(certificate, MESSAGE, signer.sign(MESSAGE))
        assert yubikey.status()["verify_attempts"] == 1

        refusals = refusals_that_fail_one_sign(yubikey, piv_module)
        yubikey.fail_next_signatures(refusals, sw)
        with pytest.raises(TokenSigningError) as info:
            signer.sign(MESSAGE + b" refused")
        assert type(info.value) is TokenSigningError  # ours, not a python-pkcs11 exception
        assert "signing with key" in info.value.message
        after_refusal = yubikey.status()
        assert after_refusal["refused"] == {slot: refusals}
        assert after_refusal["refusals_pending"] == 0
        assert after_refusal["verify_attempts"] == 1  # no PIN sent in reaction to the refusal

        signature = signer.sign(MESSAGE + b" again")
        assert_valid(certificate, MESSAGE + b" again", signature)
        status = yubikey.status()
        assert status["verify_attempts"] == 2  # exactly one new login, the PIN sent once
        assert status["signatures"] == {slot: 2}
        assert (signer.login_count, signer.sign_count) == (2, 2)
    finally:
        signer.close()  # must not raise, although OpenSC had dropped the first login
    assert not module_in_use(piv_module)


@pytest.mark.yubikey
def test_close_right_after_a_refusal_raises_nothing_and_leaves_nothing(
    yubikey: VirtualYubiKey, piv_module: str,
) -> None:
    """After OpenSC has dropped its login (6982 twice), the session's own close would raise
    UserNotLoggedIn and leak the handle; the signer's close() is quiet and finalises the module,
    so a new signer in the same process logs in as if nothing had happened."""
    uri = yubikey.uri_for("9a", piv_module, type="cert", by_label=True, module_path=True, pin=True)
    signer = open_pkcs11_signer(SignerConfig(certificate=uri))
    yubikey.fail_next_signatures(refusals_that_fail_one_sign(yubikey, piv_module))
    with pytest.raises(TokenSigningError):
        signer.sign(MESSAGE)
    signer.close()
    assert not module_in_use(piv_module)

    with open_pkcs11_signer(SignerConfig(certificate=uri)) as fresh:
        assert_valid(fresh.certificate, MESSAGE, fresh.sign(MESSAGE))
    status = yubikey.status()
    assert status["verify_attempts"] == 2  # one login per signer, nothing retried
    assert status["signatures"] == {"9a": 1}


@pytest.mark.yubikey
def test_one_refusal_is_absorbed_by_opensc_and_reported_by_ykcs11(
    yubikey: VirtualYubiKey, piv_module: str,
) -> None:
    """Pins the measured module behaviour the tests above rely on: OpenSC repeats a refused
    GENERAL AUTHENTICATE once (so one refusal never reaches us), ykcs11 does not."""
    uri = yubikey.uri_for("9a", piv_module, type="cert", by_label=True, module_path=True, pin=True)
    with open_pkcs11_signer(SignerConfig(certificate=uri)) as signer:
        yubikey.fail_next_signatures(1)
        if piv_module == yubikey.opensc_module:
            assert_valid(signer.certificate, MESSAGE, signer.sign(MESSAGE))
            assert signer.login_count == 1
        else:
            with pytest.raises(TokenSigningError):
                signer.sign(MESSAGE)
    status = yubikey.status()
    assert status["refused"] == {"9a": 1}
    assert status["verify_attempts"] == 1


# -- TPM: transient object slots shared between processes ------------------------------------

# A credential-process-like one-shot: open, sign once, close; our errors as JSON and exit code,
# anything else escapes as a traceback (which the tests forbid).
ONE_SHOT = r"""
import json, sys
from rolesanywhere_hsm.errors import RolesAnywhereError
from rolesanywhere_hsm.signers.base import SignerConfig
from rolesanywhere_hsm.signers.pkcs11 import open_pkcs11_signer
try:
    with open_pkcs11_signer(SignerConfig(certificate=sys.argv[1])) as signer:
        signature = signer.sign(sys.argv[2].encode())
except RolesAnywhereError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": exc.message, "hint": exc.hint}))
    sys.exit(exc.exit_code)
print(json.dumps({"signature": signature.hex()}))
"""

# A long-lived signer in another process (a credential server): open, sign once (which loads
# the key into the TPM), say READY, keep it open until a line arrives on stdin.
HOLDER = r"""
import sys
from rolesanywhere_hsm.signers.base import SignerConfig
from rolesanywhere_hsm.signers.pkcs11 import open_pkcs11_signer
with open_pkcs11_signer(SignerConfig(certificate=sys.argv[1])) as signer:
    signer.sign(b"load the key")
    print("READY", flush=True)
    sys.stdin.readline()
"""


def tpm_contexts(tpm: TpmToken) -> tuple[list[str], list[str]]:
    """Transient objects and loaded sessions in the TPM right now, as the TPM itself lists them."""
    def handles(kind: str) -> list[str]:
        out = run(["tpm2_getcap", kind], env=tpm.tools_env, timeout=10).stdout
        return [word for word in out.split() if word.startswith("0x")]

    return handles("handles-transient"), handles("handles-loaded-session")


def sign_in_child(tpm: TpmToken, key: str, message: bytes) -> tuple[int, dict[str, Any], str]:
    """Run ONE_SHOT in a fresh process against key "rsa" or "ec": (exit code, JSON, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", ONE_SHOT, tpm.uri_for(key, type="cert", module=True, pin=True),
         message.decode()],
        env=tpm.subprocess_env(), capture_output=True, text=True, timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def start_holder(tpm: TpmToken, key: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, tpm.uri_for(key, type="cert", module=True, pin=True)],
        env=tpm.subprocess_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline() != "READY\n":
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"the holder process could not sign:\n{err}")
    return proc


def release_holder(proc: subprocess.Popen[str]) -> None:
    """Let the holder close its signer and exit normally (so it C_Finalizes)."""
    _, err = proc.communicate("\n", timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.tpm
def test_tpm_close_releases_the_object_slots_for_other_processes(tpm: TpmToken) -> None:
    """One process, one signer per key in turn (RSA: 10 signatures, close; EC: 10, close),
    then other processes use the TPM. A logged-in tpm2-pkcs11 process that has signed keeps
    one transient object and one session in the TPM until it logs out or finalises, and a
    login needs two free object slots for a moment; with 3 slots in all, a third process
    cannot log in while two hold a key. So the one-shot child below, signing while a holder
    process keeps its key loaded, succeeds only if our process released everything on close()
    (the TPM's own handle lists say so too)."""
    for key in ("rsa", "ec"):
        with open_pkcs11_signer(SignerConfig(certificate=tpm.uri_for(key, type="cert", module=True,
                                                                     pin=True))) as signer:
            for i in range(10):
                message = MESSAGE + bytes([i])
                assert_valid(signer.certificate, message, signer.sign(message))
            assert (signer.login_count, signer.sign_count) == (1, 10)
        assert tpm_contexts(tpm) == ([], [])

    holder = start_holder(tpm, "ec")
    try:
        code, answer, _ = sign_in_child(tpm, "rsa", MESSAGE)
        assert code == 0, answer
        assert_valid(der(tpm.rsa.certificate), MESSAGE, bytes.fromhex(answer["signature"]))
    finally:
        release_holder(holder)
    assert tpm_contexts(tpm) == ([], [])


@pytest.mark.tpm
def test_tpm_other_processes_while_a_signer_stays_open(tpm: TpmToken) -> None:
    """Observed with swtpm + tpm2-pkcs11 1.9 and no resource manager: while our signer stays
    open (logged in, key loaded: one transient object and one session), another process can
    still sign. With a second long-lived signer in another process, a third process cannot
    log in: the TPM answers "out of memory for object contexts" (tpm2-pkcs11 prints that and
    "Error unsealing wrapping key" on stderr) and C_Login returns CKR_GENERAL_ERROR, which the
    child reports as our TokenError, exit code 4, with no traceback. Nothing retries and
    nothing is left behind: once the holder closes, the one-shot works again, and our own
    signer keeps signing throughout."""
    uri = tpm.uri_for("rsa", type="cert", module=True, pin=True)
    with open_pkcs11_signer(SignerConfig(certificate=uri)) as signer:
        assert_valid(signer.certificate, MESSAGE, signer.sign(MESSAGE))

        code, answer, _ = sign_in_child(tpm, "ec", MESSAGE)
        assert code == 0, answer
        assert_valid(der(tpm.ec.certificate), MESSAGE, bytes.fromhex(answer["signature"]))

        holder = start_holder(tpm, "ec")
        try:
            code, answer, stderr = sign_in_child(tpm, "ec", MESSAGE)
            assert code == 4, answer
            assert answer["error"] == "TokenError"
            assert answer["message"] == "The token failed while logging in to token 'rah-tpm' (GeneralError)."
            assert "tpm2-abrmd" in answer["hint"]  # the hint names the likely cause
            assert "out of memory for object contexts" in stderr  # tpm2-pkcs11's own log line
            assert_valid(signer.certificate, MESSAGE, signer.sign(MESSAGE))
        finally:
            if holder.poll() is None:
                release_holder(holder)
            else:  # pragma: no cover (only when the holder died: reap it)
                stop_process(holder)

        code, answer, _ = sign_in_child(tpm, "ec", MESSAGE)
        assert code == 0, answer
        assert_valid(signer.certificate, MESSAGE + b"!", signer.sign(MESSAGE + b"!"))
        assert (signer.login_count, signer.sign_count) == (1, 3)
    assert tpm_contexts(tpm) == ([], [])
