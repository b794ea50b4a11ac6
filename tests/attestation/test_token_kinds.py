"""Tokens that cannot attest say so plainly, with exit 10 and before any PIN is used:
tpm2-pkcs11 (a TPM, but no TPM2_Certify through its module) and SoftHSM (software)."""

from __future__ import annotations

import pytest

from tests.provision.flow import cli


@pytest.mark.tpm
def test_tpm2_pkcs11_key_cannot_be_attested(tpm_token) -> None:  # type: ignore[no-untyped-def]
    result = cli(tpm_token.subprocess_env(pin=True), "attest", "--private-key", tpm_token.uri_for("ec"))
    assert result.returncode == 10 and result.stdout == ""
    assert "is tpm2-pkcs11" in result.stderr and "no TPM2_Certify through PKCS#11" in result.stderr


@pytest.mark.softhsm
def test_softhsm_key_cannot_be_attested(softhsm_token, softhsm_env) -> None:  # type: ignore[no-untyped-def]
    uri = f"pkcs11:token={softhsm_token.label}"
    result = cli({**softhsm_env}, "csr", "--private-key", uri, "--subject", "CN=x", "--attest")
    assert result.returncode == 10 and result.stdout == ""
    assert "is not a PIV card, and this module offers no key attestation" in result.stderr
