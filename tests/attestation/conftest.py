"""Helpers of the attestation tests: keygen on the virtual card (its `card` and
`management_key_file` fixtures come from tests/fixtures/yubikey.py)."""

from __future__ import annotations

from tests.provision.flow import cli, ok
from tests.tokens.yubikey import VirtualYubiKey


def generate(card: VirtualYubiKey, management_key_file: str, slot_id: str, key_type: str = "ec-p256") -> str:
    env = card.subprocess_env(card.ykcs11_module)
    return ok(cli(env, "keygen", "--token", f"pkcs11:token=YubiKey%20PIV%20%23{card.serial}",
                  "--key-type", key_type, "--label", "x", "--id", slot_id,
                  "--management-key-source", management_key_file))
