"""Signers: where the private key lives (a file, a PKCS#11 token), behind one protocol."""

from rolesanywhere_hsm.sigv4x509 import ALGORITHM_ECDSA, ALGORITHM_MLDSA, ALGORITHM_RSA

from rolesanywhere_hsm.signers.base import (
    Signer,
    SignerConfig,
    load_signer,
    register_signer,
)

__all__ = [
    "ALGORITHM_ECDSA",
    "ALGORITHM_MLDSA",
    "ALGORITHM_RSA",
    "Signer",
    "SignerConfig",
    "load_signer",
    "register_signer",
]
