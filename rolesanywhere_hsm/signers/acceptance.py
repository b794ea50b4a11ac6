"""The acceptance rules every key kind shares, written once: PURE (plain data in, findings out).

What the service would refuse anyway is refused here first, with a clearer message, and the
same way for a token key, a key file and a TPM key file:

- the leaf is not a CA certificate;
- its key is of a type Roles Anywhere signs with (RSA, EC, ML-DSA);
- it is inside its validity (the service says only "Untrusted signing certificate");
- the key is the certificate's: its type, and its public value wherever the public values
  allow the comparison (a key file's or a TPM key file's public part, a token's CKA_MODULUS /
  CKA_EC_POINT, a renewed certificate against the one in use).

`check` returns every problem it sees as a `Finding` (our error, with its stable code and the
setting it is about) instead of raising at the first: `locate` collects them for `doctor`,
and `raise_first` is what a signer's constructor or `replace_certificate` does with them.
The messages are the ones each kind always gave (docs/errors.md pins their codes); only where
they are decided moved here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from rolesanywhere_hsm.errors import CertificateError, KeyLoadError, RolesAnywhereError
from rolesanywhere_hsm.record import Record
from rolesanywhere_hsm.signers.locate import Finding, about
from rolesanywhere_hsm.x509 import CertificateInfo, algorithm_for_key_type, ensure_current

__all__ = [
    "TOKEN_KEY_MISMATCH",
    "KeyFacts",
    "check",
    "key_findings",
    "key_type_findings",
    "leaf_findings",
    "pairing_findings",
    "raise_first",
    "renewal_findings",
    "same_token_value",
]

# The first signature of a token key that showed no public value did not verify.
TOKEN_KEY_MISMATCH = (
    "The private key on the token does not belong to the certificate (its signature does not "
    "verify with the certificate's public key).",
)


class KeyFacts(Record):
    """What is known in public about the key a certificate is for, and how to name it.

    `kind` is "file", "tpmkey" or "pkcs11" (it picks the message a mismatch gives). `spki` is
    the key's SubjectPublicKeyInfo (DER) when the key kind has one (a key file, a TPM key
    file's public area); `token_value` a token's CKA_MODULUS / CKA_EC_POINT; `key_type` the
    token's CKA_KEY_TYPE in words ("RSA", "EC" or "other"). None: not known, not compared."""

    __slots__ = ("kind", "spki", "token_value", "key_type", "path", "criteria", "token_label")
    _compared = __slots__

    kind: str
    spki: bytes | None
    token_value: bytes | None
    key_type: str | None
    path: str  # a key file's or TPM key file's path, for the message
    criteria: str  # a token key's criteria (id=, object=), for the message
    token_label: str

    def __init__(self, kind: str, *, spki: bytes | None = None, token_value: bytes | None = None,
                 key_type: str | None = None, path: str = "", criteria: str = "",
                 token_label: str = "") -> None:
        self._set(kind=kind, spki=spki, token_value=token_value, key_type=key_type, path=path,
                  criteria=criteria, token_label=token_label)


def _found(error: RolesAnywhereError, setting: str) -> Finding:
    return Finding(about(error, setting))


def leaf_findings(info: CertificateInfo, *, dates: bool = True, now: dt.datetime | None = None,
                  setting: str = "certificate") -> list[Finding]:
    """Not a CA, a key type we sign with, inside its validity (when `dates`): every one that
    fails, in that order."""
    findings = []
    if info.is_ca:
        findings.append(_found(CertificateError(
            f"The certificate for {info.subject or 'an empty subject'} is a CA certificate; "
            "Roles Anywhere needs an end-entity certificate.",
            hint="Pass the workload's own certificate with --certificate.",
        ), setting))
    try:
        algorithm_for_key_type(info.key_type)
    except RolesAnywhereError as exc:
        findings.append(_found(exc, setting))
    if dates:
        try:
            ensure_current(info, now)
        except RolesAnywhereError as exc:
            findings.append(_found(exc, setting))
    return findings


def key_type_findings(info: CertificateInfo, key: KeyFacts, *,
                      setting: str = "private-key") -> list[Finding]:
    """The key's type is the certificate's (known for a token key before its value is)."""
    if key.key_type is None or key.key_type == info.key_type:
        return []
    return [_found(KeyLoadError(
        f"The key {key.criteria or ''} on token {key.token_label!r} is {key.key_type} but the "
        f"certificate holds an {info.key_type} key.",
        hint="Select the key that belongs to the certificate (same id=).",
    ), setting)]


def same_token_value(token_value: bytes, info: CertificateInfo) -> bool:
    """A token's CKA_MODULUS / CKA_EC_POINT against the certificate's key. CKA_EC_POINT is a
    DER OCTET STRING holding the point (PKCS#11 section 2.3.3) but some modules give the bare
    point: both forms are accepted. False for other key types (no such attribute)."""
    from asn1crypto import keys
    from asn1crypto.core import OctetString

    spki = keys.PublicKeyInfo.load(info.public_key_info)
    if info.key_type == "RSA":
        return int.from_bytes(token_value, "big") == spki["public_key"].parsed["modulus"].native
    if info.key_type != "EC":
        return False
    point = bytes(spki["public_key"])
    return token_value in (point, OctetString(point).dump())


def _mismatch(info: CertificateInfo, key: KeyFacts) -> RolesAnywhereError:
    who = info.subject or "an empty subject"
    if key.kind == "tpmkey":
        return KeyLoadError(
            f"The TPM key {key.path} does not belong to the certificate for {who} "
            f"(serial {info.serial:x}).",
            hint="Pass the certificate issued for this key's public part.",
        )
    if key.kind == "pkcs11" and key.token_value is not None:
        return KeyLoadError(
            f"The key {key.criteria or '(the only key)'} on token {key.token_label!r} does not "
            f"belong to the certificate for {who} (serial {info.serial:x}): the token shows "
            "another public key for it.",
            hint="Select the key with the certificate's id=, or the certificate of this key.",
        )
    if key.kind == "pkcs11":
        return KeyLoadError(*TOKEN_KEY_MISMATCH[:1], hint="Select the key with the certificate's "
                            "id=, or the certificate of this key.")
    return KeyLoadError(
        f"The private key does not belong to the certificate for {who} (serial {info.serial:x}).",
        hint="Pass the key that was used to request this certificate.",
    )


def pairing_findings(info: CertificateInfo, key: KeyFacts, *,
                     setting: str = "private-key") -> list[Finding]:
    """The key's public value is the certificate's, where one is known (none known: nothing
    to say here; a token key is then checked on its first signature)."""
    if key.spki is not None:
        same = key.spki == info.public_key_info
    elif key.token_value is not None:
        same = same_token_value(key.token_value, info)
    else:
        return []
    return [] if same else [_found(_mismatch(info, key), setting)]


def key_findings(info: CertificateInfo, key: KeyFacts, *, setting: str = "private-key") -> list[Finding]:
    """The key's type, then (when the type is the certificate's) its public value."""
    return key_type_findings(info, key, setting=setting) or pairing_findings(info, key, setting=setting)


def check(info: CertificateInfo, key: KeyFacts | None = None, *, dates: bool = True,
          now: dt.datetime | None = None, certificate_setting: str = "certificate",
          key_setting: str = "private-key") -> list[Finding]:
    """Every acceptance rule for a leaf and (when given) the key it is for: the leaf rules,
    then the key's type, then its public value (not compared when the type already differs)."""
    findings = leaf_findings(info, dates=dates, now=now, setting=certificate_setting)
    if key is not None:
        findings += key_findings(info, key, setting=key_setting)
    return findings


def renewal_findings(current: CertificateInfo, renewed: CertificateInfo, *,
                     dates: bool = True) -> list[Finding]:
    """A renewed certificate swapped in without a restart: for the same key as the one in use
    (its public key is the current certificate's, which was checked against the key when the
    signer opened), then the leaf rules."""
    if renewed.public_key_info != current.public_key_info:
        return [_found(KeyLoadError(
            f"The renewed certificate (serial {renewed.serial:x}) is for another key than the "
            "one in use.",
            hint="Renew the certificate for the same key (a CSR from the key in use), or "
            "restart with the new pair.",
        ), "certificate")]
    return leaf_findings(renewed, dates=dates)


def raise_first(findings: Sequence[Finding]) -> None:
    """Raise the first finding's error (what a caller that stops at the first problem sees)."""
    if findings:
        raise findings[0].error
