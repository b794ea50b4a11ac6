"""python-pkcs11 housekeeping shared by the token fixtures."""

from __future__ import annotations

__all__ = ["finalize_if_initialized"]


def finalize_if_initialized(module: str) -> None:
    """C_Finalize `module` in this process if it is loaded and initialised; never initialises
    it (pkcs11.lib() would, with whatever environment is left at teardown, e.g. no
    TPM2_PKCS11_TCTI). The package's module owner is the one place that knows the cache."""
    from rolesanywhere_hsm.signers.pkcs11.modules import finalize_module

    finalize_module(module)
