"""The acceptance rules, on plain data: a CertificateInfo built by hand and the key's public
facts; no file, token or TPM. Each rule's finding carries its code and the setting."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto.core import OctetString
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rolesanywhere_hsm.errors import CertificateError, KeyLoadError
from rolesanywhere_hsm.signers import acceptance
from rolesanywhere_hsm.signers.acceptance import KeyFacts
from rolesanywhere_hsm.x509 import CertificateInfo

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)


def spki(key: object) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def info(*, key: object = EC_KEY, key_type: str = "EC", is_ca: bool = False,
         not_before: dt.datetime = NOW - dt.timedelta(days=1),
         not_after: dt.datetime = NOW + dt.timedelta(days=90), serial: int = 0x1F) -> CertificateInfo:
    return CertificateInfo(der=b"", serial=serial, key_type=key_type, subject="CN=workload",
                           issuer="CN=ca", public_key_info=spki(key), curve="secp256r1",
                           key_bits=256, is_ca=is_ca, subject_raw=b"", issuer_raw=b"",
                           not_before=not_before, not_after=not_after)


def test_a_good_leaf_and_its_key_give_no_finding() -> None:
    assert acceptance.check(info(), KeyFacts("file", spki=spki(EC_KEY)), now=NOW) == []


def test_every_leaf_problem_is_a_finding_not_only_the_first() -> None:
    findings = acceptance.leaf_findings(
        info(is_ca=True, key_type="DSA", not_after=NOW - dt.timedelta(days=1)), now=NOW,
        setting="cert-selector")
    assert [type(f.error) for f in findings] == [CertificateError] * 3
    assert [f.code for f in findings] == ["RAH-CERT-001"] * 3
    assert {f.setting for f in findings} == {"cert-selector"}
    assert "is a CA certificate" in findings[0].message
    assert findings[1].message == "Roles Anywhere does not accept DSA keys."
    assert "expired on" in findings[2].message


def test_dates_are_not_checked_when_asked_not_to() -> None:
    expired = info(not_after=NOW - dt.timedelta(days=1))
    assert acceptance.leaf_findings(expired, dates=False, now=NOW) == []
    assert "not valid before" in acceptance.leaf_findings(
        info(not_before=NOW + dt.timedelta(days=1)), now=NOW)[0].message


@pytest.mark.parametrize(("kind", "words", "hint"), [
    ("file", "The private key does not belong to the certificate for CN=workload (serial 1f).",
     "Pass the key that was used to request this certificate."),
    ("tpmkey", "The TPM key k.tss does not belong to the certificate for CN=workload (serial 1f).",
     "Pass the certificate issued for this key's public part."),
])
def test_a_key_of_another_certificate_is_a_finding_about_the_key(kind: str, words: str, hint: str) -> None:
    [finding] = acceptance.check(info(), KeyFacts(kind, spki=spki(OTHER_EC_KEY), path="k.tss"), now=NOW)
    assert isinstance(finding.error, KeyLoadError)
    assert (finding.code, finding.setting, finding.message, finding.hint) == (
        "RAH-KEY-001", "private-key", words, hint)


def test_leaf_findings_come_before_the_key_s() -> None:
    findings = acceptance.check(info(is_ca=True), KeyFacts("file", spki=spki(OTHER_EC_KEY)), now=NOW)
    assert [f.setting for f in findings] == ["certificate", "private-key"]


def test_a_token_key_of_another_type_is_refused_before_its_value_is_compared() -> None:
    facts = KeyFacts("pkcs11", key_type="RSA", token_value=b"\x04junk", criteria="id=01",
                     token_label="t")
    [finding] = acceptance.check(info(), facts, now=NOW)
    assert finding.message == "The key id=01 on token 't' is RSA but the certificate holds an EC key."


def test_a_token_value_is_compared_in_both_ec_point_forms_and_as_an_rsa_modulus() -> None:
    point = bytes(asn1_keys.PublicKeyInfo.load(spki(EC_KEY))["public_key"])
    for value in (point, OctetString(point).dump()):
        assert acceptance.pairing_findings(info(), KeyFacts("pkcs11", token_value=value)) == []
    other = bytes(asn1_keys.PublicKeyInfo.load(spki(OTHER_EC_KEY))["public_key"])
    [finding] = acceptance.pairing_findings(info(), KeyFacts("pkcs11", token_value=other, criteria="id=01",
                                                             token_label="t"))
    # Compared on public values, the message says so (the signature message is for a key
    # that shows none: TOKEN_KEY_MISMATCH).
    assert finding.message == ("The key id=01 on token 't' does not belong to the certificate for "
                               "CN=workload (serial 1f): the token shows another public key for it.")
    assert finding.code == "RAH-KEY-001" and finding.setting == "private-key"
    modulus = RSA_KEY.public_key().public_numbers().n
    rsa_info = info(key=RSA_KEY, key_type="RSA")
    assert acceptance.same_token_value(modulus.to_bytes(256, "big"), rsa_info)
    assert not acceptance.same_token_value((modulus + 2).to_bytes(256, "big"), rsa_info)


def test_no_public_value_known_means_nothing_to_compare() -> None:
    assert acceptance.pairing_findings(info(), KeyFacts("pkcs11")) == []


def test_a_renewal_for_another_key_is_refused_before_its_leaf_rules() -> None:
    current = info()
    [finding] = acceptance.renewal_findings(current, info(key=OTHER_EC_KEY, is_ca=True, serial=0xAB))
    assert finding.message == "The renewed certificate (serial ab) is for another key than the one in use."
    assert finding.code == "RAH-KEY-001"
    renewed_ca = acceptance.renewal_findings(current, info(is_ca=True))
    assert "is a CA certificate" in renewed_ca[0].message
    with pytest.raises(CertificateError, match="is a CA certificate"):
        acceptance.raise_first(renewed_ca)
    acceptance.raise_first([])


def test_a_token_public_key_object_is_judged_by_its_type_then_its_value() -> None:
    """locate's check of the public key object with the key's CKA_ID: no object, or one that
    shows no value, says nothing (unlock checks later); another type or another point is a
    RAH-KEY-001 finding about the setting that selected the key."""
    from rolesanywhere_hsm.signers.pkcs11.pairing import public_object_findings

    own = bytes(asn1_keys.PublicKeyInfo.load(spki(EC_KEY))["public_key"])
    other = bytes(asn1_keys.PublicKeyInfo.load(spki(OTHER_EC_KEY))["public_key"])

    def judged(public: tuple[str, bytes | None] | None) -> list[str]:
        found = public_object_findings(public, info(), criteria="id=01", token_label="t",
                                       setting="certificate")
        assert all(f.code == "RAH-KEY-001" and f.setting == "certificate" for f in found)
        return [f.message for f in found]

    assert judged(None) == [] and judged(("EC", None)) == []
    assert judged(("EC", own)) == [] and judged(("EC", OctetString(own).dump())) == []
    assert judged(("RSA", None)) == ["The key id=01 on token 't' is RSA but the certificate holds an EC key."]
    [mismatch] = judged(("EC", other))
    assert mismatch.startswith("The key id=01 on token 't' does not belong to the certificate for CN=workload")
