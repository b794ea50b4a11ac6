"""python-pkcs11 housekeeping shared by the token fixtures."""

from __future__ import annotations

import sys

__all__ = ["finalize_if_initialized"]


def finalize_if_initialized(module: str) -> None:
    """C_Finalize `module` in this process if python-pkcs11 has it loaded and initialised.

    Never initialises it: pkcs11.lib() would (with whatever environment is left at teardown,
    e.g. no TPM2_PKCS11_TCTI). python-pkcs11 keeps its per-path cache in `pkcs11._loaded`; if
    that private name goes away this quietly does nothing, which only costs tidiness.
    """
    pkcs11 = sys.modules.get("pkcs11")
    lib = getattr(pkcs11, "_loaded", {}).get(module) if pkcs11 is not None else None
    if lib is not None and lib.initialized:
        # finalize, not unload: other holders of this shared instance keep a valid library.
        lib.finalize()
