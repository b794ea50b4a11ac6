"""`import-certificate`: store a CA-issued certificate on the token beside its key.

The certificate object gets the key's CKA_ID and label (so `pkcs11:...;id=...` finds both, and
`credential-process --certificate <its URI>` finds the key by the certificate's CKA_ID) and
the CKA_SUBJECT, CKA_ISSUER and CKA_SERIAL_NUMBER that other tools search by. A certificate
whose public key is not the key's is refused before anything is written. CA certificates
from `--chain` are stored too (each once), labelled with their subject's CN.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkcs11 import Attribute, CertificateType, ObjectClass

from rolesanywhere_hsm import x509 as _x509
from rolesanywhere_hsm.errors import CertificateError, UsageError
from rolesanywhere_hsm.provision import keyspec
from rolesanywhere_hsm.provision.token import ProvisioningSession, open_token, parse_token_uri
from rolesanywhere_hsm.signers.base import SecretCallback

from rolesanywhere_hsm.signers.pkcs11.error_mapping import mapped_errors as _mapped_errors
from rolesanywhere_hsm.signers.pkcs11.selection import format_id as _hex_id

log = logging.getLogger("rolesanywhere_hsm.provision")

__all__ = ["ImportedCertificates", "import_certificate"]


@dataclass(frozen=True)
class ImportedCertificates:
    """The URI of the leaf certificate on the token, and of each CA certificate stored."""

    uri: str
    chain_uris: tuple[str, ...]
    already_present: bool  # the same certificate was on the token already: nothing written


def _certificate_attributes(der: bytes, label: str, ident: bytes) -> dict[Any, Any]:
    """CKA_* of an X.509 certificate object. No CKA_CERTIFICATE_CATEGORY: python-pkcs11
    with that attribute crashed the interpreter on SoftHSM 2.6.1."""
    from asn1crypto import x509

    cert = x509.Certificate.load(der)
    tbs = cert["tbs_certificate"]
    return {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.ID: ident,
        Attribute.LABEL: label,
        Attribute.SUBJECT: tbs["subject"].dump(),
        Attribute.ISSUER: tbs["issuer"].dump(),
        Attribute.SERIAL_NUMBER: tbs["serial_number"].dump(),
        Attribute.VALUE: der,
    }


def _ca_label_and_id(der: bytes) -> tuple[str, bytes]:
    """A CA certificate's label (its CN, else its subject) and CKA_ID: the SHA-1 of its
    public key bits, RFC 5280 section 4.2.1.2 method 1, as OpenSC and p11tool choose ids."""
    from asn1crypto import x509

    cert = x509.Certificate.load(der)
    spki = cert["tbs_certificate"]["subject_public_key_info"]
    ident = hashlib.sha1(bytes(spki["public_key"])).digest()  # noqa: S324 (an identifier)
    label = cert.subject.native.get("common_name") or cert.subject.human_friendly
    return (label if isinstance(label, str) else str(label)), ident


def _certificates_with_id(token: ProvisioningSession, ident: bytes) -> list[Any]:
    return token.objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: ident})


def _check_chain(chain: Sequence[bytes]) -> None:
    for der in chain:
        info = _x509.certificate_info(der)
        if not info.is_ca:
            raise CertificateError(
                f"The chain certificate for {info.subject or 'an empty subject'} is not a CA "
                "certificate; nothing was written.",
                hint="--chain (and the certificate file after its first certificate) takes the "
                "issuing CA certificates only.")


def _check_leaf(info: _x509.CertificateInfo) -> None:
    """Before the token is opened: the first certificate becomes the key's own, which a CA
    certificate or an expired one can never be (the service refuses both at every use). A
    not-yet-valid one passes: storing a renewal ahead of its start is legitimate."""
    who = info.subject or "an empty subject"
    if info.is_ca:
        raise CertificateError(
            f"The certificate for {who} is a CA certificate (CA:TRUE), not an end-entity "
            "certificate for the key; nothing was written.",
            hint="Give the certificate the CA issued for this key's request as --certificate "
            "(the first certificate of the file) and CA certificates with --chain.")
    try:
        _x509.ensure_current(info, refuse_future=False)
    except CertificateError as exc:
        raise CertificateError(f"{exc.message} Nothing was written.", hint=exc.hint) from None


def _store_chain(token: ProvisioningSession, chain: Sequence[bytes]) -> list[str]:
    uris = []
    for der in chain:
        label, ident = _ca_label_and_id(der)
        present = [o for o in _certificates_with_id(token, ident) if bytes(o[Attribute.VALUE]) == der]
        if not present:
            with _mapped_errors(f"storing the CA certificate {label!r} on token {token.label!r}"):
                token.session.create_object(_certificate_attributes(der, label, ident))
        uris.append(token.uri(label=label, key_id=ident, type="cert"))
    return uris


def _is_ca_issued(obj: Any) -> bool:
    """A certificate object that a CA issued (issuer differs from subject), as opposed to the
    self-made placeholder that ykcs11 writes into a PIV slot at key generation."""
    from asn1crypto import x509

    cert = x509.Certificate.load(bytes(obj[Attribute.VALUE]))
    return cert.issuer != cert.subject


def _slot_certificates(token: ProvisioningSession, ident: bytes) -> list[Any]:
    """Certificates stored with `ident`; on a PIV card without the slot's attestation
    certificate, which ykcs11 shows under the same CKA_ID but which is not stored there."""
    found = _certificates_with_id(token, ident)
    if token.piv:
        found = [o for o in found if "attestation" not in (o[Attribute.LABEL] or "").lower()]
    return found


def import_certificate(
    private_key: str, certificate: str | Path, chain: str | Path | None = None, *,
    replace: bool = False, pkcs11_lib: str | None = None, environ: Mapping[str, str] | None = None,
    prompt: SecretCallback | None = None, callback: SecretCallback | None = None,
    management_key_source: str | None = None,
) -> ImportedCertificates:
    """Store the first certificate of the file `certificate` (PEM or DER) with the CKA_ID and
    label of the token key `private_key` (a `pkcs11:` URI); further certificates in that file
    and those in `chain` are stored as CA certificates. `replace` deletes other certificates
    that carry the key's id (after the new one is written).

    On a YubiKey (ykcs11, with the management key from `management_key_source`) the
    certificate goes into the key's PIV slot, replacing the placeholder ykcs11 wrote at key
    generation; a PIV card has no room for CA certificates."""
    key_uri = parse_token_uri(private_key, "--private-key")
    leaf, *extra = _x509.load_certificates(certificate)
    chain_ders = [*extra, *(_x509.load_certificates(chain) if chain else [])]
    leaf_info = _x509.certificate_info(leaf)
    _check_leaf(leaf_info)
    _check_chain(chain_ders)
    with open_token(key_uri, pkcs11_lib=pkcs11_lib, environ=environ, prompt=prompt,
                    callback=callback, writes="storing a certificate",
                    management_key_source=management_key_source) as opened:
        if opened.piv and chain_ders:
            raise UsageError(
                f"The token {opened.label!r} is a PIV card: it has no room for CA certificates; "
                "nothing was written.",
                hint="Keep the chain in a file and give it to credential-process with "
                "--intermediates; import the leaf certificate alone.")
        key = opened.find_private_key(key_uri)
        if not keyspec.same_public_key(key.public_key_info, leaf_info.public_key_info):
            raise CertificateError(
                f"The certificate for {leaf_info.subject or 'an empty subject'} (serial "
                f"{leaf_info.serial:x}, {keyspec.public_key_description(leaf_info.public_key_info)}) "
                f"is not for the key with id {_hex_id(key.id)} on token {opened.label!r} "
                f"({keyspec.public_key_description(key.public_key_info)}); nothing was written.",
                hint="Import the certificate issued for this key's request (csr), or name the key "
                "it belongs to with --private-key.",
            )
        if not key.id:
            raise UsageError(f"The key on token {opened.label!r} has an empty CKA_ID, so a "
                             "certificate cannot be paired with it.",
                             hint="Generate keys with keygen, which always sets an id.")
        existing = _slot_certificates(opened, key.id)
        same = [o for o in existing if bytes(o[Attribute.VALUE]) == leaf]
        others = [o for o in existing if bytes(o[Attribute.VALUE]) != leaf]
        blocking = [o for o in others if _is_ca_issued(o)] if opened.piv else others
        if blocking and not replace:
            raise UsageError(
                f"The token {opened.label!r} already holds another certificate with the key's id "
                f"{_hex_id(key.id)}; nothing was written.",
                hint="Pass --replace to store the new one and delete the old one (renewal).",
            )
        if not same:
            with _mapped_errors(f"storing the certificate on token {opened.label!r}"):
                opened.session.create_object(_certificate_attributes(leaf, key.label, key.id))
        chain_uris = _store_chain(opened, chain_ders)
        if others and not opened.piv:  # a PIV slot holds one certificate: it was overwritten
            with _mapped_errors(f"deleting the replaced certificate on token {opened.label!r}"):
                for old in others:
                    old.destroy()
        stored = [o for o in _slot_certificates(opened, key.id) if bytes(o[Attribute.VALUE]) == leaf]
        label = (stored[0][Attribute.LABEL] if stored else None) or key.label
        log.debug("certificate serial %x stored with id %s on token %r", leaf_info.serial,
                  _hex_id(key.id), opened.label)
        uri = opened.uri(label=label, key_id=key.id, type="cert")
    return ImportedCertificates(uri=uri, chain_uris=tuple(chain_uris), already_present=bool(same))
