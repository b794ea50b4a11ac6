"""Provisioning's logins name python-pkcs11's per-process login state instead of failing
with a module error (or, before this test, a NameError on the management-key path)."""

from __future__ import annotations

import pytest

from rolesanywhere_hsm._dev.softhsm import SoftHsmToken
from rolesanywhere_hsm.errors import TokenError
from rolesanywhere_hsm.provision.token import _login_management_key
from rolesanywhere_hsm.signers.pkcs11.modules import loaded_module


def test_a_second_security_officer_login_in_the_process_is_named(softhsm_token: SoftHsmToken) -> None:
    with loaded_module(softhsm_token.module) as lib:
        token = lib.get_token(token_label=softhsm_token.label)
        with token.open(rw=True, so_pin=softhsm_token.so_pin), pytest.raises(TokenError) as caught:
            _login_management_key(token, softhsm_token.so_pin)
    message = str(caught.value)
    assert "already logged in" in message and softhsm_token.label in message
    assert softhsm_token.so_pin not in message


def test_provisioning_locates_its_token_as_the_signer_does_before_any_pin(
        softhsm_token: SoftHsmToken) -> None:
    """open_token's first half is locate's (module, library-* attributes, token; no secret):
    a URI written for another module is refused before the PIN is asked (before, provisioning
    skipped the library-* check and logged in)."""
    from rolesanywhere_hsm.errors import SelectionError
    from rolesanywhere_hsm.provision.token import open_token
    from rolesanywhere_hsm.signers.pkcs11_uri import parse_pkcs11_uri

    def never_asked(prompt: str) -> str:
        raise AssertionError(f"a PIN was asked: {prompt}")

    uri = parse_pkcs11_uri(f"pkcs11:token={softhsm_token.label};library-manufacturer=Nobody")
    with pytest.raises(SelectionError, match="library-manufacturer"):
        with open_token(uri, pkcs11_lib=softhsm_token.module, environ={},
                        prompt=never_asked, callback=never_asked):
            pass
