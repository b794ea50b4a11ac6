"""The pure mechanism choice and the byte transformations around C_Sign (no token)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from hypothesis import given
from hypothesis import strategies as st

from rolesanywhere_hsm.errors import TokenSigningError
from rolesanywhere_hsm.signers.mechanisms import (
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_ML_DSA,
    CKM_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    choose_signing_spec,
    ecdsa_raw_to_der,
)

SOFTHSM_MECHANISMS = {CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS, CKM_ECDSA, 0x0D, 0x43}  # + PSS variants


def test_rsa_prefers_hashing_on_the_token() -> None:
    spec = choose_signing_spec("RSA", SOFTHSM_MECHANISMS, key_bits=2048)
    assert spec.mechanism == CKM_SHA256_RSA_PKCS
    assert spec.mechanism_name == "CKM_SHA256_RSA_PKCS"
    assert (spec.hash_on_host, spec.digest_info, spec.raw_to_der) == (False, False, False)
    assert spec.data_to_sign(b"msg") == b"msg"


def test_rsa_falls_back_to_raw_pkcs1_over_a_host_digest_info() -> None:
    spec = choose_signing_spec("RSA", {CKM_RSA_PKCS})
    assert spec.mechanism == CKM_RSA_PKCS
    assert (spec.hash_on_host, spec.digest_info, spec.raw_to_der) == (True, True, False)
    # What CKM_RSA_PKCS pads and signs must make a standard RSASSA-PKCS1-v1_5/SHA-256
    # signature: check with a software key doing the raw RSA operation on the DigestInfo.
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    data = spec.data_to_sign(b"message")
    n = key.private_numbers().public_numbers.n
    d = key.private_numbers().d
    k = (n.bit_length() + 7) // 8
    em = b"\x00\x01" + b"\xff" * (k - len(data) - 3) + b"\x00" + data
    signature = pow(int.from_bytes(em, "big"), d, n).to_bytes(k, "big")
    key.public_key().verify(signature, b"message", padding.PKCS1v15(), hashes.SHA256())


def test_ec_hashes_on_host_and_converts_to_der() -> None:
    spec = choose_signing_spec("EC", SOFTHSM_MECHANISMS, curve="secp256r1")
    assert spec.mechanism == CKM_ECDSA
    assert (spec.hash_on_host, spec.digest_info, spec.raw_to_der) == (True, False, True)
    assert spec.data_to_sign(b"m") == hashlib.sha256(b"m").digest()


def test_ec_prefers_host_hash_even_when_ecdsa_sha256_is_offered() -> None:
    assert choose_signing_spec("EC", {CKM_ECDSA, CKM_ECDSA_SHA256}).mechanism == CKM_ECDSA


def test_ec_uses_ecdsa_sha256_when_it_is_all_there_is() -> None:
    spec = choose_signing_spec("EC", {CKM_ECDSA_SHA256})
    assert (spec.mechanism, spec.hash_on_host, spec.raw_to_der) == (CKM_ECDSA_SHA256, False, True)


@pytest.mark.parametrize(("key_type", "offered", "needs"), [
    ("RSA", {CKM_ECDSA, 0x0D}, "CKM_SHA256_RSA_PKCS or CKM_RSA_PKCS"),
    ("EC", {CKM_RSA_PKCS}, "CKM_ECDSA or CKM_ECDSA_SHA256"),
    ("EC", set(), "CKM_ECDSA"),
])
def test_no_usable_mechanism_is_a_clear_error(key_type: str, offered: set[int], needs: str) -> None:
    with pytest.raises(TokenSigningError, match=needs):
        choose_signing_spec(key_type, offered)


def test_unsupported_key_type() -> None:
    with pytest.raises(TokenSigningError, match="DSA"):
        choose_signing_spec("DSA", {CKM_ECDSA})


def test_spec_is_frozen() -> None:
    spec = choose_signing_spec("EC", {CKM_ECDSA})
    with pytest.raises(AttributeError):
        spec.mechanism = CKM_RSA_PKCS  # type: ignore[misc]


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_raw_to_der_matches_cryptography(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    der = key.sign(b"message", ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    size = (curve.key_size + 7) // 8
    raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    assert ecdsa_raw_to_der(raw) == der
    key.public_key().verify(ecdsa_raw_to_der(raw), b"message", ec.ECDSA(hashes.SHA256()))


@given(st.integers(1, 2**521 - 1), st.integers(1, 2**521 - 1))
def test_raw_to_der_round_trips_any_integers(r: int, s: int) -> None:
    raw = r.to_bytes(66, "big") + s.to_bytes(66, "big")
    assert utils.decode_dss_signature(ecdsa_raw_to_der(raw)) == (r, s)
    assert ecdsa_raw_to_der(raw) == utils.encode_dss_signature(r, s)


def test_raw_signature_of_odd_length_is_refused() -> None:
    with pytest.raises(TokenSigningError, match="even length"):
        ecdsa_raw_to_der(b"\x01\x02\x03")


def test_ml_dsa_signs_the_message_itself_with_ckm_ml_dsa() -> None:
    import pkcs11

    spec = choose_signing_spec("ML-DSA", SOFTHSM_MECHANISMS | {CKM_ML_DSA, 0x1F}, parameter_set="ML-DSA-65")
    assert spec.mechanism == CKM_ML_DSA == pkcs11.Mechanism.ML_DSA  # python-pkcs11 agrees on 0x1d
    assert spec.mechanism_name == "CKM_ML_DSA"
    assert (spec.hash_on_host, spec.digest_info, spec.raw_to_der) == (False, False, False)
    assert spec.data_to_sign(b"string to sign") == b"string to sign"
    assert spec.wire_signature(b"sig") == b"sig"


def test_ml_dsa_without_the_mechanism_names_it() -> None:
    # SoftHSM 2.6 offers RSA and EC only; HashML-DSA (0x1f) alone is not enough either.
    with pytest.raises(TokenSigningError, match="ML-DSA-44 key .*CKM_ML_DSA.*PKCS#11 3.2"):
        choose_signing_spec("ML-DSA", SOFTHSM_MECHANISMS | {0x1F}, parameter_set="ML-DSA-44")


# -- sign-string --digest on a token ---------------------------------------------------------

from rolesanywhere_hsm.signers import mechanisms as _m  # noqa: E402


@pytest.mark.parametrize("digest", ["SHA384", "SHA512"])
def test_rsa_digest_prefers_the_token_mechanism_then_a_host_digest_info(digest: str) -> None:
    base = _m.choose_signing_spec("RSA", {_m.CKM_SHA256_RSA_PKCS, _m.CKM_RSA_PKCS})
    token_mech = {"SHA384": _m.CKM_SHA384_RSA_PKCS, "SHA512": _m.CKM_SHA512_RSA_PKCS}[digest]
    on_token = _m.spec_for_digest(base, digest, {token_mech, _m.CKM_RSA_PKCS})
    assert (on_token.mechanism, on_token.hash_on_host, on_token.digest) == (token_mech, False, digest)
    assert on_token.data_to_sign(b"m") == b"m"
    raw = _m.spec_for_digest(base, digest, {_m.CKM_SHA256_RSA_PKCS, _m.CKM_RSA_PKCS})
    assert (raw.mechanism, raw.hash_on_host, raw.digest_info) == (_m.CKM_RSA_PKCS, True, True)
    # What CKM_RSA_PKCS gets is exactly the DigestInfo PKCS#1 v1.5 with that hash signs.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    algorithm = {"SHA384": hashes.SHA384(), "SHA512": hashes.SHA512()}[digest]
    signature = key.sign(b"message", padding.PKCS1v15(), algorithm)
    assert key.public_key().recover_data_from_signature(signature, padding.PKCS1v15(), None) == \
        raw.data_to_sign(b"message")
    with pytest.raises(TokenSigningError, match=f"CKM_{digest}_RSA_PKCS or CKM_RSA_PKCS"):
        _m.spec_for_digest(base, digest, {_m.CKM_SHA256_RSA_PKCS})


@pytest.mark.parametrize("digest", ["SHA384", "SHA512"])
def test_ec_digest_hashes_on_the_host(digest: str) -> None:
    base = _m.choose_signing_spec("EC", {_m.CKM_ECDSA})
    spec = _m.spec_for_digest(base, digest, {_m.CKM_ECDSA})
    assert spec.data_to_sign(b"m") == hashlib.new(digest.lower(), b"m").digest() and spec.raw_to_der
    token_mech = {"SHA384": _m.CKM_ECDSA_SHA384, "SHA512": _m.CKM_ECDSA_SHA512}[digest]
    only = _m.spec_for_digest(_m.choose_signing_spec("EC", {_m.CKM_ECDSA_SHA256}), digest, {token_mech})
    assert (only.mechanism, only.data_to_sign(b"m")) == (token_mech, b"m")
    with pytest.raises(TokenSigningError, match="no mechanism to sign"):
        _m.spec_for_digest(base, digest, {_m.CKM_ECDSA_SHA256})


def test_digest_leaves_sha256_and_ml_dsa_specs_alone() -> None:
    rsa_spec = _m.choose_signing_spec("RSA", {_m.CKM_SHA256_RSA_PKCS})
    assert _m.spec_for_digest(rsa_spec, "SHA256", set()) is rsa_spec
    ml = _m.choose_signing_spec("ML-DSA", {_m.CKM_ML_DSA})
    assert _m.spec_for_digest(ml, "SHA512", set()) is ml
    with pytest.raises(TokenSigningError, match="Unknown digest"):
        _m.spec_for_digest(rsa_spec, "MD5", set())
