"""The virtual YubiKey behaves, through the real ykcs11 and OpenSC modules, as the signer will
meet a YubiKey: named tokens, certificates under CKA_ID 01..04, RSA and ECDSA signatures that
verify against the certificates, a PIN-always slot, and a PIN that really blocks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pkcs11
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from pkcs11 import Attribute, Mechanism, ObjectClass, TokenFlag
from pkcs11.util.ec import encode_ecdsa_signature

from tests.tokens.yubikey import PivSlot, VirtualYubiKey

pytestmark = pytest.mark.yubikey

MESSAGE = b"AWS4-X509-ECDSA-SHA256\n20260101T000000Z\nscope\nhash"


@pytest.fixture(params=["ykcs11", "opensc"])
def module(request: pytest.FixtureRequest, virtual_yubikey: VirtualYubiKey) -> str:
    return virtual_yubikey.ykcs11_module if request.param == "ykcs11" else virtual_yubikey.opensc_module


@pytest.fixture
def yubikey(virtual_yubikey: VirtualYubiKey) -> Iterator[VirtualYubiKey]:
    """The session's card with a full PIN counter before and after each test."""
    virtual_yubikey.reset_pin()
    virtual_yubikey.clear_counters()
    yield virtual_yubikey
    virtual_yubikey.reset_pin()


def _token(yubikey: VirtualYubiKey, module: str) -> pkcs11.Token:
    return yubikey.open_library(module).get_token(token_label=yubikey.token_label(module))


def _private_key(session: pkcs11.Session, slot: PivSlot) -> Any:
    return session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=slot.id)


def _verify(slot: PivSlot, signature: bytes, message: bytes = MESSAGE) -> None:
    """Raise InvalidSignature unless `signature` (PKCS#11 encoding) is slot's over `message`."""
    public = slot.certificate.public_key()
    if slot.key_type == "rsa":
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        return
    algorithm = hashes.SHA384() if slot.key_kind == "p384" else hashes.SHA256()
    public.verify(encode_ecdsa_signature(signature), message, ec.ECDSA(algorithm))


def _ecdsa_over_host_digest(key: Any, slot: PivSlot, **kwargs: Any) -> bytes:
    hash_function = hashlib.sha384 if slot.key_kind == "p384" else hashlib.sha256
    raw: bytes = key.sign(hash_function(MESSAGE).digest(), mechanism=Mechanism.ECDSA, **kwargs)
    return raw


def test_exactly_one_token_is_visible_under_each_modules_name(yubikey: VirtualYubiKey, module: str) -> None:
    # The blank card in vpcd's second reader must not show up as a token.
    tokens = list(yubikey.open_library(module).get_tokens())
    assert [t.label for t in tokens] == [yubikey.token_label(module)]
    token = tokens[0]
    assert TokenFlag.LOGIN_REQUIRED in token.flags
    if module == yubikey.ykcs11_module:
        assert token.manufacturer_id == "Yubico (www.yubico.com)"
        assert token.serial == str(yubikey.serial).encode()
    else:
        assert token.manufacturer_id == yubikey.opensc_manufacturer


def test_slot_certificates_are_listed_without_login(yubikey: VirtualYubiKey, module: str) -> None:
    with _token(yubikey, module).open() as session:
        certs = [
            (c[Attribute.ID], c[Attribute.LABEL], x509.load_der_x509_certificate(c[Attribute.VALUE]))
            for c in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
        ]
    is_ykcs11 = module == yubikey.ykcs11_module
    for slot in yubikey.slots.values():
        label = (slot.ykcs11_labels if is_ykcs11 else slot.opensc_labels).certificate
        assert [(i, c) for i, lab, c in certs if lab == label] == [(slot.id, slot.certificate)]
        same_id = [(lab, c) for i, lab, c in certs if i == slot.id and lab != label]
        if is_ykcs11:
            # The attestation certificate shares the slot's CKA_ID: a lookup by id finds two.
            assert [lab for lab, _ in same_id] == [f"X.509 Certificate for PIV Attestation {slot.name}"]
            assert same_id[0][1].issuer == yubikey.attestation_certificate.subject
            assert same_id[0][1].public_key() == slot.certificate.public_key()
        else:
            assert same_id == []


def test_private_keys_carry_ids_labels_and_the_always_authenticate_flag(
    yubikey: VirtualYubiKey, module: str
) -> None:
    is_ykcs11 = module == yubikey.ykcs11_module
    with _token(yubikey, module).open(user_pin=yubikey.pin) as session:
        for slot in yubikey.slots.values():
            key = _private_key(session, slot)
            assert key[Attribute.LABEL] == (slot.ykcs11_labels if is_ykcs11 else slot.opensc_labels).private_key
            assert key[Attribute.ALWAYS_AUTHENTICATE] is slot.always_authenticate
            assert key[Attribute.EXTRACTABLE] is False


def test_9a_rsa_2048_signs_sha256_rsa_pkcs(yubikey: VirtualYubiKey, module: str) -> None:
    slot = yubikey.slots["9a"]
    with _token(yubikey, module).open(user_pin=yubikey.pin) as session:
        signature = _private_key(session, slot).sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS)
    _verify(slot, signature)
    with pytest.raises(InvalidSignature):
        _verify(slot, signature, MESSAGE + b"!")


def test_9d_p384_signs_a_host_computed_sha384_digest(yubikey: VirtualYubiKey, module: str) -> None:
    slot = yubikey.slots["9d"]
    with _token(yubikey, module).open(user_pin=yubikey.pin) as session:
        raw = _ecdsa_over_host_digest(_private_key(session, slot), slot)
    assert len(raw) == 96  # r || s
    _verify(slot, raw)


def test_9c_needs_the_pin_before_every_signature(yubikey: VirtualYubiKey, module: str) -> None:
    slot = yubikey.slots["9c"]
    session = _token(yubikey, module).open(user_pin=yubikey.pin)
    try:
        key = _private_key(session, slot)
        yubikey.clear_counters()
        for _ in range(2):
            _verify(slot, _ecdsa_over_host_digest(key, slot, pin=yubikey.pin))
        status = yubikey.status()
        assert status["signatures"] == {"9c": 2}
        assert status["verify_attempts"] == 2  # one context-specific login per signature
        # Without pin= the card refuses: its last PIN verification was used up.
        with pytest.raises(pkcs11.UserNotLoggedIn):
            _ecdsa_over_host_digest(key, slot)
        assert yubikey.status()["signatures"] == {"9c": 2}
    finally:
        try:
            session.close()
        except pkcs11.UserNotLoggedIn:
            pass  # OpenSC, see test_opensc_forgets_the_login_after_a_refused_signature


def test_opensc_forgets_the_login_after_a_refused_signature(yubikey: VirtualYubiKey) -> None:
    """OpenSC drops the whole login when the card refuses a signature; ykcs11 keeps it."""
    slot_9a, slot_9c = yubikey.slots["9a"], yubikey.slots["9c"]
    for module in (yubikey.ykcs11_module, yubikey.opensc_module):
        session = _token(yubikey, module).open(user_pin=yubikey.pin)
        key = _private_key(session, slot_9c)
        _ecdsa_over_host_digest(key, slot_9c, pin=yubikey.pin)
        with pytest.raises(pkcs11.UserNotLoggedIn):
            _ecdsa_over_host_digest(key, slot_9c)
        if module == yubikey.ykcs11_module:
            _verify(slot_9a, _private_key(session, slot_9a).sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS))
            session.close()
        else:
            with pytest.raises(pkcs11.NoSuchKey):  # private objects are hidden again
                _private_key(session, slot_9a)
            with pytest.raises(pkcs11.UserNotLoggedIn):  # C_Logout in Session.close()
                session.close()


def test_9e_card_authentication_key_needs_no_pin_on_the_card(yubikey: VirtualYubiKey, module: str) -> None:
    slot = yubikey.slots["9e"]
    yubikey.clear_counters()
    with _token(yubikey, module).open() as session:
        if module == yubikey.ykcs11_module:
            # ykcs11 hides every private key until C_Login, even the PIN-never one.
            with pytest.raises(pkcs11.NoSuchKey):
                _private_key(session, slot)
            return
        _verify(slot, _ecdsa_over_host_digest(_private_key(session, slot), slot))
    assert yubikey.status()["verify_attempts"] == 0


def _login_fails(yubikey: VirtualYubiKey, module: str, pin: str) -> type[BaseException]:
    # A fresh C_Initialize per try: a failed open() leaks its session (python-pkcs11 trap 2).
    with pytest.raises((pkcs11.PinIncorrect, pkcs11.PinLocked)) as info:
        with _token(yubikey, module).open(user_pin=pin):
            pass
    return info.type


def test_wrong_pins_count_down_then_block_the_pin(yubikey: VirtualYubiKey, module: str) -> None:
    is_ykcs11 = module == yubikey.ykcs11_module
    # Token flags as each module reports them once 2, 1 and 0 tries are left.
    low_flags = {2: TokenFlag.USER_PIN_COUNT_LOW if is_ykcs11 else None,
                 1: TokenFlag.USER_PIN_FINAL_TRY, 0: TokenFlag.USER_PIN_LOCKED}
    for left in (2, 1, 0):
        # The try that uses up the counter is still "incorrect" (63C0); the next is "locked".
        assert _login_fails(yubikey, module, "000000") is pkcs11.PinIncorrect
        assert yubikey.pin_retries_left() == left
        flag = low_flags[left]
        flags = _token(yubikey, module).flags
        if flag is not None:
            assert flag in flags
        else:
            assert not flags & (TokenFlag.USER_PIN_COUNT_LOW | TokenFlag.USER_PIN_FINAL_TRY)
    assert _login_fails(yubikey, module, "000000") is pkcs11.PinLocked
    assert _login_fails(yubikey, module, yubikey.pin) is pkcs11.PinLocked
    assert yubikey.status()["verify_attempts"] == 5

    yubikey.reset_pin()
    with _token(yubikey, module).open(user_pin=yubikey.pin) as session:
        _verify(yubikey.slots["9a"], _private_key(session, yubikey.slots["9a"]).sign(
            MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS))
