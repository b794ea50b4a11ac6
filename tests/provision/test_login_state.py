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
