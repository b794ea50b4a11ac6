"""The TPM fixture really is a TPM: keys made inside it sign, its certificates match its keys,
and its PIN is guarded by the TPM's dictionary-attack lockout."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pkcs11
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ecdsa_signature

from tests.tokens.tpm import TpmToken

pytestmark = pytest.mark.tpm

MESSAGE = b"AWS4-X509-RSA-SHA256\n20260101T000000Z\nscope\nhash"


def _token(tpm: TpmToken) -> pkcs11.Token:
    return tpm.open_library().get_token(token_label=tpm.token_label)


def test_token_is_initialised_and_requires_login(tpm_token: TpmToken) -> None:
    token = _token(tpm_token)
    assert token.label == tpm_token.token_label
    assert pkcs11.TokenFlag.LOGIN_REQUIRED in token.flags
    assert pkcs11.TokenFlag.USER_PIN_INITIALIZED in token.flags


def test_certificates_are_readable_without_login_under_the_key_ids(tpm_token: TpmToken) -> None:
    with _token(tpm_token).open() as session:
        found = {
            obj[Attribute.ID]: (obj[Attribute.LABEL], obj[Attribute.VALUE])
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
        }
    expected = {
        key.id: (key.label, key.certificate.public_bytes(serialization.Encoding.DER))
        for key in tpm_token.keys.values()
    }
    assert found == expected


def test_private_keys_were_generated_inside_and_cannot_leave(tpm_token: TpmToken) -> None:
    with _token(tpm_token).open(user_pin=tpm_token.user_pin) as session:
        for key in tpm_token.keys.values():
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key.id)
            assert private[Attribute.LABEL] == key.label
            assert private[Attribute.LOCAL] is True  # generated on the token, not imported
            assert private[Attribute.SENSITIVE] is True
            assert private[Attribute.EXTRACTABLE] is False
            assert private[Attribute.ALWAYS_AUTHENTICATE] is False


def test_rsa_key_signs_sha256_rsa_pkcs_verifiable_with_its_certificate(tpm_token: TpmToken) -> None:
    key = tpm_token.rsa
    with _token(tpm_token).open(user_pin=tpm_token.user_pin) as session:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key.id)
        signature = private.sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS)
    key.certificate.public_key().verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        key.certificate.public_key().verify(signature, MESSAGE + b"!", padding.PKCS1v15(), hashes.SHA256())


def test_ec_key_signs_a_host_computed_digest_with_raw_ecdsa(tpm_token: TpmToken) -> None:
    key = tpm_token.ec
    digest = hashlib.sha256(MESSAGE).digest()
    with _token(tpm_token).open(user_pin=tpm_token.user_pin) as session:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key.id)
        raw = private.sign(digest, mechanism=Mechanism.ECDSA)
    assert len(raw) == 64  # r || s for P-256: the signer must DER-encode it
    der = encode_ecdsa_signature(raw)
    public = key.certificate.public_key()
    public.verify(der, MESSAGE, ec.ECDSA(hashes.SHA256()))
    public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_both_keys_sign_in_one_session(tpm_token: TpmToken) -> None:
    # Two keys plus the token's own objects still fit the TPM's 3 slots without abrmd.
    with _token(tpm_token).open(user_pin=tpm_token.user_pin) as session:
        for _ in range(3):
            for key, mechanism in ((tpm_token.rsa, Mechanism.SHA256_RSA_PKCS),
                                   (tpm_token.ec, Mechanism.ECDSA_SHA256)):
                private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key.id)
                signature = private.sign(MESSAGE, mechanism=mechanism)
                public = key.certificate.public_key()
                if key.key_type == "rsa":
                    public.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
                else:
                    public.verify(encode_ecdsa_signature(signature), MESSAGE, ec.ECDSA(hashes.SHA256()))


def _try_login(tpm: TpmToken, pin: str) -> None:
    # A fresh C_Initialize for each attempt: a failed open() leaks its session (trap 2).
    with _token(tpm).open(user_pin=pin):
        pass


def test_wrong_pin_is_refused_and_counted_by_the_tpm(tpm_token: TpmToken) -> None:
    tpm_token.clear_lockout()
    try:
        with pytest.raises(pkcs11.PinIncorrect):
            _try_login(tpm_token, "000000")
        assert tpm_token.lockout_counter() == 1
        _try_login(tpm_token, tpm_token.user_pin)  # one failure does not lock
    finally:
        tpm_token.clear_lockout()
    assert tpm_token.lockout_counter() == 0


def test_three_wrong_pins_lock_the_token_until_lockout_is_cleared(tpm_token: TpmToken) -> None:
    tpm_token.clear_lockout()
    try:
        for _ in range(3):
            with pytest.raises(pkcs11.PinIncorrect):
                _try_login(tpm_token, "000000")
        # Locked now: even the right PIN is refused, and so is a fourth wrong one.
        with pytest.raises(pkcs11.PinLocked):
            _try_login(tpm_token, tpm_token.user_pin)
        with pytest.raises(pkcs11.PinLocked):
            _try_login(tpm_token, "000000")
        # tpm2-pkcs11 does not report the state in the token flags.
        flags = _token(tpm_token).flags
        assert pkcs11.TokenFlag.USER_PIN_LOCKED not in flags
        assert pkcs11.TokenFlag.USER_PIN_COUNT_LOW not in flags
    finally:
        tpm_token.clear_lockout()
    _try_login(tpm_token, tpm_token.user_pin)
    with _token(tpm_token).open(user_pin=tpm_token.user_pin) as session:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=tpm_token.rsa.id)
        signature = private.sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS)
    tpm_token.rsa.certificate.public_key().verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())


_CHILD_SIGNS = """
import os, sys
import pkcs11
from pkcs11 import Mechanism, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
session = token.open(user_pin=sys.argv[3])
for key_id in sys.argv[4].split(","):
    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(key_id))
    mechanism = Mechanism.ECDSA if key.key_type == pkcs11.KeyType.EC else Mechanism.SHA256_RSA_PKCS
    key.sign(b"x" * 32, mechanism=mechanism)
print("signed", flush=True)
if sys.argv[5] == "crash":
    os._exit(0)  # no C_Finalize, as after SIGKILL or a crash
session.close()
"""


def _child_sign(tpm: TpmToken, how: str) -> subprocess.CompletedProcess[str]:
    """Sign in a child process with both keys ("crash": and die without C_Finalize)."""
    key_ids = f"{tpm.rsa.id_hex},{tpm.ec.id_hex}"
    return subprocess.run(
        [sys.executable, "-c", _CHILD_SIGNS, tpm.module, tpm.token_label, tpm.user_pin, key_ids, how],
        env=tpm.subprocess_env(), capture_output=True, text=True, timeout=60,
    )


def test_a_process_dying_without_c_finalize_blocks_the_tpm_until_flushed(tpm_token: TpmToken) -> None:
    # Without a resource manager the TPM keeps what a dead process loaded: 3 object slots fill.
    # Our own process must hold nothing loaded meanwhile (its loaded keys count too).
    tpm_token.open_library().finalize()
    try:
        assert _child_sign(tpm_token, "crash").stdout.strip() == "signed"
        blocked = _child_sign(tpm_token, "clean")
        assert blocked.returncode != 0
        assert "GeneralError" in blocked.stderr
    finally:
        tpm_token.flush_transient()
    recovered = _child_sign(tpm_token, "clean")
    assert recovered.returncode == 0, recovered.stderr
