"""The attestation rules on plain data, fast: Yubico's encodings, TPM structures, the chain walk."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from rolesanywhere_hsm.attestation import tpm_format, yubico
from rolesanywhere_hsm.attestation.verify import Requirements, spki_of, verify_chain, verify_piv
from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key
from rolesanywhere_hsm.errors import AttestationChainError, AttestationKeyMismatchError, AttestationPolicyError
from tests.vpiv.card import TOUCH_CACHED, PinPolicy, PivCard, SlotKey, make_attestation_key


def card_attestation(pin: PinPolicy = PinPolicy.ALWAYS, touch: int = TOUCH_CACHED, serial: int = 0x8ABCDEF0):
    """(root, f9 certificate, slot attestation, key) as the virtual card makes them."""
    root = CertificateAuthority.create("Test PIV root")
    f9 = make_attestation_key(serial, (root.key, root.certificate))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = PivCard({}, serial=serial, attestation=f9)._issue_attestation(SlotKey(0x9C, key, None, pin, touch_policy=touch))
    return root, f9[1], leaf, key


def test_facts_in_yubicos_words() -> None:
    _, _, leaf, _ = card_attestation()
    facts = yubico.facts_of(leaf)
    # A serial with the high bit set: a DER INTEGER with a leading zero, read back positive.
    assert facts.as_dict() == {"slot": "9c", "serial": 0x8ABCDEF0, "firmware": "5.4.3", "pin_policy": "always",
                               "touch_policy": "cached", "form_factor": "usb-a-keychain"}


def test_slot_ids_of_both_modules() -> None:
    assert [yubico.slot_for_id(bytes([i])) for i in (1, 2, 3, 4)] == [0x9A, 0x9C, 0x9D, 0x9E]
    assert yubico.slot_for_id(b"\x05") == 0x82 and yubico.slot_for_id(b"\x18") == 0x95  # ykcs11
    assert yubico.slot_for_id(b"\x82") == 0x82 and yubico.slot_for_id(b"\x95") == 0x95  # OpenSC
    assert yubico.slot_for_id(b"\x19") == 0xF9
    assert yubico.slot_for_id(b"\x00") is None and yubico.slot_for_id(b"\x01\x02") is None


def test_certificate_object_plain_and_gzip() -> None:
    der = b"\x30\x03\x02\x01\x05"
    body = b"\x70\x05" + der + b"\x71\x01\x00" + b"\xfe\x00"
    assert yubico.certificate_from_object(b"\x53" + bytes([len(body)]) + body) == der
    packed = gzip.compress(der)
    body = b"\x70" + bytes([len(packed)]) + packed + b"\x71\x01\x01"
    assert yubico.certificate_from_object(b"\x53" + bytes([len(body)]) + body) == der
    with pytest.raises(ValueError):
        yubico.certificate_from_object(b"\x53\x05\x70\x09abc")
    assert yubico.metadata_origin(bytes.fromhex("010111030102")) == "imported"
    assert yubico.metadata_origin(bytes.fromhex("030101")) == "generated"


def test_verify_piv_checks_chain_key_and_policy() -> None:
    root, f9, leaf, key = card_attestation()
    spki = spki_of(key.public_key())
    verdict = verify_piv(leaf, f9, spki, [root.certificate], Requirements(frozenset({"always"}), frozenset({"cached"})))
    assert verdict.checks == ["chain", "public-key", "policy"]
    with pytest.raises(AttestationKeyMismatchError):
        verify_piv(leaf, f9, spki_of(ec.generate_private_key(ec.SECP256R1()).public_key()), [root.certificate])
    with pytest.raises(AttestationPolicyError, match="touch policy is cached; the CA requires always"):
        verify_piv(leaf, f9, spki, [root.certificate], Requirements(touch_policies=frozenset({"always"})))
    with pytest.raises(AttestationChainError, match="does not chain"):
        verify_piv(leaf, f9, spki, [CertificateAuthority.create("Other").certificate])


def test_chain_walk_refuses_forgery_and_expiry() -> None:
    root = CertificateAuthority.create("Root")
    forger = CertificateAuthority.create("Root")  # same name, another key
    intermediate = root.issue_intermediate("Mid")
    leaf = intermediate.issue_leaf(new_private_key("p256").public_key(), "leaf")
    assert verify_chain(leaf, [intermediate.certificate], [root.certificate])[-1] == root.certificate
    with pytest.raises(AttestationChainError, match="altered or forged"):
        verify_chain(leaf, [intermediate.certificate], [forger.certificate])
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    old = intermediate.issue_leaf(new_private_key("p256").public_key(), "old", not_before=past - dt.timedelta(days=1),
                                  not_after=past)
    with pytest.raises(AttestationChainError, match="not valid now"):
        verify_chain(old, [intermediate.certificate], [root.certificate])


def _ecc_public(attributes: int, key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return (struct.pack(">HHI", tpm_format.ALG_ECC, 0x000B, attributes) + b"\x00\x00"  # authPolicy
            + struct.pack(">H", tpm_format.ALG_NULL)  # symmetric
            + struct.pack(">HH", 0x0018, 0x000B)  # scheme ECDSA-SHA256
            + struct.pack(">HH", 0x0003, tpm_format.ALG_NULL)  # curve P-256, kdf
            + b"\x00\x20" + numbers.x.to_bytes(32, "big") + b"\x00\x20" + numbers.y.to_bytes(32, "big"))


def test_tpm_public_and_attest_structures() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bits = tpm_format.ATTRIBUTE_BITS
    area = _ecc_public(bits["fixedTPM"] | bits["fixedParent"] | bits["sensitiveDataOrigin"] | bits["sign"], key)
    public = tpm_format.parse_public(area)
    assert public.attribute_names == ["fixedTPM", "fixedParent", "sensitiveDataOrigin", "sign"]
    assert public.missing() == [] and spki_of(public.public_key) == spki_of(key.public_key())
    imported = tpm_format.parse_public(_ecc_public(bits["userWithAuth"] | bits["sign"], key))
    assert imported.missing() == ["fixedTPM", "fixedParent", "sensitiveDataOrigin"]
    name = tpm_format.object_name(area)
    assert name == b"\x00\x0b" + hashlib.sha256(area).digest()
    info = (struct.pack(">IH", tpm_format.TPM_GENERATED_VALUE, tpm_format.TPM_ST_ATTEST_CERTIFY)
            + b"\x00\x02ab" + b"\x00\x00" + b"\x00" * 17 + struct.pack(">Q", 7)
            + struct.pack(">H", len(name)) + name + b"\x00\x00")
    attest = tpm_format.parse_attest(info)
    assert (attest.magic, attest.type, attest.qualified_signer, attest.firmware_version, attest.attested_name) == (
        tpm_format.TPM_GENERATED_VALUE, tpm_format.TPM_ST_ATTEST_CERTIFY, b"ab", 7, name)
    with pytest.raises(ValueError):
        tpm_format.parse_public(area[:-3])


def test_statement_round_trip_and_rejects() -> None:
    data = tpm_format.statement_json(alg=-7, x5c=[b"\x01"], sig=b"s", cert_info=b"c", pub_area=b"p")
    fields = tpm_format.parse_statement(data)
    assert fields == {"alg": -7, "x5c": [b"\x01"], "sig": b"s", "certInfo": b"c", "pubArea": b"p"}
    for bad in (b"{}", b'{"fmt": "packed"}', b"not json", b'{"fmt": "tpm", "attStmt": {"ver": "1.2"}}'):
        with pytest.raises(ValueError):
            tpm_format.parse_statement(bad)

