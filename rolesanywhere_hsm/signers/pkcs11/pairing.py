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

__all__ = ["MISMATCH", "public_object", "public_object_findings", "same_public_key", "token_public_value"]

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


def public_object(session: Any, ident: bytes, key_types: dict[Any, str]) -> tuple[str, bytes | None] | None:
    """The one public key object with CKA_ID `ident`, as (its type in words, its CKA_MODULUS /
    CKA_EC_POINT or None): None when the token shows no such object or more than one.
    Public objects are listed without a login."""
    publics = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: ident}))
    if len(publics) != 1:
        return None
    public = publics[0]
    try:
        key_type = key_types.get(public[Attribute.KEY_TYPE], "other")
    except (p11.AttributeTypeInvalid, p11.AttributeSensitive):
        return None
    if key_type not in ("RSA", "EC"):
        return key_type, None
    return key_type, _public_attribute(public, Attribute.MODULUS if key_type == "RSA" else Attribute.EC_POINT)


def token_public_value(session: Any, key: Any, key_type: str, key_types: dict[Any, str],
                       known: tuple[str, bytes | None] | None = None) -> bytes | None:
    """The key's public half as the token knows it, or None when the token exposes none:
    CKA_MODULUS / CKA_EC_POINT of the private key, else of the public key object with the
    same CKA_ID (`known`: that object as locate already read it, when it did). None for
    ML-DSA keys: their first signature is verified instead."""
    if key_type not in ("RSA", "EC"):
        return None
    value = _public_attribute(key, Attribute.MODULUS if key_type == "RSA" else Attribute.EC_POINT)
    if value is not None:
        return value
    ident = key[Attribute.ID]
    if not ident:
        return None
    public = known if known is not None else public_object(session, bytes(ident), key_types)
    return public[1] if public is not None and public[0] == key_type else None


def public_object_findings(public: tuple[str, bytes | None] | None, info: _x509.CertificateInfo,
                           *, criteria: str, token_label: str, setting: str) -> list[acceptance.Finding]:
    """PURE: the key against the certificate before any login, from the public key object
    with the key's CKA_ID (PKCS#11's pairing convention): its type, then its value. Nothing to
    say without one (`public` None: the key is selected without an id, or the token shows no
    such object or several); the key is then checked after the login (`token_public_value`,
    else its first signature)."""
    if public is None:
        return []
    key_type, value = public
    return acceptance.key_findings(info, acceptance.KeyFacts(
        "pkcs11", key_type=key_type, token_value=value, criteria=criteria, token_label=token_label),
        setting=setting)
