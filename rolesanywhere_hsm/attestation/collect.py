"""`attest` and `csr --attest`: get the attestation of whatever key the user names.

A pkcs11: URI of a PIV key: the YubiKey's certificates (piv.py). A TSS2 key file: a
TPM2_Certify statement by the AK given (tpm.py). Anything else cannot be attested, and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rolesanywhere_hsm.errors import AttestationUnavailableError, UsageError

__all__ = ["Collected", "collect"]


@dataclass(frozen=True)
class Collected:
    kind: str  # "yubikey-piv" or "tpm"
    text: str  # what `attest` writes: a PEM bundle (leaf first) or the statement JSON
    csr_extensions: list[tuple[str, bytes]]  # (OID, extension value) for extensionRequest
    facts: dict[str, Any] = field(default_factory=dict)  # as the device says (not yet verified)


def collect(private_key: str, *, pkcs11_lib: str | None = None, environ: Mapping[str, str] | None = None,
            ak_handle: str | None = None, ak_certificate: str | None = None,
            tcti: str | None = None) -> Collected:
    from rolesanywhere_hsm.signers.pkcs11_uri import is_pkcs11_uri

    if is_pkcs11_uri(private_key):
        if ak_handle is not None:
            raise UsageError("--ak-handle is for TPM key files; a PIV key is attested by the card itself.",
                             hint="Leave --ak-handle and --ak-certificate out.")
        from rolesanywhere_hsm.attestation import piv, yubico

        found = piv.attest_piv_key(private_key, pkcs11_lib=pkcs11_lib, environ=environ)
        from cryptography.hazmat.primitives.serialization import Encoding

        return Collected(
            "yubikey-piv", piv.pem_bundle(found.certificates()),
            [(yubico.OID_CSR_ATTESTATION, found.attestation.public_bytes(Encoding.DER)),
             (yubico.OID_CSR_INTERMEDIATE, found.intermediate.public_bytes(Encoding.DER))],
            yubico.facts_of(found.attestation).as_dict())
    from rolesanywhere_hsm.signers.tpmkey import is_tss2_key_file

    if not is_tss2_key_file(private_key):
        raise AttestationUnavailableError(
            "A private key file in software cannot be attested: no hardware vouches that it "
            "exists only in one place.",
            hint="Generate the key in a YubiKey or a TPM (rolesanywhere-hsm keygen) to attest it.")
    if ak_handle is None or ak_certificate is None:
        raise UsageError("A TPM key is attested by an attestation key: give --ak-handle (its "
                         "persistent handle, e.g. 0x81010002) and --ak-certificate (its certificate "
                         "chain, PEM).", hint="See docs/attestation.md, TPM.")
    from rolesanywhere_hsm.attestation import tpm, tpm_format

    statement = tpm.attest_key_file(private_key, ak_handle, ak_certificate, tcti=tcti, environ=environ)
    facts = tpm.statement_facts(statement)
    if facts["missing"]:
        said = ("was imported into the TPM, not generated inside it" if "sensitiveDataOrigin" in facts["missing"]
                else "can be duplicated out of the TPM")
        raise AttestationUnavailableError(
            f"The TPM certifies that the key {private_key} {said} ({', '.join(facts['missing'])} not "
            f"set): no CA should accept it as a hardware-bound key.",
            hint="Generate the key inside the TPM (tpm2_create, tpm2-openssl, keygen on tpm2-pkcs11).")
    return Collected("tpm", statement.decode(), [(tpm_format.OID_CSR_TPM_STATEMENT, statement)], facts)
