"""KeySource: the key's settings read once from the resolved options, frozen, without secrets,
and the one thing every consumer (the credential spec and its cache key, doctor, sign-string,
read-certificate-data, provisioning) builds its signer settings from."""

from __future__ import annotations

import pytest

from rolesanywhere_hsm.errors import UsageError
from rolesanywhere_hsm.keysource import KeySource
from rolesanywhere_hsm.settings import resolve
from rolesanywhere_hsm.signers.base import SignerConfig
from rolesanywhere_hsm.spec import CredentialSpec

ARNS = {
    "trust-anchor-arn": "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "profile-arn": "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/1a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "role-arn": "arn:aws:iam::123456789012:role/r",
}


def _settings(command: str = "credential-process", **flags: object) -> object:
    return resolve(command, {**(ARNS if command != "read-certificate-data" else {}), **flags}, environ={})


def test_the_spec_holds_the_source_its_settings_describe() -> None:
    settings = _settings(certificate="pkcs11:token=t;object=o;pin-value=1234", **{
        "cert-selector": "Key=x509Subject,Value=CN=w", "no-token-chain": True, "reuse-pin": True})
    spec = CredentialSpec.from_settings(settings)
    source = KeySource.from_settings(settings)
    assert spec.key_source == source
    assert source.selector is not None and source.token_chain is False and source.reuse_pin is True
    config = SignerConfig.from_source(source, pkcs8_password="secret")
    assert config.cert_selector is source.selector and config.token_chain is False
    assert config.pkcs8_password == "secret" and not hasattr(source, "pkcs8_password")
    assert "1234" not in repr(source) and "1234" not in repr(spec.key_source)


def test_a_command_without_every_key_option_gets_their_defaults() -> None:
    source = KeySource.from_settings(_settings("read-certificate-data", certificate="leaf.pem"))
    assert source.private_key is None and source.token_chain is True and source.reuse_pin is False


def test_frozen() -> None:
    source = KeySource("leaf.pem", "leaf.key")
    with pytest.raises(AttributeError):
        source.certificate = "other.pem"  # type: ignore[misc]


def test_a_selector_with_a_key_file_and_no_certificate_is_refused_once_for_every_consumer() -> None:
    with pytest.raises(UsageError, match="--cert-selector without --certificate"):
        KeySource(None, "key.pem", cert_selector="Key=x509Subject,Value=CN=w")
    with pytest.raises(UsageError, match="--cert-selector without --certificate"):
        CredentialSpec(None, ARNS["trust-anchor-arn"], ARNS["profile-arn"], ARNS["role-arn"],
                       private_key="key.pem", cert_selector="Key=x509Subject,Value=CN=w")


def test_the_cache_key_reads_the_source() -> None:
    a = CredentialSpec.from_settings(_settings(certificate="pkcs11:token=t;object=o"))
    b = CredentialSpec.from_settings(_settings(certificate="pkcs11:token=t;object=o", **{"no-token-chain": True}))
    assert a.cache_key() != b.cache_key()  # token_chain is part of the key, read from the source
    pinned = CredentialSpec.from_settings(_settings(certificate="pkcs11:token=t;object=o;pin-value=1"))
    assert pinned.cache_key() == a.cache_key()  # a pin-value never reaches the key
