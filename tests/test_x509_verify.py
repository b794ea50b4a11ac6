"""The one check of a Roles Anywhere signature (x509.verify_signature) that the emulator, the
PKCS#11 signer's pairing check and doctor share: each key type's scheme, from a certificate or
from a public key, and False (never an exception) for a wrong signature, message, key or
algorithm."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import Encoding

from rolesanywhere_hsm._dev.devpki import CertificateAuthority, new_private_key
from rolesanywhere_hsm.sigv4x509 import ALGORITHM_ECDSA, ALGORITHM_MLDSA, ALGORITHM_RSA
from rolesanywhere_hsm.x509 import public_key_type, verify_signature

MESSAGE = b"AWS4-X509-...\n20260101T000000Z\nscope\nhash"


def _sign(key, kind: str, message: bytes) -> bytes:  # noqa: ANN001
    if kind.startswith("rsa"):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if kind.startswith("p"):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    return key.sign(message)


@pytest.mark.parametrize(("kind", "key_type", "algorithm", "other"), [
    ("rsa2048", "RSA", ALGORITHM_RSA, ALGORITHM_ECDSA),
    ("p256", "EC", ALGORITHM_ECDSA, ALGORITHM_RSA),
    ("p384", "EC", ALGORITHM_ECDSA, ALGORITHM_MLDSA),  # SHA-256 whatever the curve
    ("mldsa44", "ML-DSA", ALGORITHM_MLDSA, ALGORITHM_ECDSA),
])
def test_each_key_type_verifies_its_scheme_only(kind: str, key_type: str, algorithm: str, other: str,
                                               intermediate_ca: CertificateAuthority) -> None:
    key = new_private_key(kind)
    der = intermediate_ca.issue_leaf(key.public_key(), common_name=kind).public_bytes(Encoding.DER)
    signature = _sign(key, kind, MESSAGE)
    assert public_key_type(key.public_key()) == key_type
    assert verify_signature(der, MESSAGE, signature)
    assert verify_signature(key.public_key(), MESSAGE, signature, algorithm)
    assert not verify_signature(der, MESSAGE, signature, other)
    assert not verify_signature(der, MESSAGE + b"!", signature)
    assert not verify_signature(der, MESSAGE, signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not verify_signature(der, MESSAGE, b"")
    stranger = new_private_key(kind)
    assert not verify_signature(stranger.public_key(), MESSAGE, signature)


def test_rsa_pss_and_sha384_are_not_what_the_service_accepts() -> None:
    key = new_private_key("rsa2048")
    pss = key.sign(MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    assert not verify_signature(key.public_key(), MESSAGE, pss)
    ec_key = new_private_key("p256")
    sha384 = ec_key.sign(MESSAGE, ec.ECDSA(hashes.SHA384()))
    assert not verify_signature(ec_key.public_key(), MESSAGE, sha384)


def test_ensure_current_names_the_wrong_date_on_plain_data() -> None:
    import datetime as dt

    from rolesanywhere_hsm.errors import CertificateError
    from rolesanywhere_hsm.x509 import CertificateInfo, ensure_current

    start, end = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2026, 6, 30, 12, tzinfo=dt.timezone.utc)
    info = CertificateInfo(der=b"", serial=0x1F, key_type="EC", subject="CN=w", issuer="CN=ca",
                           public_key_info=b"", curve="secp256r1", key_bits=256, is_ca=False,
                           subject_raw=b"", issuer_raw=b"", not_before=start, not_after=end)
    ensure_current(info, start)
    ensure_current(info, end)
    with pytest.raises(CertificateError, match=r"CN=w \(serial 1f\) expired on 2026-06-30 12:00:00Z") as raised:
        ensure_current(info, end + dt.timedelta(seconds=1))
    assert "doctor" in (raised.value.hint or "")
    with pytest.raises(CertificateError, match="not valid before 2026-01-01 00:00:00Z"):
        ensure_current(info, start - dt.timedelta(seconds=1))
    ensure_current(info, start - dt.timedelta(days=1), refuse_future=False)
