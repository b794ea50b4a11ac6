"""rolesanywhere-hsm: temporary AWS credentials from IAM Roles Anywhere, signed in a PKCS#11 token.

The public API is re-exported here, lazily: `import rolesanywhere_hsm` stays cheap, and httpx,
cryptography or pkcs11 are imported only when the name that needs them is first used, so that
`credential-process` starts fast.

    from rolesanywhere_hsm import SignerConfig, create_session
    creds = create_session(SignerConfig(certificate="pkcs11:token=prod;object=workload"),
                           trust_anchor_arn=..., profile_arn=..., role_arn=...)
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a cache hit

__version__ = "0.1.0"

_EXPORTS = {
    "ALGORITHM_ECDSA": "rolesanywhere_hsm.sigv4x509",
    "ALGORITHM_MLDSA": "rolesanywhere_hsm.sigv4x509",
    "ALGORITHM_RSA": "rolesanywhere_hsm.sigv4x509",
    "CredentialSession": "rolesanywhere_hsm.session",
    "CredentialSpec": "rolesanywhere_hsm.session",
    "Credentials": "rolesanywhere_hsm.credentials",
    "CredentialsUnavailableError": "rolesanywhere_hsm.errors",
    "KeySource": "rolesanywhere_hsm.keysource",
    "RefreshingCredentials": "rolesanywhere_hsm.refresh",
    "RetryPolicy": "rolesanywhere_hsm.client",
    "RolesAnywhereCredentialProvider": "rolesanywhere_hsm.botocore_provider",
    "RolesAnywhereClient": "rolesanywhere_hsm.client",
    "RolesAnywhereError": "rolesanywhere_hsm.errors",
    "SecretPolicy": "rolesanywhere_hsm.signers.secretpolicy",
    "Signer": "rolesanywhere_hsm.signers.base",
    "SignerConfig": "rolesanywhere_hsm.signers.base",
    "boto3_session": "rolesanywhere_hsm.botocore_provider",
    "create_session": "rolesanywhere_hsm.session",
    "load_signer": "rolesanywhere_hsm.signers.base",
    "register_signer": "rolesanywhere_hsm.signers.base",
    "validate_session_arns": "rolesanywhere_hsm.arn",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rolesanywhere_hsm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from typing import Any

    from rolesanywhere_hsm.arn import validate_session_arns
    from rolesanywhere_hsm.botocore_provider import RolesAnywhereCredentialProvider, boto3_session
    from rolesanywhere_hsm.client import RetryPolicy, RolesAnywhereClient
    from rolesanywhere_hsm.credentials import Credentials
    from rolesanywhere_hsm.errors import CredentialsUnavailableError, RolesAnywhereError
    from rolesanywhere_hsm.keysource import KeySource
    from rolesanywhere_hsm.refresh import RefreshingCredentials
    from rolesanywhere_hsm.session import CredentialSession, CredentialSpec, create_session
    from rolesanywhere_hsm.signers.secretpolicy import SecretPolicy
    from rolesanywhere_hsm.sigv4x509 import ALGORITHM_ECDSA, ALGORITHM_MLDSA, ALGORITHM_RSA
    from rolesanywhere_hsm.signers.base import (
        Signer,
        SignerConfig,
        load_signer,
        register_signer,
    )
