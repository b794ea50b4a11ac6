"""A PIV key's attestation: the slot's attestation certificate and the f9 certificate.

Two ways, no PIN on either (attestation is public on a YubiKey):
- Yubico's ykcs11 shows, under the key's CKA_ID, a certificate object "X.509 Certificate for
  PIV Attestation 9a" and the f9 certificate under CKA_ID 0x19: read them;
- any other PIV module (OpenSC) shows neither: ask the card itself over PC/SC, as `ykman`
  does: SELECT PIV, ATTEST (INS F9, P1 = slot) and GET DATA 5FFF01 (the f9 certificate).
  The reader is the one the module names in the token's slot description.

When the card refuses ATTEST, GET METADATA (INS F7) says why: an imported key (a YubiKey
attests only keys it generated), or no key in the slot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rolesanywhere_hsm.attestation import yubico
from rolesanywhere_hsm.errors import AttestationUnavailableError, TokenError

log = logging.getLogger("rolesanywhere_hsm.attestation")

__all__ = ["PivAttestation", "attest_piv_key", "pem_bundle"]

_SELECT_PIV = bytes.fromhex("00A4040009A00000030800001000") + b"\x00"
_GET_F9_CERTIFICATE = bytes.fromhex("00CB3FFF055C035FFF0100")


@dataclass(frozen=True)
class PivAttestation:
    slot: int  # key reference, 0x9A ...
    attestation: Any  # cryptography Certificate: the slot's, signed by the f9 key
    intermediate: Any  # the f9 certificate
    source: str  # "ykcs11" or "card"

    def certificates(self) -> list[Any]:
        return [self.attestation, self.intermediate]


def pem_bundle(certificates: list[Any]) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certificates)


def attest_piv_key(private_key: str, *, pkcs11_lib: str | None = None,
                   environ: Mapping[str, str] | None = None) -> PivAttestation:
    """The attestation of the PIV key that `private_key` (a pkcs11: URI) names."""
    from rolesanywhere_hsm.provision import keyspec
    from rolesanywhere_hsm.provision.token import parse_token_uri
    from rolesanywhere_hsm.signers.pkcs11.error_mapping import mapped_errors
    from rolesanywhere_hsm.signers.pkcs11.opening import located_token

    uri = parse_token_uri(private_key, "--private-key")
    with located_token(uri, pkcs11_lib, environ) as (_, lib, live):
        token = live.token
        if "tpm2" in lib.manufacturer_id.lower() or "tpm2" in token.manufacturer_id.lower():
            raise AttestationUnavailableError(
                f"The token {token.label!r} is tpm2-pkcs11: its keys are in a TPM, but the module "
                "offers no attestation (no TPM2_Certify through PKCS#11), so this tool cannot "
                "prove where they were generated.",
                hint="For an attested TPM key use a TSS2 key file (tpm2-openssl, tpm2-pytss) and "
                "`attest --ak-handle` (docs/attestation.md, TPM).")
        if not keyspec.is_piv_card(lib.manufacturer_id, token.manufacturer_id):
            raise AttestationUnavailableError(
                f"The token {token.label!r} is not a PIV card, and this module offers no key "
                "attestation.",
                hint="YubiKeys attest their PIV keys; for a TPM key file use --ak-handle (see "
                "docs/attestation.md). tpm2-pkcs11 and SoftHSM keys cannot be attested.")
        with mapped_errors(f"reading the objects of token {token.label!r}"):
            session = token.open()
            try:
                key_id = _key_id(session, uri, token.label)
                slot = yubico.slot_for_id(key_id)
                if slot is None or slot == 0xF9:
                    raise AttestationUnavailableError(
                        f"The key id {key_id.hex()} on {token.label!r} is no PIV key slot that can "
                        "be attested (9a, 9c, 9d, 9e, 82..95).")
                found = None
                if lib.manufacturer_id.strip().startswith("Yubico"):
                    found = _from_ykcs11_objects(session, key_id, slot)
            finally:
                with contextlib.suppress(Exception):
                    session.close()
            reader = token.slot.slot_description.strip()
    if found is not None:
        return found
    return _from_card(reader, slot)


def _key_id(session: Any, uri: Any, label: str) -> bytes:
    """The CKA_ID the URI names: its id=, or the id of the public key or certificate its
    object= labels (private keys may be hidden without a login, and none is done here)."""
    from pkcs11 import Attribute, ObjectClass

    if uri.id is not None:
        return bytes(uri.id)
    if uri.object is None:
        raise AttestationUnavailableError("The key URI names no id= or object=, so no PIV slot.",
                                          hint="Give the URI keygen printed (it has id=).")
    for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
        for obj in session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: uri.object}):
            return bytes(obj[Attribute.ID] or b"")
    raise AttestationUnavailableError(f"No object labelled {uri.object!r} on token {label!r}.",
                                      hint="Use the key's pkcs11: URI with id= (keygen prints it).")


def _from_ykcs11_objects(session: Any, key_id: bytes, slot: int) -> PivAttestation | None:
    from cryptography import x509
    from pkcs11 import Attribute, ObjectClass

    def attestation_certificates(ident: bytes) -> list[Any]:
        found = []
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: ident}):
            if "attestation" in (obj[Attribute.LABEL] or "").lower():
                found.append(x509.load_der_x509_certificate(bytes(obj[Attribute.VALUE])))
        return found

    leaves = attestation_certificates(key_id)
    intermediates = attestation_certificates(b"\x19")
    if len(leaves) != 1 or len(intermediates) != 1:
        log.debug("ykcs11 shows %d attestation and %d f9 certificates for id %s; asking the card",
                  len(leaves), len(intermediates), key_id.hex())
        return None
    return PivAttestation(slot, leaves[0], intermediates[0], "ykcs11")


def _from_card(reader: str, slot: int) -> PivAttestation:
    from cryptography import x509

    from rolesanywhere_hsm.attestation.pcsc import CardStatusError, connect

    with connect(reader) as card:
        card.send(_SELECT_PIV, "selecting the PIV application")
        try:
            leaf = card.send(bytes([0x00, 0xF9, slot, 0x00, 0x00]), f"attesting slot {slot:02x}")
        except CardStatusError as exc:
            raise _refusal(card, slot, exc.sw) from None
        f9 = yubico.certificate_from_object(card.send(_GET_F9_CERTIFICATE, "reading the f9 certificate"))
    try:
        return PivAttestation(slot, x509.load_der_x509_certificate(leaf),
                              x509.load_der_x509_certificate(f9), "card")
    except ValueError:
        raise TokenError(f"The card's attestation for slot {slot:02x} is not a certificate.") from None


def _refusal(card: Any, slot: int, sw: int) -> Exception:
    """Why ATTEST failed, from GET METADATA (firmware 5.3+): imported key, or no key."""
    from rolesanywhere_hsm.attestation.pcsc import CardStatusError

    name = f"{slot:02x}"
    try:
        origin = yubico.metadata_origin(card.send(bytes([0x00, 0xF7, 0x00, slot, 0x00]), "reading metadata"))
    except CardStatusError as exc:
        if exc.sw == 0x6A82:
            return AttestationUnavailableError(f"PIV slot {name} holds no key, so there is nothing to attest.",
                                               hint="Generate a key on the card first (keygen).")
        origin = None
    if origin == "imported":
        return AttestationUnavailableError(
            f"The key in PIV slot {name} was imported, not generated on the card: a YubiKey "
            "attests only keys it generated itself, so nothing proves this key cannot exist "
            "elsewhere.",
            hint="Generate a new key on the card (rolesanywhere-hsm keygen) and request a "
            "certificate for it.")
    return AttestationUnavailableError(
        f"The card refused to attest PIV slot {name} (status {sw:04X}).",
        hint="Attestation needs a YubiKey with firmware 4.3 or later and a key generated on it.")
