"""The PKCS#11 signer on tokens that count: a virtual YubiKey (PIV) behind the real ykcs11
and OpenSC modules, and a software TPM behind tpm2-pkcs11. The card and the TPM count PIN
verifications and signatures themselves, which proves "one login, one signature, a PIN tried
once" from the device's side rather than from ours."""

from __future__ import annotations


import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from rolesanywhere_hsm.errors import PinIncorrectError, PinLockedError, SelectionError
from rolesanywhere_hsm.signers.base import Signer, SignerConfig
from rolesanywhere_hsm.signers.pkcs11 import open_pkcs11_signer
from tests.signatures import verify_signature
from tests.tokens.tpm import TpmToken
from tests.tokens.yubikey import VirtualYubiKey

MESSAGE = b"AWS4-X509-ECDSA-SHA256\n20260101T000000Z\n20260101/us-east-1/rolesanywhere/aws4_request\nabc"


def assert_valid(signer: Signer, message: bytes, signature: bytes) -> None:
    verify_signature(signer.certificate, message, signature)


# -- virtual YubiKey ----------------------------------------------------------------------------


@pytest.mark.yubikey
@pytest.mark.parametrize("slot", ["9a", "9d", "9e"])
def test_yubikey_many_signatures_one_pin_verification(yubikey: VirtualYubiKey, piv_module: str,
                                                      slot: str) -> None:
    uri = yubikey.uri_for(slot, piv_module, type="cert", by_label=True, module_path=True, pin=True)
    with open_pkcs11_signer(SignerConfig(certificate=uri)) as signer:
        assert signer.certificate == yubikey.slots[slot].certificate.public_bytes(Encoding.DER)
        for i in range(5):
            message = MESSAGE + bytes([i])
            assert_valid(signer, message, signer.sign(message))
    status = yubikey.status()
    assert status["signatures"] == {slot: 5}  # one card signature per sign()
    assert status["verify_attempts"] <= 1  # one login (9e: PIN policy "never", none needed)


@pytest.mark.yubikey
def test_yubikey_always_authenticate_slot_with_reuse_pin(yubikey: VirtualYubiKey, piv_module: str) -> None:
    uri = yubikey.uri_for("9c", piv_module, type="cert", by_label=True, module_path=True, pin=True)
    with open_pkcs11_signer(SignerConfig(certificate=uri, reuse_pin=True)) as signer:
        assert signer.always_authenticate
        for _ in range(3):
            assert_valid(signer, MESSAGE, signer.sign(MESSAGE))
    status = yubikey.status()
    assert status["signatures"] == {"9c": 3}
    assert status["verify_attempts"] == 1 + 3  # the login, then one context login per signature


@pytest.mark.yubikey
def test_yubikey_wrong_pin_is_sent_once_and_tries_left_reported(yubikey: VirtualYubiKey,
                                                                piv_module: str) -> None:
    uri = yubikey.uri_for("9a", piv_module, type="cert", by_label=True, module_path=True)
    config = SignerConfig(certificate=uri, secret_callback=lambda description: "999999")
    with pytest.raises(PinIncorrectError) as info:
        open_pkcs11_signer(config)
    assert yubikey.status()["verify_attempts"] == 1
    assert yubikey.pin_retries_left() == 2
    assert "not retried" in info.value.message and "999999" not in info.value.diagnostics()


@pytest.mark.yubikey
def test_yubikey_locked_pin(yubikey: VirtualYubiKey) -> None:
    module = yubikey.ykcs11_module
    uri = yubikey.uri_for("9a", module, type="cert", by_label=True, module_path=True)
    wrong = SignerConfig(certificate=uri, secret_callback=lambda description: "999999")
    messages = []
    for _ in range(3):  # three separate runs, each trying once
        with pytest.raises((PinIncorrectError, PinLockedError)) as info:
            open_pkcs11_signer(wrong)
        messages.append(info.value.message)
    assert yubikey.pin_retries_left() == 0
    assert yubikey.status()["verify_attempts"] == 3
    # What ykcs11 reports from the token flags after each failure:
    assert "few tries are left" in messages[0]  # CKF_USER_PIN_COUNT_LOW
    assert "ONE try is left" in messages[1]  # CKF_USER_PIN_FINAL_TRY
    assert "has now locked it" in messages[2]  # CKF_USER_PIN_LOCKED
    right = SignerConfig(certificate=uri, secret_callback=lambda description: yubikey.pin)
    with pytest.raises(PinLockedError, match="is locked \\(not tried\\)"):
        open_pkcs11_signer(right)
    assert yubikey.status()["verify_attempts"] == 3  # a locked PIN is not even sent


@pytest.mark.yubikey
def test_ykcs11_attestation_certificate_makes_id_ambiguous(yubikey: VirtualYubiKey) -> None:
    module = yubikey.ykcs11_module
    uri = yubikey.uri_for("9a", module, type="cert", module_path=True, pin=True)  # id only
    with pytest.raises(SelectionError) as info:
        open_pkcs11_signer(SignerConfig(certificate=uri))
    assert "PIV Attestation 9a" in info.value.message
    assert "object=" in info.value.diagnostics()
    assert yubikey.status()["signatures"] == {}


# -- TPM 2.0 (swtpm + tpm2-pkcs11) --------------------------------------------------------------


@pytest.mark.tpm
@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_tpm_signs(tpm: TpmToken, key: str) -> None:
    config = SignerConfig(certificate=tpm.uri_for(key, type="cert", module=True, pin=True))
    with open_pkcs11_signer(config) as signer:
        for i in range(3):
            assert_valid(signer, MESSAGE + bytes([i]), signer.sign(MESSAGE + bytes([i])))


@pytest.mark.tpm
def test_tpm_wrong_pin_counts_one_failure(tpm: TpmToken) -> None:
    before = tpm.lockout_counter()
    config = SignerConfig(certificate=tpm.uri_for("ec", type="cert", module=True),
                          secret_callback=lambda description: "wrong-pin")
    with pytest.raises(PinIncorrectError):
        open_pkcs11_signer(config)
    assert tpm.lockout_counter() == before + 1  # the TPM saw exactly one attempt
