"""The pure selection step, on plain snapshots: no module, no token, microseconds each."""

from __future__ import annotations

import pytest

from rolesanywhere_hsm.errors import SelectionError
from rolesanywhere_hsm.signers.pkcs11.inventory import selecting_uri
from rolesanywhere_hsm.signers.pkcs11.selection import (
    FLAG_LOGIN_REQUIRED,
    ObjectSnapshot,
    TokenSnapshot,
    matching_tokens,
    select_certificate,
    select_token,
)
from rolesanywhere_hsm.signers.pkcs11_uri import parse_pkcs11_uri

A = TokenSnapshot(slot_id=1, label="alpha", serial="1111", manufacturer="SoftHSM project")
B = TokenSnapshot(slot_id=2, label="beta", serial="2222", manufacturer="SoftHSM project")
B2 = TokenSnapshot(slot_id=3, label="beta", serial="3333", manufacturer="SoftHSM project")
FREE = TokenSnapshot(slot_id=4, label="", flags=FLAG_LOGIN_REQUIRED)  # not initialised
TOKENS = [A, B, B2, FREE]


def cert(token: TokenSnapshot, label: str, ident: bytes) -> ObjectSnapshot:
    return ObjectSnapshot(token, "cert", label, ident, value=f"{token.serial}/{label}".encode())


CERTS = [cert(A, "web", b"\x01"), cert(A, "mail", b"\x02"), cert(B, "ci", b"\x01"),
         cert(B2, "ci", b"\x01"), cert(B2, "ci-attestation", b"\x01")]


def uri(text: str):  # noqa: ANN201
    return parse_pkcs11_uri(text)


def test_one_token_by_label() -> None:
    assert select_token(TOKENS, uri("pkcs11:token=alpha"), "m.so") == A


def test_two_tokens_with_one_label_are_listed() -> None:
    with pytest.raises(SelectionError, match=r"2 tokens match token='beta'.*2222.*3333"):
        select_token(TOKENS, uri("pkcs11:token=beta"), "m.so")


def test_no_matching_token_names_those_present_but_not_the_free_slot() -> None:
    with pytest.raises(SelectionError, match="No token matches") as info:
        select_token(TOKENS, uri("pkcs11:token=gamma"), "m.so")
    assert "'alpha'" in str(info.value) and "slot 4" not in str(info.value)


def test_uninitialised_tokens_are_never_selected() -> None:
    assert matching_tokens(TOKENS, uri("pkcs11:")) == [A, B, B2]
    with pytest.raises(SelectionError, match="no initialised token"):
        select_token([FREE], uri("pkcs11:"), "m.so")


def test_without_token_attributes_every_token_is_searched_and_the_single_holder_wins() -> None:
    assert select_certificate(TOKENS, CERTS, uri("pkcs11:object=web"), "m.so").token == A
    assert select_certificate(TOKENS, CERTS, uri("pkcs11:object=mail"), "m.so").label == "mail"


def test_the_same_label_on_two_tokens_is_ambiguous_and_names_both_tokens() -> None:
    with pytest.raises(SelectionError, match=r"2 certificates match object='ci'") as info:
        select_certificate(TOKENS, CERTS, uri("pkcs11:object=ci"), "m.so")
    assert "2222" in str(info.value) and "3333" in str(info.value)
    assert "token= / serial=" in (info.value.hint or "")


def test_a_shared_id_is_ambiguous_on_one_token() -> None:
    with pytest.raises(SelectionError, match=r"2 certificates match id=%01") as info:
        select_certificate(TOKENS, CERTS, uri("pkcs11:serial=3333;id=%01"), "m.so")
    assert "ci-attestation" in str(info.value)


def test_nothing_matching_lists_what_the_token_holds() -> None:
    with pytest.raises(SelectionError, match="No certificate matches object='nope'") as info:
        select_certificate(TOKENS, CERTS, uri("pkcs11:token=alpha;object=nope"), "m.so")
    assert "'web'" in (info.value.hint or "") and "'mail'" in (info.value.hint or "")


def test_key_uri_and_certificate_uri_must_agree_on_the_token() -> None:
    with pytest.raises(SelectionError, match="different tokens"):
        select_certificate(TOKENS, CERTS, uri("pkcs11:token=alpha;object=web"), "m.so",
                           key_uri=uri("pkcs11:serial=2222"))
    found = select_certificate(TOKENS, CERTS, uri("pkcs11:object=ci"), "m.so",
                               key_uri=uri("pkcs11:serial=2222;id=%01"))
    assert found.token == B


@pytest.mark.parametrize("target", CERTS, ids=lambda c: f"{c.token.serial}-{c.label}")
def test_the_printed_uri_selects_exactly_its_certificate(target: ObjectSnapshot) -> None:
    printed = selecting_uri(target, CERTS, TOKENS, "/usr/lib/m.so")
    assert printed.module_path == "/usr/lib/m.so" and printed.type == "cert"
    assert select_certificate(TOKENS, CERTS, uri(printed.to_string()), "m.so") == target


def test_the_printed_uri_is_the_shortest() -> None:
    assert selecting_uri(CERTS[0], CERTS, TOKENS).to_string() == "pkcs11:token=alpha;type=cert;id=%01"
    assert "serial=3333" in selecting_uri(CERTS[3], CERTS, TOKENS).to_string()
    assert "object=ci-attestation" in selecting_uri(CERTS[4], CERTS, TOKENS).to_string()


def test_pairing_by_id_and_public_key() -> None:
    """pair_certificate on plain data: CKA_ID first, then the public value when the token
    shows one; private keys hidden before login are 'not listed', not 'none'."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from rolesanywhere_hsm._dev.devpki import CertificateAuthority
    from rolesanywhere_hsm.signers.pkcs11.inventory import KeyEntry, pair_certificate
    from rolesanywhere_hsm.x509 import certificate_info

    ca = CertificateAuthority.create("pairing test CA", "p256")
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    info = certificate_info(ca.issue_leaf(key.public_key(), common_name="leaf").public_bytes(Encoding.DER))
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    wrong = other.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    private = KeyEntry("private", "k", b"\x01", "EC", None, always_authenticate=True, needs_login=True)
    public = KeyEntry("public", "k", b"\x01", "EC", b"\x04\x41" + point)  # DER OCTET STRING form

    paired = pair_certificate(info, b"\x01", [private, public], private_keys_listed=True)
    assert (paired.private_key, paired.public_key, paired.always_authenticate) == ("paired", "paired", True)
    hidden = pair_certificate(info, b"\x01", [public], private_keys_listed=False)
    assert (hidden.private_key, hidden.public_key) == ("not listed", "paired")
    mismatched = pair_certificate(info, b"\x01", [KeyEntry("public", "k", b"\x01", "EC", wrong)], True)
    assert (mismatched.private_key, mismatched.public_key) == ("none", "mismatch")
    assert pair_certificate(info, b"\x02", [private, public], True).private_key == "none"
    assert pair_certificate(info, b"\x01", [KeyEntry("private", "k", b"\x01", "RSA", None)],
                            True).private_key == "mismatch"


def test_an_id_in_a_message_is_written_as_the_uri_printer_writes_it() -> None:
    """Upper-case hex (RFC 7512 / RFC 3986 normal form), so it can be pasted into id=."""
    from rolesanywhere_hsm.signers.pkcs11.selection import format_id
    from rolesanywhere_hsm.signers.pkcs11_uri import Pkcs11Uri

    ident = b"\x0a\xa1\xff"
    assert format_id(ident) == "%0A%A1%FF"
    assert Pkcs11Uri(id=ident).to_string() == f"pkcs11:id={format_id(ident)}"
    assert Pkcs11Uri(id=ident).object_criteria() == f"id={format_id(ident)}"
    assert format_id(b"") == "(empty)"
