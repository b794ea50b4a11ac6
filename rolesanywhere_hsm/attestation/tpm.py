"""TPM2_Certify of a TPM key file by an attestation key (AK), through tpm2-pytss (the [tpm]
extra), written as the statement of tpm_format.

The key is loaded as the signer loads it (signers/tpmkey.py: same parent, same TCTI
variables); TPM2_Certify needs the key's authorisation in the ADMIN role, which for keys
without adminWithPolicy is its password (RAH_TPM_KEY_PASSWORD or the prompt, like the signer;
none for emptyAuth keys). The AK is a persistent restricted signing key: the TPM only signs a
structure that starts with TPM_GENERATED_VALUE with such a key when the TPM made the structure
itself, which is what makes the statement believable. Its authorisation is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rolesanywhere_hsm.errors import TokenError, UsageError

log = logging.getLogger("rolesanywhere_hsm.attestation")

__all__ = ["attest_key_file", "parse_handle", "statement_facts"]

_PERSISTENT_FIRST, _PERSISTENT_LAST = 0x81000000, 0x81FFFFFF


def parse_handle(text: str) -> int:
    try:
        handle = int(text, 0)
    except ValueError:
        handle = -1
    if not _PERSISTENT_FIRST <= handle <= _PERSISTENT_LAST:
        raise UsageError(f"--ak-handle {text!r} is not a persistent TPM handle (0x81000000-0x81FFFFFF).",
                         hint="List them with `tpm2_getcap handles-persistent`.")
    return handle


def attest_key_file(path: str, ak_handle: str, ak_certificate: str, *, tcti: str | None = None,
                    environ: Mapping[str, str] | None = None) -> bytes:
    """The statement JSON (tpm_format) for the key file at `path`."""
    from rolesanywhere_hsm.attestation import tpm_format
    from rolesanywhere_hsm.attestation.verify import load_certificates
    from rolesanywhere_hsm.signers import tpmkey

    handle = parse_handle(ak_handle)
    try:
        chain_data = Path(ak_certificate).read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read --ak-certificate {ak_certificate}: {exc.strerror or exc}.") from None
    chain = load_certificates(chain_data, "--ak-certificate")
    tpmkey._import_tpm2_pytss()
    from cryptography.hazmat.primitives.serialization import Encoding
    from tpm2_pytss import TSS2_Exception
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import TPMT_SIG_SCHEME

    key = tpmkey._parse_key(tpmkey._read_key(path), path)
    password = tpmkey.key_password(key, path)  # SecretPolicy's order, the terminal last
    ectx = tpmkey._connect(tcti or tpmkey.tcti_from_env(environ))
    try:
        loaded = tpmkey._load(ectx, key, path)
        try:
            ectx.tr_set_auth(loaded, password)
            try:
                ak = ectx.tr_from_tpmpublic(handle)
            except TSS2_Exception as exc:
                raise TokenError(f"The TPM has no key at --ak-handle 0x{handle:08x} ({exc}).",
                                 hint="Create and persist an AK first (docs/attestation.md, TPM).") from None
            ak_public, _, _ = ectx.read_public(ak)
            area = ak_public.publicArea
            if area.type == TPM2_ALG.ECC:
                scheme_alg, alg = TPM2_ALG.ECDSA, -7
            else:
                scheme_alg, alg = TPM2_ALG.RSASSA, -257
            scheme = TPMT_SIG_SCHEME(scheme=scheme_alg)
            scheme.details.any.hashAlg = TPM2_ALG.SHA256
            try:
                info, signature = ectx.certify(loaded, ak, b"", scheme)
            except TSS2_Exception as exc:
                raise TokenError(f"The TPM refused to certify {path} with the AK 0x{handle:08x}: {exc}.",
                                 hint="The AK must be a restricted signing key (ECDSA or RSASSA with "
                                 "SHA-256) with an empty password.") from None
            ectx.tr_close(ak)
        finally:
            ectx.flush_context(loaded)
    finally:
        ectx.close()
    ak_spki = _spki_of_tpm_public(area.marshal())
    if ak_spki != _spki(chain[0].public_key()):
        raise UsageError(f"--ak-certificate is not the certificate of the AK 0x{handle:08x} (another key).",
                         hint="Give the AK's certificate first, then its CA chain.")
    if alg == -7:
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        ecdsa = signature.signature.ecdsa
        sig = encode_dss_signature(int.from_bytes(bytes(ecdsa.signatureR), "big"),
                                   int.from_bytes(bytes(ecdsa.signatureS), "big"))
    else:
        sig = bytes(signature.signature.rsassa.sig)
    return tpm_format.statement_json(
        alg=alg, x5c=[c.public_bytes(Encoding.DER) for c in chain], sig=sig,
        cert_info=bytes(info), pub_area=key.public.publicArea.marshal())


def _spki(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _spki_of_tpm_public(area: bytes) -> bytes:
    from rolesanywhere_hsm.attestation import tpm_format

    return _spki(tpm_format.parse_public(area).public_key)


def statement_facts(statement: bytes) -> dict[str, Any]:
    """What the statement says (not verified): the key's attributes and the AK's subject."""
    from cryptography import x509

    from rolesanywhere_hsm.attestation import tpm_format

    fields = tpm_format.parse_statement(statement)
    public = tpm_format.parse_public(fields["pubArea"])
    ak = x509.load_der_x509_certificate(fields["x5c"][0])
    return {"attributes": public.attribute_names, "missing": public.missing(),
            "ak": ak.subject.rfc4514_string()}
