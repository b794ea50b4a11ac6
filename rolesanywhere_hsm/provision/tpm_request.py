"""A TSS2 TPM key file as the signer of a certificate request (`csr`), so that a key made in a
TPM outside PKCS#11 can be onboarded, and attested (`csr --attest --ak-handle ...`).

It loads the key exactly as the signer does (signers/tpmkey.py: parent, TCTI, password) and
signs with SHA-256: PKCS#1 v1.5 for RSA, ECDSA for EC, as the request needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rolesanywhere_hsm.errors import UsageError

__all__ = ["tpm_key_request_signer"]


@contextmanager
def tpm_key_request_signer(path: str, digest: str = "sha256") -> Iterator[tuple[bytes, str, Callable[[bytes], bytes]]]:
    """(SubjectPublicKeyInfo, "RSA" | "EC", sign) for the key file, while the key is loaded."""
    from rolesanywhere_hsm.signers import tpmkey

    if digest != "sha256":
        raise UsageError("--digest sha384 is not offered for TPM key files.", hint="Leave --digest out.")
    tpmkey._import_tpm2_pytss()
    from cryptography.hazmat.primitives import serialization

    key = tpmkey._parse_key(tpmkey._read_key(path), path)
    key_type, restricted = tpmkey._check_key(key, path)
    spki: Any = serialization.load_der_public_key(key.public.publicArea.to_der()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    password = tpmkey.key_password(key, path)  # SecretPolicy's order, the terminal last
    ectx = tpmkey._connect(tpmkey.tcti_from_env())
    try:
        handle = tpmkey._load(ectx, key, path)
        ectx.tr_set_auth(handle, password)
    except BaseException:
        ectx.close()
        raise
    # The signer without a certificate (a request is made before there is one).
    signer = tpmkey.TpmKeySigner(ectx, handle, key_type=key_type, restricted=restricted, path=path,
                                 certificate=b"", chain=(), algorithm="")
    try:
        yield spki, key_type, signer.sign
    finally:
        signer.close()
