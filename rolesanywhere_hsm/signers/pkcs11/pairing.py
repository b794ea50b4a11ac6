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
from rolesanywhere_hsm.signers import acceptance
from rolesanywhere_hsm.signers.acceptance import TOKEN_KEY_MISMATCH, same_token_value

__all__ = ["MISMATCH", "public_object_findings", "same_public_key", "token_public_value"]

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


def public_object_findings(session: Any, key_template: dict[Any, Any], info: _x509.CertificateInfo,
                           *, criteria: str, token_label: str, key_types: dict[Any, str],
                           setting: str) -> list[acceptance.Finding]:
    """The key against the certificate before any login, from the one public key object
    with the key's CKA_ID (PKCS#11's pairing convention; public objects are listed without a
    PIN): its type, then its CKA_MODULUS / CKA_EC_POINT. Nothing to say when the key is
    selected without an id, or the token shows no such object or more than one: the key is
    then checked after the login (`token_public_value`, else its first signature)."""
    ident = key_template.get(Attribute.ID)
    if not ident:
        return []
    publics = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: ident}))
    if len(publics) != 1:
        return []
    public = publics[0]
    key_type = None
    with contextlib.suppress(p11.AttributeTypeInvalid, p11.AttributeSensitive):
        key_type = key_types.get(public[Attribute.KEY_TYPE], "other")
    if key_type is None:
        return []
    facts = acceptance.KeyFacts("pkcs11", key_type=key_type, criteria=criteria, token_label=token_label)
    by_type = acceptance.key_type_findings(info, facts, setting=setting)
    if by_type or key_type not in ("RSA", "EC"):
        return by_type
    value = _public_attribute(public, Attribute.MODULUS if key_type == "RSA" else Attribute.EC_POINT)
    if value is None:
        return []
    return acceptance.pairing_findings(info, acceptance.KeyFacts(
        "pkcs11", token_value=value, criteria=criteria, token_label=token_label), setting=setting)
