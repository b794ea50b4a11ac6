"""Does a key on the token belong to a certificate? Compared on public values only.

The private key is never read: we compare the certificate's public key with CKA_MODULUS /
CKA_EC_POINT, which PKCS#11 lets anyone read (section 4.9), on the private key object or on
the public key object with the same CKA_ID. When a token shows neither, the signer checks its
first real signature instead (no extra signature is ever made).
"""

from __future__ import annotations

import contextlib
from typing import Any

from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from rolesanywhere_hsm import x509 as _x509
from rolesanywhere_hsm.signers.acceptance import TOKEN_KEY_MISMATCH, same_token_value

__all__ = ["MISMATCH", "same_public_key", "token_public_value"]

MISMATCH = TOKEN_KEY_MISMATCH


def same_public_key(token_value: bytes, info: _x509.CertificateInfo) -> bool:
    """The token's CKA_MODULUS / CKA_EC_POINT against the certificate's key (the rule is
    `acceptance.same_token_value`)."""
    return same_token_value(token_value, info)


def _public_attribute(obj: Any, attribute: Any) -> bytes | None:
    with contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive, p11.FunctionFailed,
                             p11.GeneralError):
        value = obj[attribute]
        if value:
            return bytes(value)
    return None


def token_public_value(session: Any, key: Any, key_type: str) -> bytes | None:
    """The key's public half as the token knows it, or None when the token exposes none:
    CKA_MODULUS / CKA_EC_POINT of the private key, else of the public key object with the
    same CKA_ID. None for ML-DSA keys: their first signature is verified instead."""
    if key_type not in ("RSA", "EC"):
        return None
    attribute = Attribute.MODULUS if key_type == "RSA" else Attribute.EC_POINT
    value = _public_attribute(key, attribute)
    if value is not None:
        return value
    ident = key[Attribute.ID]
    if not ident:
        return None
    publics = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: ident}))
    if len(publics) != 1:
        return None
    return _public_attribute(publics[0], attribute)
