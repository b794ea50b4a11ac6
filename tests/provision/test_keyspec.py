"""The pure rules behind keygen and import-certificate: key types, ids, public keys compared."""

from __future__ import annotations

import pytest
from asn1crypto.core import OctetString
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm._dev.devpki import new_private_key
from rolesanywhere_hsm.errors import TokenError, UsageError
from rolesanywhere_hsm.provision import keyspec


def spki(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("name", "key_type", "bits"), [
    ("ec-p256", "EC", 256), ("EC-P384", "EC", 384), ("rsa-2048", "RSA", 2048), ("rsa-4096", "RSA", 4096),
])
def test_key_types_offered(name: str, key_type: str, bits: int) -> None:
    spec = keyspec.parse_key_type(name)
    assert (spec.key_type, spec.bits) == (key_type, bits)


@pytest.mark.parametrize("name", ["ec-p521", "ed25519", "rsa-1024", ""])
def test_other_key_types_are_refused_with_the_list(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        keyspec.parse_key_type(name)
    assert "ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096" in caught.value.diagnostics()


@pytest.mark.parametrize(("text", "value"), [
    ("01", b"\x01"), ("0x01", b"\x01"), ("%a1%B2", b"\xa1\xb2"), ("a1:b2:c3", b"\xa1\xb2\xc3"), (" 0a ", b"\x0a"),
])
def test_key_id_is_hex_never_text(text: str, value: bytes) -> None:
    assert keyspec.parse_key_id(text) == value


@pytest.mark.parametrize("text", ["", "1", "zz", "0x", "%", "00" * 65])
def test_bad_key_ids_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--id"):
        keyspec.parse_key_id(text)


def test_new_key_id_skips_ids_in_use() -> None:
    draws = iter([b"\x01" * 8, b"\x02" * 8, b"\x03" * 8])
    taken = {b"\x01" * 8, b"\x02" * 8}
    assert keyspec.new_key_id(taken.__contains__, lambda n: next(draws)) == b"\x03" * 8


def test_new_key_id_gives_up_on_a_token_that_says_every_id_is_taken() -> None:
    with pytest.raises(TokenError) as caught:
        keyspec.new_key_id(lambda _: True)
    assert "--id" in caught.value.diagnostics()


def test_new_key_ids_are_8_random_bytes() -> None:
    ids = {keyspec.new_key_id(lambda _: False) for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 8 for i in ids)


def test_check_generation_names_the_missing_mechanism() -> None:
    spec = keyspec.parse_key_type("ec-p256")
    with pytest.raises(TokenError, match="cannot generate EC keys .*CKM_EC_KEY_PAIR_GEN"):
        keyspec.check_generation(spec, {0x0000, 0x1041}, None, "card")
    keyspec.check_generation(spec, {0x1040}, None, "card")


def test_check_generation_refuses_sizes_out_of_the_tokens_range() -> None:
    rsa4096 = keyspec.parse_key_type("rsa-4096")
    with pytest.raises(TokenError, match="1024 to 3072 bits, not 4096"):
        keyspec.check_generation(rsa4096, {0x0000}, (1024, 3072), "tpm")
    keyspec.check_generation(rsa4096, {0x0000}, (0, 0), "tpm")  # module does not say


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "p384"])
def test_spki_from_token_attributes_equals_the_keys_own(kind: str) -> None:
    key = new_private_key(kind)
    expected = spki(key)
    if kind.startswith("rsa"):
        numbers = key.public_key().public_numbers()
        built = keyspec.rsa_spki(numbers.n.to_bytes(256, "big"), b"\x01\x00\x01")
    else:
        curve = {"p256": "secp256r1", "p384": "secp384r1"}[kind]
        from asn1crypto.keys import ECDomainParameters

        params = ECDomainParameters("named", curve).dump()
        point = key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
        built = keyspec.ec_spki(params, OctetString(point).dump())
        assert keyspec.ec_spki(params, point) == built  # modules that give the bare point
    assert built == expected
    assert keyspec.same_public_key(built, expected)


def test_different_keys_do_not_compare_equal() -> None:
    a, b = new_private_key("p256"), new_private_key("p256")
    assert not keyspec.same_public_key(spki(a), spki(b))
    assert not keyspec.same_public_key(spki(a), spki(new_private_key("rsa2048")))


@given(st.binary(min_size=0, max_size=80))
def test_ec_point_attribute_is_a_point_or_an_error(value: bytes) -> None:
    try:
        point = keyspec.ec_point_from_attribute(value, 32)
    except TokenError:
        return
    assert len(point) == 65 and point[0] == 4


def test_public_key_description() -> None:
    assert keyspec.public_key_description(spki(new_private_key("p384"))) == "EC secp384r1"
    assert keyspec.public_key_description(spki(ec.generate_private_key(ec.SECP256R1()))) == "EC secp256r1"


@pytest.mark.parametrize(("library", "token", "piv"), [
    ("Yubico (www.yubico.com)", "Yubico (www.yubico.com)", True),
    ("OpenSC Project", "piv_II", True),
    ("SoftHSM", "SoftHSM project", False),
    ("tpm2-software.github.io", "IBM", False),
])
def test_piv_cards_are_recognised(library: str, token: str, piv: bool) -> None:
    assert keyspec.is_piv_card(library.ljust(32), token.ljust(32)) is piv
