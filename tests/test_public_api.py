"""The public API: pinned, so that removing or renaming a name is a deliberate act."""

from __future__ import annotations

import subprocess
import sys

import rolesanywhere_hsm


def test_all_is_pinned_and_sorted() -> None:
    assert rolesanywhere_hsm.__all__ == [
        "ALGORITHM_ECDSA",
        "ALGORITHM_MLDSA",
        "ALGORITHM_RSA",
        "CredentialSession",
        "CredentialSpec",
        "Credentials",
        "CredentialsUnavailableError",
        "RefreshingCredentials",
        "RetryPolicy",
        "RolesAnywhereClient",
        "RolesAnywhereCredentialProvider",
        "RolesAnywhereError",
        "Signer",
        "SignerConfig",
        "__version__",
        "boto3_session",
        "create_session",
        "load_signer",
        "register_signer",
        "validate_session_arns",
    ]
    for name in rolesanywhere_hsm.__all__:
        assert getattr(rolesanywhere_hsm, name) is not None


def test_importing_the_package_and_the_cli_loads_no_heavy_module() -> None:
    """credential-process must start fast: httpx, cryptography and pkcs11 come only when used."""
    code = (
        "import sys, rolesanywhere_hsm, rolesanywhere_hsm.cli; "
        "print(sorted(m for m in ('httpx', 'cryptography', 'pkcs11') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
