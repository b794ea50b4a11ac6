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
        "KeySource",
        "RefreshingCredentials",
        "RetryPolicy",
        "RolesAnywhereClient",
        "RolesAnywhereCredentialProvider",
        "RolesAnywhereError",
        "SecretPolicy",
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


def test_the_public_modules_are_the_documented_ones() -> None:
    """docs/design.md names what is public beyond the package's `__all__`: the exception tree,
    the Signer protocol and its registry. Pinned here so that a change is deliberate; every
    other module is internal, and test-only hooks stay out of every `__all__`."""
    from pathlib import Path

    from rolesanywhere_hsm import errors
    from rolesanywhere_hsm.signers import base
    from rolesanywhere_hsm.signers import pkcs11 as pkcs11_package
    from rolesanywhere_hsm.signers.pkcs11 import modules

    classes = sorted(name for name, value in vars(errors).items()
                     if isinstance(value, type) and issubclass(value, errors.RolesAnywhereError))
    assert sorted(set(errors.__all__) - {"SETTING", "service_error"}) == classes
    assert {"Signer", "SignerConfig", "register_signer", "load_signer"} <= set(base.__all__)
    design = (Path(__file__).parents[1] / "docs" / "design.md").read_text()
    for named in ("rolesanywhere_hsm.__all__", "rolesanywhere_hsm.errors", "rolesanywhere_hsm.signers.base"):
        assert f"`{named}`" in design
    for module in (pkcs11_package, modules):
        assert "forget_module" not in module.__all__
