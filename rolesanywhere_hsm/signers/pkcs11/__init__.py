"""Keys in a PKCS#11 token (YubiKey, TPM, HSM, SoftHSM) behind the Signer protocol.

One module per job (see each one's docstring):
- `modules`: which module file to load, and the one owner of python-pkcs11's per-path cache;
- `error_mapping`: python-pkcs11 exceptions turned into ours at the boundary;
- `selection`: PURE, which token and object a URI selects, over plain snapshots;
- `inventory`: snapshots of what a module shows, certificate URIs, the listings;
- `pairing`: does a token key belong to a certificate (public values only);
- `opening`: `open_pkcs11_signer`, from a SignerConfig to an `OpenedKey`;
- `signer`: the `Pkcs11Signer` over one opened key.

The private key never leaves the token: we read only public attributes (label, id, key type,
modulus, EC point, CKA_ALWAYS_AUTHENTICATE), never CKA_VALUE of a key or any sensitive
attribute. This package is the only one that imports `pkcs11` (the registry in base.py
imports it on first use), so a file-key run never loads it. See docs/pkcs11.md.
"""

from __future__ import annotations

from rolesanywhere_hsm.signers.pkcs11.inventory import (
    TokenCertificate,
    list_certificates,
    list_token_certificates,
)
from rolesanywhere_hsm.signers.pkcs11.modules import (
    DEFAULT_MODULE,
    MODULE_DIRS,
    MODULE_ENV_VAR,
    finalize_module,
    module_in_use,
    resolve_module_path,
)
from rolesanywhere_hsm.signers.pkcs11.opening import open_pkcs11_signer, selected_certificate
from rolesanywhere_hsm.signers.pkcs11.signer import OpenedKey, Pkcs11Signer

__all__ = [
    "selected_certificate",
    "DEFAULT_MODULE",
    "MODULE_DIRS",
    "MODULE_ENV_VAR",
    "OpenedKey",
    "Pkcs11Signer",
    "TokenCertificate",
    "finalize_module",
    "list_certificates",
    "list_token_certificates",
    "module_in_use",
    "open_pkcs11_signer",
    "resolve_module_path",
]
